"""The objective metric for Vertex AI's hyperparameter tuner, reported after every epoch, so a
trial stopped at any moment has already reported its last finished epoch."""

from __future__ import annotations

from trainer.kerasflavor import keras


class HypertuneReport(keras.callbacks.Callback):
    """Reports `metric` after each epoch with `cloudml-hypertune`, which writes the file that
    Vertex AI's tuner reads (CLOUD_ML_HP_METRIC_FILE, by default /tmp/hypertune/output.metrics).
    The tuning job's metric id must be `metric`, i.e. the config's `train.monitor`."""

    def __init__(self, metric: str):
        super().__init__()
        import hypertune

        self.metric = metric
        self.reporter = hypertune.HyperTune()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None:
            return  # EpochCheckpoint reports a missing monitor as a config error
        self.reporter.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=self.metric, metric_value=float(value), global_step=epoch + 1)

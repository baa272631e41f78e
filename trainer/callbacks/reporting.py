"""What a run tells the outside while it trains, beyond its log: TensorBoard logs that reach the
bucket after every epoch, and the objective metric for Vertex AI's hyperparameter tuner.

Both matter most on the cloud, where a job can be stopped at any moment: what was reported up to
the last finished epoch is already in the bucket (or the tuner's metric file).
"""

from __future__ import annotations

import logging

from trainer.kerasflavor import keras
from trainer.storage.rundir import RunDir

log = logging.getLogger("trainer")


class LiveTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, writing into the run's `tensorboard/` folder and uploading
    it after each epoch when the run lives in a bucket (TensorFlow cannot write `gs://` through
    fsspec, and streaming into the final objects would be unsafe)."""

    def __init__(self, run: RunDir, **kwargs):
        super().__init__(log_dir=run.live_dir("tensorboard"), **kwargs)
        self.run = run

    def _publish(self) -> None:
        for writer in self._writers.values():
            writer.flush()
        self.run.publish_tree("tensorboard")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._publish()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # closes the writers
        self.run.publish_tree("tensorboard")


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

"""One log record per epoch, so a run's progress reads the same without a progress bar (on the
cloud, where Cloud Logging takes the metrics as the record's JSON fields)."""

from __future__ import annotations

import logging

from trainer.kerasflavor import keras

log = logging.getLogger("trainer")


class EpochLog(keras.callbacks.Callback):
    """Logs `epoch N/total` and the epoch's metrics, also as structured fields."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        text = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
        log.info("epoch %d/%d %s", epoch + 1, self.total_epochs, text,
                 extra={"json_fields": {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}})

"""The rows the input pipeline read in the epoch, as a logged quantity: the evidence that each
worker of a multi-worker job reads its own share of the data, and no more."""

from __future__ import annotations

from trainer.data.windows import RowsRead
from trainer.kerasflavor import keras


class EpochReads(keras.callbacks.Callback):
    """Adds `rows_read` (this process's reader, this epoch) to the epoch logs."""

    def __init__(self, rows_read: RowsRead):
        super().__init__()
        self.rows_read = rows_read

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["rows_read"] = self.rows_read[epoch]

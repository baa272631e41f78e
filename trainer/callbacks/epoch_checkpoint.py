"""The epoch checkpoint that a re-run of the same `name` resumes from (the files and their
commit rule are `trainer.training.checkpoints`)."""

from __future__ import annotations

import math

from trainer.errors import TrainingDiverged, UserError
from trainer.kerasflavor import keras
from trainer.training.checkpoints import CheckpointStore


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the checkpoint and the state after every epoch, and checks that `monitor` exists."""

    def __init__(self, store: CheckpointStore):
        super().__init__()
        self.store = store

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            # Never checkpoint diverged weights: a re-run resumes from the last finite epoch.
            raise TrainingDiverged(
                f"loss became {loss} in epoch {epoch + 1}, training, expected a finite loss "
                "(lower train.learning_rate, keep data.standardize on, or check the data for NaN)")
        if self.store.monitor not in logs:
            raise UserError(f"'{self.store.monitor}' is not among the logged quantities, "
                            f"train.monitor, expected one of {', '.join(sorted(logs))}")
        self.store.save_epoch(epoch + 1, logs)

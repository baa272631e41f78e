"""The epoch's wall time and training throughput, as logged quantities, so that history.csv and
TensorBoard show where time went."""

from __future__ import annotations

import time

from trainer.kerasflavor import keras


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_time_s` and `samples_per_s` to the epoch logs."""

    def __init__(self, train_samples: int):
        super().__init__()
        self.train_samples = train_samples
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds = time.perf_counter() - self._start
            logs["epoch_time_s"] = seconds
            logs["samples_per_s"] = self.train_samples / seconds if seconds > 0 else 0.0

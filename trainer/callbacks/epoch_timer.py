"""The epoch's wall time and training throughput, as logged quantities, so that history.csv and
TensorBoard show where time went."""

from __future__ import annotations

import time

from trainer.kerasflavor import keras


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_time_s` and `samples_per_s` to the epoch logs, and keeps the rate of the
    training part alone (up to validation) of each epoch of this `fit` in `train_rates`, for
    the model FLOPs utilisation."""

    def __init__(self, train_samples: int):
        super().__init__()
        self.train_samples = train_samples
        self.train_rates: list[float] = []
        self._start = 0.0
        self._trained = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._trained = None

    def on_test_begin(self, logs=None):  # validation inside `fit`: the epoch's training is done
        if self._trained is None:
            self._trained = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds = time.perf_counter() - self._start
            logs["epoch_time_s"] = seconds
            logs["samples_per_s"] = self.train_samples / seconds if seconds > 0 else 0.0
        trained = self._trained if self._trained is not None else time.perf_counter() - self._start
        self.train_rates.append(self.train_samples / trained if trained > 0 else 0.0)

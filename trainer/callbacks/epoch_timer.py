"""The epoch's wall time and training throughput, as logged quantities, so that history.csv and
TensorBoard show where time went.

Two rates, each with one name in the log, history.csv, metrics.json and the report:
  train_samples_per_s   training samples over the time of the epoch's training steps alone (up
                        to validation): the model's speed, the rate MFU is computed from
  epoch_samples_per_s   training samples over the whole epoch's time, validation and the
                        callbacks' work included: what an epoch costs
"""

from __future__ import annotations

import time

from trainer.kerasflavor import keras

RATES = ("train_samples_per_s", "epoch_samples_per_s")


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_time_s`, `train_samples_per_s` and `epoch_samples_per_s` to the epoch logs,
    and keeps each epoch's `train_samples_per_s` of this `fit` in `train_rates`, for the run's
    training rate and model FLOPs utilisation."""

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
        seconds = time.perf_counter() - self._start
        trained = self._trained if self._trained is not None else seconds
        train_rate = self.train_samples / trained if trained > 0 else 0.0
        self.train_rates.append(train_rate)
        if logs is not None:
            logs["epoch_time_s"] = seconds
            logs["train_samples_per_s"] = train_rate
            logs["epoch_samples_per_s"] = self.train_samples / seconds if seconds > 0 else 0.0

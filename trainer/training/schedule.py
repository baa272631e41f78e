"""How the learning rate moves during a run (`train.lr_schedule`).

Both schedules resume exactly: `cosine` is a function of the optimizer's step counter, which the
checkpoints and backups carry; `plateau` changes the optimizer's learning-rate variable, which
they carry too, and its own counters are rebuilt from the history a resumed run trained.
"""

from __future__ import annotations

from typing import Sequence, Union

from trainer.config import TrainConfig, monitor_mode
from trainer.kerasflavor import keras

PLATEAU_FACTOR = 0.2


def learning_rate(train: TrainConfig, peak: float, steps_per_epoch: int
                  ) -> Union[float, keras.optimizers.schedules.LearningRateSchedule]:
    """Adam's learning rate: `peak` itself, or the cosine schedule that reaches it after a
    warm-up of one epoch (at most a tenth of the run) and decays to zero at `train.epochs`."""
    if train.lr_schedule != "cosine":
        return peak
    total = max(1, train.epochs * steps_per_epoch)
    warmup = min(steps_per_epoch, total // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10 if warmup else peak, decay_steps=total - warmup,
        warmup_target=peak if warmup else None, warmup_steps=warmup)


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """`ReduceLROnPlateau` whose counters at the start of `fit` are those after the history given
    to `resume_from`; the learning rate itself comes back with the optimizer's checkpoint, so the
    replay leaves it as it is."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.history: list[dict] = []

    def resume_from(self, history: Sequence[dict]) -> None:
        self.history = list(history)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        restored = keras.backend.get_value(self.model.optimizer.lr)
        for row in self.history:
            self.on_epoch_end(row["epoch"] - 1, dict(row))
        keras.backend.set_value(self.model.optimizer.lr, restored)


def plateau_callback(train: TrainConfig) -> ResumablePlateau:
    patience = max(1, train.patience() // 3) if train.patience() else 3
    return ResumablePlateau(monitor=train.monitor, mode=monitor_mode(train.monitor),
                            factor=PLATEAU_FACTOR, patience=patience, verbose=0)

"""Early stopping that continues a resumed run's count instead of starting a new one.

Keras's `EarlyStopping` forgets its best value, wait count and best epoch at `on_train_begin`, so
a run restarted from a checkpoint or a preemption backup would wait `patience` epochs afresh and
stop later than the run it continues. This one replays the epochs already trained (the history
the checkpoint keeps) through Keras's own rule, so the state is exactly what an uninterrupted run
had at that epoch, whichever way the run was resumed.
"""

from __future__ import annotations

from typing import Sequence

from trainer.kerasflavor import keras


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose state at the start of `fit` is that after the history given to
    `resume_from`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.history: list[dict] = []

    def resume_from(self, history: Sequence[dict]) -> None:
        """The epochs trained before this `fit`: rows with a 1-based `epoch` and the logged
        quantities, as the checkpoint keeps them."""
        self.history = list(history)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.history:
            # With the same patience these rows never stop training: the run they come from
            # would have been marked stopped early, and a stopped run is not fitted again.
            super().on_epoch_end(row["epoch"] - 1, row)
        self.stopped_epoch = 0

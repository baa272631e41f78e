"""Validation with the moving average of the weights (`train.ema`, see `trainer.training.ema`):
the average is swapped in when `fit` starts evaluating and the training weights are put back
when it ends, so the epoch's `val_` figures, early stopping and the best epoch all judge the
averaged model, and training goes on exactly as it would without this callback."""

from __future__ import annotations

import contextlib
from typing import Optional

from trainer.kerasflavor import keras
from trainer.training.ema import averaged


class AveragedValidation(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self._swap: Optional[contextlib.AbstractContextManager] = None

    def on_test_begin(self, logs=None):
        self._swap = averaged(self.model)
        self._swap.__enter__()

    def on_test_end(self, logs=None):
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.__exit__(None, None, None)

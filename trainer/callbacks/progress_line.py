"""Tells the log handler when Keras's progress bar holds the terminal's current line, so a log
record (the epoch's own line, a warning during validation) starts on a line of its own instead
of in the middle of the bar (see `trainer.runtime.logs`)."""

from __future__ import annotations

from trainer.kerasflavor import keras
from trainer.runtime import logs as log_output


class ProgressLine(keras.callbacks.Callback):
    """Keras redraws the bar in place after each batch and ends its line only after every
    other callback's `on_epoch_end`: the line is open from the first batch on."""

    def on_train_batch_end(self, batch, logs=None):
        log_output.progress_bar_open(True)

    def on_epoch_begin(self, epoch, logs=None):
        log_output.progress_bar_open(False)  # the last bar ended its line; "Epoch N/M" too

    def on_train_end(self, logs=None):
        log_output.progress_bar_open(False)

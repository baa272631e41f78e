"""The Keras side of pruning: report the search metric after each epoch, stop when Optuna says so.

A pruned trial stops training the way early stopping does (`stop_training`), rather than by an
exception, so it still evaluates and writes its artefacts: its report shows why it was dropped.
A trial that re-runs an interrupted one resumes that run, and first reports the epochs the run
had already trained, so the study holds every epoch of it.
Written here rather than taken from optuna-integration, whose Keras callback raises mid-`fit`
and would add a package for these few lines.
"""

from __future__ import annotations

from typing import Optional, Sequence

from trainer.errors import UserError
from trainer.kerasflavor import keras


class MetricMissing(UserError):
    """The search metric is not logged: every trial would fail the same way, so the search stops."""


class PruneOnEpoch(keras.callbacks.Callback):
    def __init__(self, trial, metric: str):
        super().__init__()
        self.trial = trial
        self.metric = metric
        self.pruned_at: Optional[int] = None
        self.last_epoch: Optional[int] = None  # None: the run trained no epoch (already complete)
        self.history: list[dict] = []

    def resume_from(self, history: Sequence[dict]) -> None:
        """The epochs the run trained before this `fit` (rows as the checkpoint keeps them)."""
        self.history = list(history)

    def on_train_begin(self, logs=None):
        # Reported, not judged: the run already went on past these epochs.
        for row in self.history:
            if self.metric in row:
                self.trial.report(float(row[self.metric]), row["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.metric not in logs:
            raise MetricMissing(f"'{self.metric}' is not among the logged quantities, space metric, "
                            f"expected one of {', '.join(sorted(logs))}")
        step = self.last_epoch = epoch + 1  # steps are 1-based epochs, as in history.csv
        self.trial.report(float(logs[self.metric]), step)
        # The last epoch is never pruned: a trial that trained all its epochs is complete.
        if step < self.params.get("epochs", step + 1) and self.trial.should_prune():
            self.pruned_at = step
            self.model.stop_training = True

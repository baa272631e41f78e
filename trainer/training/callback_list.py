"""The callbacks of one `fit`, in the order they run after each epoch: timing first (the log
records it), then the checkpoint, then what reads the checkpointed epoch."""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from trainer.callbacks.early_stopping import ResumableEarlyStopping
from trainer.callbacks.ema import AveragedValidation
from trainer.callbacks.epoch_checkpoint import EpochCheckpoint
from trainer.callbacks.epoch_log import EpochLog
from trainer.callbacks.epoch_reads import EpochReads
from trainer.callbacks.epoch_timer import EpochTimer
from trainer.callbacks.histograms import HistogramLogger
from trainer.callbacks.live_tensorboard import LiveTensorBoard
from trainer.callbacks.preemption_backup import PreemptionBackup
from trainer.callbacks.progress_line import ProgressLine
from trainer.config import Config, TrainConfig
from trainer.data import Splits
from trainer.data.finite import zeroed
from trainer.data.windows import RowsRead
from trainer.kerasflavor import keras
from trainer.storage.rundir import RunDir
from trainer.config import monitor_mode
from trainer.training.checkpoints import CheckpointStore
from trainer.training.preemption import SigtermWatch
from trainer.training.schedule import plateau_callback


@runtime_checkable
class ResumesFromHistory(Protocol):
    """A callback with state of its own (early stopping, pruning), which it rebuilds from the
    epochs the run trained before, as the epoch checkpoint keeps them."""

    def resume_from(self, history: Sequence[dict]) -> None: ...


def fit_callbacks(config: Config, splits: Splits, run: RunDir, store: CheckpointStore,
                  steps_per_epoch: int, sigterm: Optional[SigtermWatch],
                  extra: Sequence[keras.callbacks.Callback] = (),
                  rows_read: Optional[RowsRead] = None) -> list[keras.callbacks.Callback]:
    """Every callback the config asks for; `extra` are the platform's (e.g. the tuner's);
    `rows_read`, the training pipeline's count, goes into each epoch's record. Those
    with state of their own continue from the checkpointed history, so a resumed run, whether
    from its epoch checkpoint or its preemption backup, decides as an uninterrupted one."""
    t = config.train
    callbacks: list = [EpochTimer(len(splits.train))]
    if rows_read is not None:
        callbacks.append(EpochReads(rows_read))
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if t.ema:
        callbacks.append(AveragedValidation())
    if t.lr_schedule == "plateau":  # before the checkpoint, which must hold the rate it sets
        callbacks.append(plateau_callback(t))
    callbacks.append(EpochCheckpoint(store))
    early = early_stopping(t)
    if early is not None:
        callbacks.append(early)
    if t.histograms:
        callbacks.append(histogram_logger(t, splits, run))
    callbacks += [LiveTensorBoard(run), ProgressLine(), EpochLog(t.epochs), *extra]
    if sigterm is not None:
        callbacks.append(PreemptionBackup(run, sigterm, steps_per_epoch, t.backup_every_steps))
    for callback in callbacks:
        if isinstance(callback, ResumesFromHistory):
            callback.resume_from(store.state["history"])
    return callbacks


def early_stopping(train: TrainConfig) -> Optional[ResumableEarlyStopping]:
    """Early stopping on `train.monitor`; None when `early_stopping_patience` is 0."""
    if train.patience() <= 0:
        return None
    return ResumableEarlyStopping(monitor=train.monitor, patience=train.patience(),
                                  mode=monitor_mode(train.monitor))


def histogram_logger(train: TrainConfig, splits: Splits, run: RunDir) -> HistogramLogger:
    """Histograms on one fixed training batch (the first rows, read alone), so that epochs
    compare the model and not the data."""
    probe = np.arange(min(train.batch_size, len(splits.train)))
    # NaN and Inf as the model sees them: zeroed (data.nonfinite: zero); under `error` training
    # stops at them before any histogram is written.
    x = zeroed(splits.train.view.take(probe).astype(np.float32))
    return HistogramLogger(run.live_dir("tensorboard/histograms"), x, splits.train.y[probe])

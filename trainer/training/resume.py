"""Where a run continues: after its last epoch checkpoint, or at the batch after its
preemption backup when that backup continues the checkpoint (see `trainer.training.preemption`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from trainer.storage.rundir import RunDir
from trainer.training.checkpoints import CheckpointStore
from trainer.training.preemption import SigtermWatch, prepare as prepare_backup

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Start:
    """Where `fit` begins, both 0-based: `epoch`, and `step` within it (0 unless a backup)."""
    epoch: int
    step: int
    resumed: bool  # whether an earlier run's checkpoint was loaded
    stopped_early: bool  # the earlier run ended by early stopping: nothing is left to train


def resume_point(run: RunDir, store: CheckpointStore, epochs: int, steps_per_epoch: int,
                 sigterm: Optional[SigtermWatch], resumed: bool) -> Start:
    """The start after `store.load()` (which returned `resumed`); with `sigterm`, a run that still
    has epochs to train looks for its backup."""
    epoch, step = int(store.state["epoch"]), 0
    stopped_early = bool(store.state.get("stopped_early"))
    if sigterm is not None and epoch < epochs and not stopped_early:
        epoch, step = prepare_backup(run, epoch, steps_per_epoch)
    if step:
        log.info("resuming %s from its backup in epoch %d, at batch %d of %d", run.url, epoch + 1,
                 step + 1, steps_per_epoch)
    elif resumed:
        log.info("resuming %s from epoch %d (of %d)", run.url, epoch, epochs)
    return Start(epoch=epoch, step=step, resumed=resumed, stopped_early=stopped_early)

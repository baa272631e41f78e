"""Preemption: save a backup when the platform says stop, and resume from it on restart.

Vertex AI sends SIGTERM to a preempted job (spot capacity, maintenance) with about 30 s of grace,
and restarts a worker that exits non-zero. During `fit`, tf.distribute's
`PreemptionCheckpointHandler` turns the signal into a checkpoint at an agreed step (every worker
of a multi-worker job stops at the same one) and then calls our exit: upload the backup, exit
with RESTART_EXIT_CODE (the callback that does it is `trainer.callbacks.preemption_backup`;
this module holds the signal watch and the rules of resuming). What is saved is tf-keras
`BackupAndRestore`'s state (model, optimizer, dropout RNG, epoch and batch), so on restart `fit`
continues at the next batch; the input pipeline, whose order is a function of (seed, epoch),
starts that epoch at the same batch.
Callbacks with state of their own (early stopping) rebuild it from the epoch checkpoint's
history, which a backup always continues.

Outside `fit` (loading data, the final evaluation, uploading artefacts) a SIGTERM stops the job
at once: every artefact is published whole, so the restart finds old or new files, never half
of one, and redoes what was left.

Layout under `<run>/checkpoints/backup/`: TensorFlow's `checkpoint` index file, written last,
names `ckpt-N.index` and `ckpt-N.data-*`. A backup is read and checksummed before it is used; one
that is damaged is reported and set aside, and the job resumes from the last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

from trainer import storage
from trainer.training.checkpoints import FILES as CHECKPOINT_FILES, checkpoint_problem
from trainer.kerasflavor import tf
from trainer.storage.rundir import RunDir

log = logging.getLogger("trainer")

# 128 + SIGTERM: what tf.distribute's own exit on Google Cloud uses, and what a shell reports for
# a process ended by SIGTERM. Any non-zero status makes Vertex AI restart the worker.
RESTART_EXIT_CODE = 143
BACKUP = ("checkpoints", "backup")
STATE_FILE = "checkpoint"  # TensorFlow's CheckpointManager index file


class Preempted(SystemExit):
    """Ends the process with RESTART_EXIT_CODE after the work so far is safe."""

    def __init__(self, reason: str):
        super().__init__(RESTART_EXIT_CODE)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class SigtermWatch:
    """Notes SIGTERM. Inside `deferred()` (while `fit` runs) it only sets a flag, which the
    preemption handler polls; anywhere else it stops the job at once."""

    def __init__(self):
        self.received = threading.Event()
        self._defer = False
        self._previous = None

    def install(self) -> None:
        """Take SIGTERM. Call it again after TensorFlow starts a multi-worker runtime: the
        coordination service puts its own SIGTERM handler in place, which only takes notes."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        if self._previous is None:
            self._previous = previous

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum, frame) -> None:
        self.received.set()
        if not self._defer:
            log.warning("SIGTERM received: stopping now; the restarted job redoes the rest")
            raise Preempted("SIGTERM received outside training")

    def is_set(self) -> bool:
        return self.received.is_set()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.received.is_set():  # arrived after the last training step (e.g. in validation)
            log.warning("SIGTERM received at the end of training: stopping; the restarted job "
                        "evaluates and writes the artefacts")
            raise Preempted("SIGTERM received at the end of training")


def backup_dir(run: RunDir) -> str:
    """The local folder BackupAndRestore reads and writes; it keeps the chief's files in
    `chief/` (and other workers' throwaway copies beside it)."""
    return os.path.dirname(run.local(*BACKUP, "chief"))


def prepare(run: RunDir, epochs_done: int, steps_per_epoch: int) -> tuple[int, int]:
    """Fetch the run's backup into the local folder BackupAndRestore reads, if it is sound and
    continues the last epoch checkpoint; returns where training resumes, (epoch, step), both
    0-based. Anything else (no backup, a stale or damaged one) resumes at (epochs_done, 0) and
    removes the backup, with a warning when it was damaged."""
    start = (epochs_done, 0)
    index = run.fetch(*BACKUP, STATE_FILE)
    if index is None:
        return start
    folder = os.path.dirname(index)
    chief_dir = os.path.join(folder, "chief")
    state = None
    try:
        state = tf.train.get_checkpoint_state(folder)
    except (tf.errors.OpError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        problem = None if state and state.model_checkpoint_path else "names no checkpoint"
    position = None
    if problem is None:
        name = os.path.basename(state.model_checkpoint_path)
        for suffix in CHECKPOINT_FILES:
            if run.fetch(*BACKUP, name + suffix) is None:
                problem = f"{name}{suffix} is missing"
                break
        else:
            problem = checkpoint_problem(os.path.join(folder, name))
        if problem is None:
            position = _position(os.path.join(folder, name), steps_per_epoch)
    if problem is not None:
        log.warning("backup %s is damaged (%s); setting it aside and resuming from the last epoch "
                    "checkpoint (epoch %d)", run.remote(*BACKUP), problem, epochs_done)
    elif position != start and position[0] == epochs_done and 0 < position[1] < steps_per_epoch:
        # BackupAndRestore reads `chief/`: move the checked files there, naming only this one.
        os.makedirs(chief_dir, exist_ok=True)
        for suffix in CHECKPOINT_FILES:
            os.replace(os.path.join(folder, name + suffix), os.path.join(chief_dir, name + suffix))
        _write_index(chief_dir, name)
        return position
    elif position is not None:
        log.info("backup at epoch %d step %d does not continue the last epoch checkpoint "
                 "(epoch %d); ignoring it", position[0] + 1, position[1], epochs_done)
    if run.chief:
        storage.remove_tree(run.remote(*BACKUP))
    return start


def _write_index(folder: str, name: str) -> None:
    tf.compat.v1.train.update_checkpoint_state(folder, os.path.join(folder, name),
                                               all_model_checkpoint_paths=[os.path.join(folder, name)])


def _position(prefix: str, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, step) after the backup at `prefix`, the rule tf-keras applies when it restores."""
    reader = tf.train.load_checkpoint(prefix)
    epoch = batch = -1
    for key in reader.get_variable_to_dtype_map():
        if key.startswith("ckpt_saved_epoch/"):
            epoch = int(reader.get_tensor(key))
        elif key.startswith("ckpt_saved_batch/"):
            batch = int(reader.get_tensor(key))
    if epoch < 0 or batch < 0:
        return (0, 0)
    return (epoch + 1, 0) if batch >= steps_per_epoch - 1 else (epoch, batch + 1)

"""The mid-epoch backup that a preempted job saves on SIGTERM and resumes from (see
`trainer.training.preemption` for the rules of resuming)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from trainer import storage
from trainer import kerasinternals as internals
from trainer.kerasflavor import keras, tf
from trainer.storage.rundir import RunDir
from trainer.training.preemption import (BACKUP, RESTART_EXIT_CODE, STATE_FILE, Preempted,
                                         SigtermWatch, backup_dir)

log = logging.getLogger("trainer")

_NEVER = sys.maxsize  # BackupAndRestore's save_freq when only preemption saves


class PreemptionBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose preemption save works wherever SIGTERM is the signal.

    tf-keras enables `save_before_preemption` only for MultiWorkerMirroredStrategy on Google
    Cloud and then watches the GCE metadata server, not SIGTERM; Vertex AI containers get SIGTERM.
    So the handler is made here, with a watcher that reads the SIGTERM flag and an exit that
    uploads the backup first. `every_steps` > 0 also backs up every so many steps (for
    machines that may die without a signal); 0 backs up only on preemption.

    Under `steps_per_execution` > 1 Keras calls the batch hooks once per execution, with the
    first and the last batch of it; a backup then stands for the last, so it still lands on a
    batch boundary, and `every_steps` counts steps, not calls. The signal is looked for after
    every call, the epoch's last one at the epoch's end, so a call that covers a whole epoch
    (or more: Keras ends each call at the epoch's end) stops the job at an epoch's end.
    """

    def __init__(self, run: RunDir, watch: SigtermWatch, steps_per_epoch: int,
                 every_steps: int = 0):
        super().__init__(backup_dir=backup_dir(run), save_freq=_NEVER, delete_checkpoint=True)
        self.run = run
        self.watch = watch
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.handler = None
        self._batch = 0
        self._call_start = 0
        self._since_backup = 0
        self._epoch_end: Optional[int] = None  # the epoch whose end is being checked

    def on_train_begin(self, logs=None):
        self.watch.install()
        super().on_train_begin(logs)
        # The backup also carries the dropout generators (see `dropout_generators`); restore
        # again now that the checkpoint names them.
        state = internals.backup_state(self)
        state.read_checkpoint_manager.checkpoint.random = internals.dropout_generators(self.model)
        state.restore()
        strategy = self.model.distribute_strategy
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=self.watch.is_set, exit_fn=self._exit, grace_period=0,
            save_fn=self._save)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            getattr(strategy, "cluster_resolver", None),
            state.write_checkpoint_manager, termination_config=config)

    def on_train_batch_begin(self, batch, logs=None):
        # BackupAndRestore assigns its batch variable here, every batch; a variable assign is
        # most of this callback's cost per step, so it is done only when a backup is saved.
        self._call_start = batch

    def _save(self) -> None:
        if self._epoch_end is not None:
            return  # the epoch checkpoint, already written, is the save
        internals.set_backup_batch(self, self._batch)
        internals.backup_state(self).write_checkpoint_manager.save()

    def on_train_batch_end(self, batch, logs=None):
        self._batch = batch  # the last batch of this call: the state is after it
        if batch >= self.steps_per_epoch - 1:
            # An epoch's last batch is followed by its epoch checkpoint; a backup here would
            # stand for an epoch whose validation and checkpoint never ran. This call is
            # checked at the epoch's end instead (`on_epoch_end`).
            return
        self._since_backup += batch - self._call_start + 1
        if self.every_steps and self._since_backup >= self.every_steps:
            self._since_backup = 0
            self.backup(epoch=internals.backup_epoch(self), batch=batch)
        self.handler.save_checkpoint_if_preempted()

    def on_epoch_end(self, epoch, logs=None):
        """Every call is checked once, the same on every worker; the epoch's last call here,
        after validation and the epoch checkpoint (callbacks listed before this one). When
        a call covers the whole epoch (`steps_per_execution` >= the epoch's steps) this is the
        only check. A preemption saved here needs no backup: the epoch checkpoint is where
        the restart resumes."""
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training:
            return  # training ends here anyway (early stopping): `SigtermWatch.deferred` stops
        self._epoch_end = epoch
        try:
            self.handler.save_checkpoint_if_preempted()
        finally:
            self._epoch_end = None

    def backup(self, epoch: int, batch: int) -> None:
        """Back up the state after `batch` of `epoch` (both 0-based), and upload it."""
        internals.set_backup_batch(self, batch)
        internals.backup_state(self).back_up(epoch=epoch, batch=batch)
        self._upload()

    def _exit(self) -> None:
        if self._epoch_end is not None:
            if self.run.chief:  # a backup from inside this epoch is older than its checkpoint
                storage.remove_tree(self.run.remote(*BACKUP))
            log.warning("preempted: epoch %d ended and its checkpoint is saved to %s; exiting "
                        "with %d so that the platform restarts the job", self._epoch_end + 1,
                        self.run.url, RESTART_EXIT_CODE)
            raise Preempted(f"preempted after epoch {self._epoch_end + 1}")
        self._upload()
        epoch, batch = internals.backup_point(self)
        where = self.run.remote(*BACKUP) if self.run.chief else "the chief's backup"
        log.warning("preempted: backup after epoch %d batch %d/%d saved to %s; exiting with %d "
                    "so that the platform restarts the job", epoch + 1, batch + 1,
                    self.steps_per_epoch, where, RESTART_EXIT_CODE)
        raise Preempted(f"preempted in epoch {epoch + 1} after batch {batch + 1}")

    def on_train_end(self, logs=None):
        # The handler's watcher thread would poll a finished run's flag for good.
        internals.stop_watching(self.handler)
        super().on_train_end(logs)  # deletes the local backup
        if self.run.chief:
            storage.remove_tree(self.run.remote(*BACKUP))

    def _upload(self) -> None:
        """The newest checkpoint's files, then the index file that names them (the commit
        point), then the files it no longer names."""
        if not self.run.chief:
            return
        folder = os.path.join(backup_dir(self.run), "chief")
        state = tf.train.get_checkpoint_state(folder)
        if state is None:
            return
        keep = os.path.basename(state.model_checkpoint_path) + "."
        remote = self.run.remote(*BACKUP)
        names = sorted(os.listdir(folder))
        for name in [*(n for n in names if n.startswith(keep)), STATE_FILE]:
            storage.put_file(os.path.join(folder, name), storage.join(remote, name))
        for name in names:
            if name.startswith("ckpt-") and not name.startswith(keep):
                storage.remove(storage.join(remote, name))

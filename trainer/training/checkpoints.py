"""Per-epoch checkpoints that let a re-run of the same `name` continue where the last one stopped.

Layout under `<run>/checkpoints/`:
  epoch-NNNN.*   model + optimizer after epoch NNNN (tf.train.Checkpoint files)
  best-NNNN.*    model weights of the best epoch so far, by `train.monitor`
  state.json     written last; names the files above and holds the history so far, what the
                 run trains (config, input shape, classes), the changes it resumed with and
                 `wall_time_s`, the seconds of every session up to this write

`state.json` is the commit point: checkpoint files are uploaded before it, and older files are
deleted only after it, so a job killed at any moment leaves a state that points at complete files.
The history in `state.json` is also what a resumed run's early stopping replays. The callback that
saves after each epoch is `trainer.callbacks.epoch_checkpoint`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
from typing import Callable, Optional

from trainer import storage
from trainer.config import monitor_mode
from trainer.errors import UserError
from trainer.kerasflavor import keras, tf
from trainer.kerasinternals import dropout_generators, weights_only
from trainer.storage.rundir import RunDir
from trainer.training import ema

log = logging.getLogger("trainer")

STATE = ("checkpoints", "state.json")
FILES = (".index", ".data-00000-of-00001")  # what tf.train.Checkpoint writes for one prefix


def checkpoint_problem(prefix: str) -> Optional[str]:
    """Why the checkpoint at `prefix` cannot be used, or None when every tensor reads back
    (TensorFlow checks each tensor's CRC32C as it reads it)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_dtype_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, RuntimeError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


class CheckpointStore:
    def __init__(self, run: RunDir, model: keras.Model, monitor: str,
                 identity: Optional[dict] = None, started: Optional[float] = None):
        """`started`: when this session began (`time.perf_counter()`; default now)."""
        self.run = run
        self.started = time.perf_counter() if started is None else started
        # The seconds of the sessions before this one, as far as their last state write.
        self.earlier_wall_time_s = 0.0
        self.model = model
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.identity = identity or {}  # what the run trains, recorded with every epoch
        self.state: dict = {"epoch": 0, "last": None, "best": None, "history": [],
                            "stopped_early": False, "changes": []}
        self.pending_changes: list[dict] = []  # allowed changes found by `load`, not yet trained

    # -- reading -------------------------------------------------------------------------------

    def load(self, check: Optional[Callable[[dict], list[dict]]] = None) -> bool:
        """Restore model, optimizer and dropout generators from the run's last checkpoint;
        False when there is none, or when it is damaged (then, with a warning, the run starts
        over rather than load garbage). `check(state)`, before any weight is read, refuses a
        state another config trained and returns the allowed changes (`pending_changes`)."""
        path = self.run.fetch(*STATE)
        if path is None:
            return False
        state, problem = None, None
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            problem = f"not valid JSON: {exc}"
        if problem is None and not (isinstance(state, dict) and isinstance(state.get("epoch"), int)
                                    and isinstance(state.get("history"), list)):
            problem = "not the state this package writes"
        if problem is None and state.get("last"):
            problem = checkpoint_problem(self._fetch_prefix(state["last"]))
        if problem is not None:
            log.warning("checkpoint %s is damaged (%s); starting the run over from epoch 0",
                        self.run.remote("checkpoints"), problem)
            return False
        if check is not None:
            self.pending_changes = check(state)
        self.state = state
        self.state.setdefault("changes", [])
        earlier = state.get("wall_time_s")
        if isinstance(earlier, (int, float)) and not isinstance(earlier, bool) and earlier >= 0:
            self.earlier_wall_time_s = float(earlier)
        if state.get("last"):
            ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                       random=dropout_generators(self.model))
            try:
                ckpt.read(self.run.local("checkpoints", state["last"])
                          ).assert_existing_objects_matched()
            except (ValueError, AssertionError, tf.errors.OpError) as exc:
                # A run recorded before its config was: its weights do not fit this model.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise UserError(
                    f"cannot resume {self.run.url}: its checkpoint does not fit this model "
                    f"({first}), {self.run.remote('checkpoints', state['last'])}, expected the "
                    "model the run was trained with; to train this config start a new run "
                    "(another name, --set name=NEW, or another --output_dir)") from None
        return True

    def _fetch_prefix(self, name: str) -> str:
        """The local prefix of checkpoint `name`, downloaded only if this process did not write it
        (a multi-worker non-chief must not wait for the chief's upload of its own epoch)."""
        for suffix in FILES:
            if not os.path.exists(os.path.join(self.run.staging, "checkpoints", name + suffix)):
                self.run.fetch("checkpoints", name + suffix)
        return self.run.local("checkpoints", name)

    def restore_best(self) -> Optional[int]:
        """Load the best epoch's weights into the model; returns that epoch, or None."""
        best = self.state.get("best")
        if not best:
            return None
        prefix = self._fetch_prefix(best["name"])
        problem = checkpoint_problem(prefix)
        if problem is not None:
            log.warning("best checkpoint %s is damaged (%s); keeping the last epoch's weights",
                        self.run.remote("checkpoints", best["name"]), problem)
            return None
        # The weights only: the model tracks its optimizer, whose slots a fine-tuning run's
        # fresh optimizer (after `train.freeze_epochs`) holds in another order than the frozen
        # phase's, so a best epoch from that phase would not read back with them.
        tf.train.Checkpoint(model=weights_only(self.model)).read(prefix).expect_partial()
        return best["epoch"]

    # -- writing -------------------------------------------------------------------------------

    def _write(self, name: str, with_optimizer: bool) -> None:
        prefix = self.run.local("checkpoints", name)
        objects = {"model": self.model}
        if with_optimizer:
            objects.update(optimizer=self.model.optimizer, random=dropout_generators(self.model))
        tf.train.Checkpoint(**objects).write(prefix)
        for path in sorted(glob.glob(prefix + ".*")):
            self.run.publish("checkpoints", os.path.basename(path))

    def _drop(self, name: Optional[str]) -> None:
        if not name:
            return
        for suffix in FILES:
            storage.remove(self.run.remote("checkpoints", name + suffix))
            local = os.path.join(self.run.staging, "checkpoints", name + suffix)
            if os.path.exists(local):
                os.unlink(local)

    def is_improvement(self, value: float) -> bool:
        best = self.state.get("best")
        if best is None or not math.isfinite(best["value"]):
            return math.isfinite(value)
        return value < best["value"] if self.mode == "min" else value > best["value"]

    def save_epoch(self, epoch: int, logs: dict) -> None:
        """Record epoch `epoch` (1-based): checkpoint files first, then the state that names them."""
        old_last, old_best = self.state.get("last"), (self.state.get("best") or {}).get("name")
        row = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        self.state["history"] = [r for r in self.state["history"] if r["epoch"] < epoch] + [row]
        value = row.get(self.monitor)
        new_best = value is not None and self.is_improvement(value)
        if new_best:
            name = f"best-{epoch:04d}"
            with ema.averaged(self.model):  # `train.ema`: the weights that were validated
                self._write(name, with_optimizer=False)
            self.state["best"] = {"name": name, "epoch": epoch, "value": value}
        last = f"epoch-{epoch:04d}"
        self._write(last, with_optimizer=True)
        self.state.update(epoch=epoch, last=last, monitor=self.monitor, **self.identity)
        self.write_state()
        if old_last != last:
            self._drop(old_last)
        if new_best and old_best != self.state["best"]["name"]:
            self._drop(old_best)

    def wall_time_s(self) -> float:
        """The run's seconds so far: the earlier sessions' and this one's."""
        return self.earlier_wall_time_s + (time.perf_counter() - self.started)

    def write_state(self) -> None:
        self.state["wall_time_s"] = self.wall_time_s()
        path = self.run.local(*STATE)
        with open(path, "w") as f:
            json.dump(self.state, f, indent=1)
        self.run.publish(*STATE)


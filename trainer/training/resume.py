"""Where a run continues: after its last epoch checkpoint, or at the batch after its
preemption backup when that backup continues the checkpoint (see `trainer.training.preemption`);
and whether it may: a re-run of the same name continues only the training it started.

The checkpoint state records what the run trained (its config, input shape and classes, see
`identity`). A re-run that changes what was trained (`config.resume_kinds`: `same`) is refused
with one line naming the keys; one that changes how training goes on (`recorded`) continues, and
the change is recorded from the epoch it takes effect (`changes`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
import json
from typing import Any, Optional

from trainer import config as config_module
from trainer.config import Config
from trainer.errors import UserError
from trainer.runtime import secrets
from trainer.storage.rundir import RunDir
from trainer.training.checkpoints import STATE, CheckpointStore
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


def identity(config: Config, input_shape, class_names) -> dict:
    """What a run trains, as its checkpoint state records it: the config (credentials redacted,
    `data.image_size` as the data decided), the input shape and the classes."""
    used = config.with_data_shape(input_shape).to_dict()
    return {"config": secrets.redact(used), "input_shape": [int(n) for n in input_shape],
            "class_names": list(class_names) if class_names else None}


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _differences(before: dict, now: dict) -> dict[str, list[tuple[str, Any, Any]]]:
    """The dotted keys whose values differ, by their resume kind."""
    kinds = config_module.resume_kinds()
    old, new = config_module.flat(before.get("config") or {}), config_module.flat(now["config"])
    found: dict[str, list] = {"same": [], "recorded": [], "free": []}
    for key in new:
        if key in old and old[key] != new[key]:
            found[kinds.get(key, "same")].append((key, old[key], new[key]))
    for key in ("input_shape", "class_names"):
        if before.get(key, now[key]) != now[key]:
            found["same"].append((key, before[key], now[key]))
    return found


def check_continuity(run: RunDir, state: dict, now: dict, where: Optional[str] = None) -> list[dict]:
    """Refuse a re-run whose `now` (an `identity`, its shape and classes optional) changes what
    the run in `state` trained; returns the allowed changes as records (key, from, to)."""
    if not isinstance(state.get("config"), dict):
        return []  # a run from before the state recorded its config
    if "input_shape" not in now:
        now = {**now, "input_shape": state.get("input_shape"), "class_names": state.get("class_names")}
    found = _differences(state, now)
    if found["same"]:
        listed = ", ".join(f"{k} {_shown(a)} -> {_shown(b)}" for k, a, b in found["same"])
        raise UserError(
            f"cannot resume {run.url}: it was trained with another {'/'.join(k for k, _, _ in found['same'])} "
            f"({listed}), {where or run.remote(*STATE)}, expected the same model, data, task and classes to "
            f"continue it; to train this config start a new run (another name, --set name=NEW, "
            f"or another --output_dir)")
    return [{"key": k, "from": a, "to": b} for k, a, b in found["recorded"]]


def check_config_early(run: RunDir, config: Config) -> None:
    """Before any data is read: refuse at once a config whose keys change what the run trained
    (its shape and classes are checked once the data is loaded)."""
    path = run.fetch(*STATE)
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError):
        return  # a damaged state: `CheckpointStore.load` warns and starts over
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        now = {"config": secrets.redact(config.to_dict())}
        if now["config"]["data"]["image_size"] is None:  # left to the data: compared later
            now["config"]["data"]["image_size"] = state["config"].get("data", {}).get("image_size")
        check_continuity(run, state, now)


def change_lines(changes: list[dict]) -> list[str]:
    """The recorded changes as people read them: `from epoch 4: train.learning_rate 0.001 -> 0.01`."""
    return [f"from epoch {c['epoch']}: {c['key']} {_shown(c['from'])} -> {_shown(c['to'])}"
            for c in changes]

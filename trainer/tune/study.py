"""The search itself: an Optuna study in `<study dir>/study.db` (SQLite), worked by one or more
processes, each trial an ordinary run in `<study dir>/trial-NNNN/`.

Resumption rests on five rules:
- A finished trial (complete, pruned or failed) is a row in the database and is never run again.
- A trial still marked running when a search starts belongs to a search that was killed (the
  study lock below guarantees no live process works on it). It is marked failed and enqueued
  again with the same parameters and the same run name, so the re-run continues from the run's
  last epoch checkpoint rather than from scratch.
- Grid points are enqueued when the study is created or grows: those no trial has taken yet
  (a grid extended by a value, or by a key, runs only its new combinations). A grid point is
  the trial's own record (`user_attrs["grid"]`), not an Optuna parameter, since Optuna fixes a
  parameter's choices for the life of a study.
- A sampled parameter whose distribution changed in a way Optuna cannot take (a choice with
  other values, a range turned log) is a new Optuna parameter, `key#N`; trials show it as `key`.
- Only another metric or direction is refused: earlier trials would not be comparable.

Locks: every process of a search holds `study.lock` shared; recovery needs it exclusively, so a
second search on the same directory is refused while any process of the first is alive.
`claim.lock` serialises "count the trials, then ask for one", so K workers never overshoot N.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from typing import Iterator, Optional

import numpy as np
import optuna
from optuna.trial import TrialState

from trainer import cli, config as config_mod, storage
from trainer.runtime import secrets
from trainer.runtime.platform import Platform
from trainer.config import Config
from trainer.errors import UserError
from trainer.tune.space import Space, objective_value, trial_config

STUDY_NAME = "search"
DB_FILE = "study.db"


def say(text: str) -> None:
    print(secrets.redact_text(text), flush=True)


def storage_url(study_dir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(study_dir, DB_FILE))}"


@contextlib.contextmanager
def _flock(path: str, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def hold_study(study_dir: str, exclusive: bool) -> contextlib.AbstractContextManager:
    """The study lock: exclusive (non-blocking) for recovery, shared while working."""
    path = os.path.join(study_dir, "study.lock")
    if not exclusive:
        return _flock(path, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def exclusive_lock():
        try:
            with _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB) as fd:
                yield fd
        except BlockingIOError:
            raise UserError(f"study in use by another process, {study_dir}, expected one "
                            "`trainer.tune` per study directory (use --parallel for more "
                            "workers)") from None
    return exclusive_lock()


def _objective(space: Space) -> list[str]:
    return [space.metric, space.direction]


def _recorded_objective(study: optuna.Study) -> Optional[list[str]]:
    """The metric and direction the study ranks by (from a study before `objective` was kept:
    the last two entries of its `space` fingerprint)."""
    if "objective" in study.user_attrs:
        return list(study.user_attrs["objective"])
    if "space" in study.user_attrs:
        return list(json.loads(study.user_attrs["space"])[-2:])
    return None


def _check_objective(study: optuna.Study, space: Space, study_dir: str) -> None:
    known = _recorded_objective(study)
    if known is None:
        study.set_user_attr("objective", _objective(space))
    elif known != _objective(space):
        raise UserError(
            f"the study ranks its trials by {known[0]} ({known[1]}) and this space asks for "
            f"{space.metric} ({space.direction}), {space.source}, expected the study's metric and "
            f"direction to continue it (earlier trials are not comparable under another): keep "
            f"them, or start a new study beside it with --study_name NEW (now "
            f"{os.path.basename(study_dir)})")


def _optuna_names(study: optuna.Study, space: Space) -> Space:
    """The space with each sampled parameter's Optuna name: its key, unless the study recorded
    the key with a distribution Optuna would refuse for this one (then `key#N`, one per
    distribution). Recorded in the study so every worker and every restart agrees."""
    recorded = dict(study.user_attrs.get("distributions", {}))
    names = {}
    for p in space.params:
        if p.kind == "grid":
            continue
        dist = p.distribution()
        for n in itertools.count(1):
            name = p.key if n == 1 else f"{p.key}#{n}"
            if name not in recorded:
                recorded[name] = optuna.distributions.distribution_to_json(dist)
                break
            try:
                optuna.distributions.check_distribution_compatibility(
                    optuna.distributions.json_to_distribution(recorded[name]), dist)
            except ValueError:
                continue
            recorded[name] = optuna.distributions.distribution_to_json(dist)  # a range may move
            break
        names[p.key] = name
    study.set_user_attr("distributions", recorded)
    return dataclasses.replace(space, params=tuple(
        dataclasses.replace(p, name=names.get(p.key, p.key)) for p in space.params))


def shown_params(trial: optuna.trial.FrozenTrial, space: Space) -> dict:
    """The trial's value of each parameter of `space`, by key: its grid point, its sampled
    values (under their Optuna names), or, for a key added to the space later, its config's."""
    grid = trial.user_attrs.get("grid") or trial.system_attrs.get("fixed_params") or {}
    used = trial.user_attrs.get("config") or {}
    out = {}
    for p in space.params:
        sampled = [v for k, v in trial.params.items() if k == p.key or k.startswith(p.key + "#")]
        out[p.key] = sampled[0] if sampled else grid.get(p.key, used.get(p.key))
    return out


def _grid_points_to_run(study: optuna.Study, space: Space, base: Config, target: int) -> list[dict]:
    """The grid points the next trials get, until `target` trials: the least-taken first, in the
    grid's order, so a new value or key runs only its new combinations. A trial from before a
    key joined the grid took the base config's value for it."""
    keys = [p.key for p in space.grid]
    defaults = config_mod.flat(base.to_dict())
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    taken = collections.Counter()
    pending = 0
    for t in trials:
        if t.number in again:
            continue
        pending += t.state == TrialState.WAITING
        grid = {**defaults, **t.user_attrs.get("config", {}),
                **(t.user_attrs.get("grid") or {**t.system_attrs.get("fixed_params", {}),
                                                 **t.params})}
        taken[_point_key({k: grid.get(k) for k in keys}, keys)] += 1
    return least_taken(space, taken, max(0, target - counted(study) - pending))


def _point_key(point: dict, keys: list[str]) -> str:
    return json.dumps([point[k] for k in keys], default=str)


def least_taken(space: Space, taken: collections.Counter, count: int) -> list[dict]:
    """`count` grid points, each the least taken so far (`taken`, by `_point_key`), the first in
    grid order among equals, as if taken one by one. That is, level by level from 0: every point
    taken at most `level` times, in grid order (the levels below brought the others up to it).
    The grid is walked, never listed."""
    keys = [p.key for p in space.grid]
    wanted: list[dict] = []
    for level in itertools.count():
        for point in space.grid_points():
            if len(wanted) >= count:
                return wanted
            if taken[_point_key(point, keys)] <= level:
                wanted.append(point)
    raise AssertionError("unreachable")


def pruner(space: Space) -> optuna.pruners.BasePruner:
    """The median pruner the space asks for (off by default for a grid, see `space.parse`)."""
    if not space.pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=space.pruning.startup_trials,
        n_warmup_steps=space.pruning.warmup_epochs + 1)  # steps are 1-based epochs


def open_study(study_dir: str, space: Space, seed: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url(study_dir),
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, direction=space.direction,
                               sampler=optuna.samplers.TPESampler(seed=seed),
                               pruner=pruner(space), load_if_exists=True)


def retried(trials: list) -> set[int]:
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


def counted(study: optuna.Study) -> int:
    """Trials that use up the budget: all but waiting ones and failures that were re-run."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in again)


def prepare(study: optuna.Study, space: Space, target: int, base: Config,
            study_dir: str) -> tuple[list[int], Space]:
    """Check the space ranks like the study, re-enqueue interrupted trials, enqueue grid points.

    Call with the study lock held exclusively. Returns the labels of the interrupted trials and
    the space with its Optuna parameter names.
    """
    _check_objective(study, space, study_dir)
    space = _optuna_names(study, space)
    interrupted = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        params = {**t.system_attrs.get("fixed_params", {}), **t.params}
        study.tell(t.number, state=TrialState.FAIL)
        label = t.user_attrs.get("trial", t.number)
        study.enqueue_trial(params, user_attrs={
            "run_name": t.user_attrs.get("run_name", run_name(label)), "retry_of": t.number,
            "trial": label, "grid": t.user_attrs.get("grid") or {}})
        interrupted.append(label)
    for point in _grid_points_to_run(study, space, base, target) if space.grid else ():
        study.enqueue_trial({}, user_attrs={"grid": point})
    return interrupted, space


def run_name(number: int) -> str:
    return f"trial-{number:04d}"


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def evaluate(study: optuna.Study, trial: optuna.Trial, base: Config, space: Space,
             study_dir: str) -> TrialState:
    """Run one trial as an ordinary run and tell the study how it ended."""
    from trainer import job
    from trainer.kerasflavor import keras
    from trainer.callbacks.pruning import MetricMissing, PruneOnEpoch

    grid = trial.user_attrs.get("grid") or {}
    # (a grid point enqueued by an older version is a fixed Optuna parameter: suggest returns it)
    params = {p.key: grid[p.key] if p.kind == "grid" and p.key in grid else p.suggest(trial)
              for p in space.params}
    number = trial.user_attrs.get("trial", trial.number)  # a re-run keeps its trial's number
    name = trial.user_attrs.get("run_name") or run_name(number)
    trial.set_user_attr("run_name", name)
    trial.set_user_attr("trial", number)
    again = " (re-run after an interruption)" if "retry_of" in trial.user_attrs else ""
    say(f"trial {number}{again}: {_params_text(params)}")
    started = time.perf_counter()
    callback = PruneOnEpoch(trial, space.metric)
    try:
        cfg = trial_config(base, params, name, study_dir, f"trial {number}")
        # every key's value, so a key the space gains later shows what this trial had
        trial.set_user_attr("config", secrets.redact(config_mod.flat(cfg.to_dict())))
        result = job.run(cfg, Platform(), callbacks=[callback])
    except UserError as exc:
        trial.set_user_attr("error", secrets.redact_text(str(exc)))  # kept in study.db
        trial.set_user_attr("wall_s", time.perf_counter() - started)
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(exc, MetricMissing):
            raise
        say(f"trial {number} failed: {exc}")
        return TrialState.FAIL
    finally:
        keras.backend.clear_session()  # trials in one process must not pile up graphs
    wall = time.perf_counter() - started
    value = objective_value(result.metrics, space.metric)
    trial.set_user_attr("objective", value)
    trial.set_user_attr("wall_s", round(wall, 1))
    trial.set_user_attr("epochs", callback.last_epoch)
    if callback.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        say(f"trial {number} pruned after epoch {callback.pruned_at}: "
            f"{space.metric}={value:.4g} ({wall:.1f} s)")
        return TrialState.PRUNED
    if not math.isfinite(value):
        trial.set_user_attr("error", f"{space.metric} is {value}")
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {number} failed: {space.metric} is {value}")
        return TrialState.FAIL
    study.tell(trial, value)
    say(f"trial {number}: {space.metric}={value:.4g} ({wall:.1f} s)")
    return TrialState.COMPLETE


def _sampler_seed(base_seed: int, worker: int, existing: int) -> int:
    """Distinct per worker and per restart, so neither repeats another's random draws."""
    return int(np.random.SeedSequence([base_seed, worker, existing]).generate_state(1)[0])


def work(study_dir: str, base: Config, space: Space, target: int, worker: int = 0,
         parent: Optional[int] = None) -> None:
    """Claim and run trials until `target` are used up (or the parent search is gone)."""
    existing = len(open_study(study_dir, space).get_trials(deepcopy=False))
    study = open_study(study_dir, space, _sampler_seed(base.train.seed, worker, existing))
    claim = os.path.join(study_dir, "claim.lock")
    while parent is None or os.getppid() == parent:
        with _flock(claim, fcntl.LOCK_EX):
            if counted(study) >= target:
                return
            trial = study.ask()
        evaluate(study, trial, base, space, study_dir)


def _worker_main(study_dir: str, base: Config, space: Space, target: int, worker: int,
                 parent: int, verbose: bool) -> None:
    from trainer.runtime import devices

    devices.share_gpus()
    quiet_runs(verbose)
    try:
        with hold_study(study_dir, exclusive=False):
            work(study_dir, base, space, target, worker, parent)
    except UserError as exc:
        cli.print_error(exc)
        sys.exit(exc.exit_code)
    except Exception:  # noqa: BLE001 - a bug: multiprocessing would print it unredacted
        secrets.print_exception(*sys.exc_info())
        sys.exit(1)


def quiet_runs(verbose: bool) -> None:
    """Trial runs log each epoch; a search shows one line per trial unless --verbose."""
    from trainer.runtime import logs

    logs.setup_logging()
    logging.getLogger("trainer").setLevel(logging.INFO if verbose else logging.WARNING)


def search(study_dir: str, base: Config, space: Space, target: int, parallel: int,
           verbose: bool = False) -> optuna.Study:
    """Recover, then work the study with `parallel` processes; returns the study when done."""
    storage.check_writable(study_dir)  # before a trial starts
    os.makedirs(study_dir, exist_ok=True)
    quiet_runs(verbose)
    with hold_study(study_dir, exclusive=True):
        study = open_study(study_dir, space)
        interrupted, space = prepare(study, space, target, base, study_dir)
    for number in interrupted:
        say(f"trial {number} was interrupted; it will run again")
    done = counted(study)
    parallel = max(1, min(parallel, target - done))  # no idle workers
    say(f"study {study_dir}: {done} of {target} trials already taken; "
        f"{parallel} worker{'s' if parallel > 1 else ''}; pruning "
        f"{'on' if space.pruning.enabled else 'off'}")
    with hold_study(study_dir, exclusive=False):
        if parallel == 1:
            work(study_dir, base, space, target)
        else:
            context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
            workers = [context.Process(target=_worker_main,
                                       args=(study_dir, base, space, target, i, os.getpid(), verbose))
                       for i in range(parallel)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            bad = [w.exitcode for w in workers if w.exitcode]
            if bad:
                raise UserError(f"{len(bad)} search worker(s) stopped with exit status "
                                f"{', '.join(map(str, bad))}, {study_dir}, expected every worker "
                                "to finish (see its error above)")
    return study

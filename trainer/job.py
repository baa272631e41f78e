"""One training run, start to finish: the function every entry point and test calls."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from trainer import backbone_weights, init_from, models, storage
from trainer.callbacks import vertex_experiment
from trainer.outputs import artifacts
from trainer.runtime import devices, memory
from trainer.runtime.platform import Platform
from trainer.config import Config, TrainConfig
from trainer.data import Splits, groups, load_splits
from trainer.data.dataset import resize_lines
from trainer.errors import OutOfSpace, StorageUnavailable, TrainingDiverged, UserError
from trainer.training.preemption import SigtermWatch
from trainer.storage.rundir import RunDir
from trainer.training import resume
from trainer.training.fit import TrainResult, train_and_evaluate

log = logging.getLogger("trainer")


@dataclass
class RunResult:
    run_dir: str
    outputs: dict[str, str]
    metrics: dict


def run(config: Config, platform: Platform, callbacks: Sequence = ()) -> RunResult:
    """Train and evaluate `config`, write its artefacts to `<output.dir>/<name>/` (or to the
    folders the platform names); `Platform()` is a plain local run.

    `callbacks` are extra Keras callbacks for `fit` (the search's pruning callback).
    """
    started = time.perf_counter()
    sigterm = SigtermWatch()
    sigterm.install()  # a preemption from here on ends the run with the restart status
    try:
        return _run(config, callbacks, platform, sigterm, started)
    finally:
        sigterm.uninstall()


def _run(config: Config, callbacks: Sequence, platform: Platform, sigterm: SigtermWatch,
         started: float) -> RunResult:
    strategy = _start_runtime(config.train, platform, sigterm)
    models.check_config(config.model)  # a misspelt model name or parameter: before any data is read
    run_dir = RunDir(config.output.dir, config.name, platform=platform, chief=platform.is_chief)
    splits, fresh = _checked_data(config, run_dir)
    _log_data(config, splits)
    try:
        result = _train(config, splits, run_dir, strategy, platform, callbacks, sigterm, started)
        for line in resize_lines(splits):
            log.warning("%s", line)
        outputs = artifacts.write_all(config, splits, result, run_dir, platform,
                                      wall_time_s=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - tidied, then re-raised (a full disk translated)
        kept = _after_failure(run_dir, fresh, exc)
        full = storage.out_of_space(exc)
        if full is None:
            raise
        raise _out_of_space(run_dir, full, kept, fresh) from None
    finally:
        run_dir.cleanup()
    # A non-chief's own files are gone with its staging folder; the run is the chief's.
    return RunResult(run_dir=run_dir.url, outputs=outputs if platform.is_chief else {},
                     metrics=result.metrics)


def _start_runtime(train: TrainConfig, platform: Platform, sigterm: SigtermWatch):
    """The distribution strategy, then the seeds: the multi-worker strategy must set up the
    runtime before any other TensorFlow work."""
    strategy = devices.choose_strategy(train.strategy, platform)
    sigterm.install()  # again: a multi-worker runtime has just put its own handler in place
    devices.seed_everything(train.seed, devices.deterministic(train.deterministic,
                                                              devices.accelerators()))
    return strategy


def _checked_data(config: Config, run_dir: RunDir) -> tuple[Splits, bool]:
    """The splits, after the checks that need no data (a writable run folder, a re-run that
    would train another model, a batch that fits in memory), and whether the chief's run is
    new; nothing is left behind when one of them, or the data, fails: not even the ImageNet
    weights a new run has stored."""
    fresh = False
    try:
        run_dir.check_writable()  # before any data is read: an unwritable folder fails fast
        fresh = run_dir.chief and not storage.exists(run_dir.url)
        resume.check_config_early(run_dir, config)  # a re-run that would train another model
        backbone_weights.prepare(config, run_dir)  # a backbone's weights: fetched and checked first
        init_from.fetch(config)  # an earlier run's model.h5: fetched and checked first
        if config.data.image_size is not None:  # before any image is decoded to that size
            channels = config.data.channel_count() or 1  # `auto`: at least one
            _check_batch(config.train, (*config.data.image_size, channels), "data.image_size")
        splits = load_splits(config)
        _check_batch(config.train, tuple(splits.input_shape), "the data")
    except Exception as exc:
        if fresh:  # a preemption (SystemExit) keeps them for the restart
            _after_failure(run_dir, fresh, exc)
        run_dir.cleanup()
        raise
    except BaseException:
        run_dir.cleanup()
        raise
    return splits, fresh



def _log_data(config: Config, splits: Splits) -> None:
    """The data's one-line summary, the splits it lacks, then the group report and its warnings."""
    summary = splits.summary()
    log.info("data: %s samples of shape %s (%s split; %s)%s",
             ", ".join(f"{k} {len(p)}" for k, p in splits.present.items()), splits.input_shape,
             splits.split_method, splits.layout,
             f", classes: {', '.join(splits.class_names)}" if splits.class_names else
             f", targets: {', '.join(splits.target_names or [])}")
    for line in splits.absent_lines(config.train.monitor):
        log.info("%s", line)
    for i, line in enumerate(groups.report_lines(summary, config.task)):  # the report, then its warnings
        (log.warning if i else log.info)("%s", line)
    log.debug("data summary: %s", summary)


def _train(config: Config, splits: Splits, run_dir: RunDir, strategy, platform: Platform,
           callbacks: Sequence, sigterm: SigtermWatch, started: float) -> TrainResult:
    """Train and evaluate with the platform's callbacks (the tuner's report, the experiment's
    log) and the caller's; the experiment gets the final figures, the result its page."""
    log.info("run %s: model %s, task %s, %d epochs%s", run_dir.url, config.model.name,
             config.task, config.train.epochs,
             "" if platform.is_chief else
             f" ({platform.task_type} {platform.task_index}: the chief writes the run)")
    experiment = vertex_experiment.from_config(config, platform)
    result = train_and_evaluate(config, splits, run_dir, strategy,
                                extra_callbacks=[*_platform_callbacks(config, platform),
                                                 *([experiment] if experiment else []),
                                                 *callbacks],
                                sigterm=sigterm, started=started)
    if experiment is not None:  # the final figures; the run's page goes into the report
        experiment.log_final(result.metrics)
        if experiment.url and not experiment.failed:
            result.runtime["experiment_run"] = experiment.url
    return result


def _out_of_space(run_dir: RunDir, full: str, kept: Optional[int], fresh: bool) -> OutOfSpace:
    """The error for a disk that filled up while writing the run, saying what is left."""
    if kept is not None:
        left = (f"its last checkpoint, epoch {kept}, is intact and the TensorBoard logs end "
                "at their last whole record: free some space and re-run the same name to "
                "resume from it")
    elif fresh:
        left = "the new run's folder was removed: free some space and run it again"
    else:
        left = "what was there before this run is intact: free some space and re-run it"
    return OutOfSpace(
        f"out of disk space while writing the run ({full}), {run_dir.url} (staged under "
        f"{os.path.dirname(run_dir.staging)}), expected room for the run's files ({left})")


def _after_failure(run_dir: RunDir, fresh: bool, exc: Exception) -> Optional[int]:
    """What a failed run leaves; returns the epoch of the checkpoint it keeps, if any.

    A new run that has no checkpoint to resume from, or that met bad data, leaves nothing: its
    folder (TensorBoard's first events, a half-written checkpoint) is removed. A run that keeps
    a checkpoint (a resumed run, or a new one that diverged or filled the disk after an epoch
    was committed) keeps it, and TensorBoard's event files are cut to their last whole record,
    so what is left is what a re-run resumes from. A bucket that stopped answering is left
    alone (a delete would fail too)."""
    if not run_dir.chief or isinstance(exc, StorageUnavailable):
        return None
    try:
        kept = run_dir.committed_epoch()
        if fresh and isinstance(exc, UserError) and not isinstance(exc, (TrainingDiverged,
                                                                         OutOfSpace)):
            kept = None  # bad data or config: a re-run would meet it again, nothing to resume
        if fresh and kept is None:
            run_dir.remove_new()
        else:
            run_dir.trim_records("tensorboard")
    except Exception as again:  # noqa: BLE001 - the run's own error is the one to report
        log.warning("could not tidy %s after the error (%s)", run_dir.url, again)
        return None
    return kept


def _check_batch(train: TrainConfig, sample_shape: tuple, where: str) -> None:
    """One replica's batch of float32 samples must fit in memory (the pipeline holds a few)."""
    size = train.batch_size
    memory.check_fits(size * math.prod(sample_shape) * 4,
                      f"train.batch_size {size} of samples {sample_shape} in float32",
                      f"{where}, train.batch_size")


def _platform_callbacks(config: Config, platform: Platform) -> list:
    if platform.trial_id and platform.is_chief:
        from trainer.callbacks.hypertune_report import HypertuneReport

        log.info("hyperparameter tuning trial %s: reporting %s each epoch", platform.trial_id,
                 config.train.monitor)
        return [HypertuneReport(config.train.monitor)]
    return []

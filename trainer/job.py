"""One training run, start to finish: the function every entry point and test calls."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from trainer import artifacts, environment, storage
from trainer.config import Config
from trainer.data import groups, load_splits
from trainer.errors import TrainingDiverged, UserError
from trainer.rundir import RunDir
from trainer.training import train_and_evaluate

log = logging.getLogger("trainer")


@dataclass
class RunResult:
    run_dir: str
    outputs: dict[str, str]
    metrics: dict


def run(config: Config) -> RunResult:
    """Train and evaluate `config`, write its artefacts to `<output.dir>/<name>/`."""
    started = time.perf_counter()
    environment.seed_everything(config.train.seed, config.train.deterministic)
    strategy = environment.choose_strategy(config.train.strategy)
    splits = load_splits(config)
    summary = splits.summary()
    log.info("data: train %d, val %d, test %d samples of shape %s (%s split)%s",
             len(splits.train), len(splits.val), len(splits.test), splits.input_shape,
             splits.split_method,
             f", classes: {', '.join(splits.class_names)}" if splits.class_names else "")
    for i, line in enumerate(groups.report_lines(summary)):  # the report, then its warnings
        (log.warning if i else log.info)("%s", line)
    log.debug("data summary: %s", summary)
    run_dir = RunDir(config.output.dir, config.name)
    fresh = not storage.exists(run_dir.url)
    try:
        log.info("run %s: model %s, task %s, %d epochs", run_dir.url, config.model.name,
                 config.task, config.train.epochs)
        result = train_and_evaluate(config, splits, run_dir, strategy)
        outputs = artifacts.write_all(config, splits, result, run_dir,
                                      wall_time_s=time.perf_counter() - started)
    except UserError as exc:
        # Bad data found mid-run (an undecodable image, a corrupt shard): a new run leaves no
        # partial output. A diverged run keeps its last finite checkpoint on purpose.
        if fresh and not isinstance(exc, TrainingDiverged):
            storage.remove_tree(run_dir.url)
        raise
    finally:
        run_dir.cleanup()
    return RunResult(run_dir=run_dir.url, outputs=outputs, metrics=result.metrics)

"""Does the package's default config train models as good as a careful plain script? For each
seed layout's shipped sample data (`local/make_sample_data.py`, `local/configs/`), on the same
splits:

- the package, with the layout's config and the package's own defaults for how to train
  (precision, early stopping, learning-rate schedule, steps per call);
- a plain tf-keras script: the same network (the package's builder, float32), Adam at the
  config's learning rate, fixed epochs, early stopping with patience 10 that restores the best
  weights, the config's batch size and class weights.

    python benchmarks/quality.py [--tasks hexagonal contact shapes digits] [--full]

By default small data and at most 10 epochs (minutes on 2 CPU cores); `--full` uses each
layout's default sample count and its config's epochs. Prints the test figure of both side by
side (RMSE for regression, lower is better; accuracy for classification, higher is better).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "local"))

import make_sample_data  # noqa: E402
from trainer import config as config_mod, job, models  # noqa: E402
from trainer.data import load_splits  # noqa: E402
from trainer.data.stats import channel_stats  # noqa: E402
from trainer.kerasflavor import keras  # noqa: E402
from trainer.runtime.platform import Platform  # noqa: E402
from trainer.training import compiling  # noqa: E402
from trainer.training.class_weights import training_class_weights  # noqa: E402

TASKS = ["hexagonal", "contact", "shapes", "digits"]
# The keys that say how to train, left at the package's defaults for its side of the table.
RECIPE = ["train.early_stopping_patience=auto", "train.lr_schedule=constant",
          "train.mixed_precision=auto", "train.steps_per_execution=auto"]
PLAIN_PATIENCE = 10


def task_config(task: str, data: str, out: str, epochs: int | None) -> config_mod.Config:
    overrides = [f"data.train={data}/*", f"name={task}", *RECIPE, "output.plots=false",
                 "output.report=false"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    return config_mod.load(os.path.join(ROOT, "local", "configs", f"{task}.yaml"), overrides,
                           output_dir=out)


def figure(cfg: config_mod.Config, metrics: dict) -> float:
    """The test figure: RMSE for regression (the default loss), accuracy for classification."""
    return float(metrics["loss"] if cfg.task == "regression" else metrics["accuracy"])


def package_run(cfg: config_mod.Config) -> float:
    keras.backend.clear_session()
    return figure(cfg, job.run(cfg, Platform()).metrics["test"])


def plain_script(cfg: config_mod.Config) -> float:
    """What a careful user writes in twenty lines, on the package's splits."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.train.seed)
    keras.mixed_precision.set_global_policy("float32")
    splits = load_splits(cfg)
    arrays = {k: (s.view.take(np.arange(len(s))).astype(np.float32), s.y)
              for k, s in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    mean, var = channel_stats([arrays["train"][0]])
    model = models.build_model(cfg, splits.input_shape, splits.num_outputs, mean, var,
                               policy="float32")
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_schedule="constant"))
    compiling.compile_model(model, plain.train)  # Adam at the config's rate, the task's loss and metrics
    model.fit(*arrays["train"], batch_size=cfg.train.batch_size, epochs=cfg.train.epochs,
              validation_data=arrays["val"], verbose=0,
              class_weight=training_class_weights(cfg, splits),
              callbacks=[keras.callbacks.EarlyStopping(patience=PLAIN_PATIENCE,
                                                       restore_best_weights=True)])
    results = model.evaluate(*arrays["test"], batch_size=cfg.train.batch_size, verbose=0,
                             return_dict=True)
    return figure(cfg, results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS, choices=TASKS)
    parser.add_argument("--full", action="store_true",
                        help="each layout's default sample count and its config's epochs")
    parser.add_argument("--samples", type=int, default=600, help="samples per task (not --full)")
    parser.add_argument("--epochs", type=int, default=10, help="at most this many epochs (not --full)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            data = make_sample_data.make(task, os.path.join(tmp, "data"),
                                         None if args.full else args.samples)
            probe = task_config(task, data, tmp, None)
            epochs = None if args.full else min(probe.train.epochs, args.epochs)
            cfg = task_config(task, data, os.path.join(tmp, "runs"), epochs)
            started = time.perf_counter()
            ours = package_run(cfg)
            ours_s = time.perf_counter() - started
            started = time.perf_counter()
            theirs = plain_script(cfg)
            theirs_s = time.perf_counter() - started
            better = ours <= theirs if cfg.task == "regression" else ours >= theirs
            rows.append({"task": task, "metric": "test RMSE" if cfg.task == "regression"
                         else "test accuracy", "epochs": cfg.train.epochs,
                         "package": ours, "plain": theirs, "package_s": ours_s,
                         "plain_s": theirs_s, "match_or_beat": bool(better)})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'task':11}{'figure':15}{'epochs':>7}{'package defaults':>18}{'plain script':>14}"
          f"{'goal':>8}{'time (s)':>14}")
    for r in rows:
        print(f"{r['task']:11}{r['metric']:15}{r['epochs']:>7}{r['package']:>18.4f}"
              f"{r['plain']:>14.4f}{'met' if r['match_or_beat'] else 'not met':>8}"
              f"{r['package_s']:>7.0f}/{r['plain_s']:.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m trainer.crossval --config FILE --folds K [--set key=value ...] [--output_dir DIR]`.

K-fold cross-validation for small labelled sets. The training data is cut into K parts, by
whole groups (videos, sessions, seeds) with `data.split_by: group`, else by sample, drawn from
`train.seed`; fold k trains on the other parts (its validation split carved from them as the
config says) and is tested on part k. Each fold is a run of its own,
`<output.dir>/<name>-crossval/fold-<k>/`, whose config carries `data.fold: [k, K]`, so the fold
re-runs alone with `trainer.task --config .../fold-<k>/config.yaml`. Run the same command again
after an interruption: folds with a `metrics.json` are finished and skipped, an unfinished fold
resumes from its last checkpoint. At the end `crossval.json` (each fold's run, held-out groups
and metrics, then each metric's mean and std over the folds) and `crossval.html` (the same as a
page, with a figure per metric) are written beside the folds.

`trainer.submit --crossval K` runs the folds on Vertex AI instead, one job per fold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Callable, Optional, Sequence

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.data.folds import fold_rows
from trainer.errors import UserError

log = logging.getLogger("trainer")

FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The YAML config to cross-validate; without it, the embedded "
                        "demo.")
flags.DEFINE_integer("folds", None, "Number of folds K (at least 2).", lower_bound=2,
                     upper_bound=1000, flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where `<name>-crossval/` goes (overrides output.dir).",
                    flag_values=FLAGS)

SUMMARY, PAGE = "crossval.json", "crossval.html"


# ----------------------------------------------------------------------------------------------
# Folds (drawn in `trainer.data.folds`)


def held_out_groups(config) -> list[list[str]]:
    """Per fold, the groups it holds out (empty lists without `split_by: group`)."""
    from trainer.data import dataset, images

    d = config.data
    if d.split_by != "group":
        return []
    source = dataset.open_source(config, d.train, "train", images.spec_from_config(d))
    rows = None if d.train_rows is None else np.arange(*d.train_rows)
    out = []
    for k in range(d.fold[1]):
        fold = dataclasses.replace(config, data=dataclasses.replace(d, fold=[k, d.fold[1]]))
        taken = fold_rows(source, rows, fold)
        out.append(sorted(str(g) for g in np.unique(source.groups[taken])))
    return out


def fold_config(config, k: int, folds: int):
    """Fold k's config: its own run `fold-<k>` inside `<output.dir>/<name>-crossval/`."""
    from trainer import config as config_mod

    raw = config.to_dict()
    raw["data"]["fold"], raw["name"] = [k, folds], f"fold-{k}"
    raw["output"]["dir"] = crossval_dir(config)
    return config_mod.from_dict(raw, f"--folds {folds}")


def crossval_dir(config) -> str:
    return storage.join(config.output.dir, f"{config.name}-crossval")


# ----------------------------------------------------------------------------------------------
# Running and summarising


def finished_metrics(run_url: str) -> Optional[dict]:
    """A fold's metrics.json, which only a finished run has; None otherwise."""
    path = storage.join(run_url, "metrics.json")
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_text(path, storage.TEXT_LIMIT, "a fold's metrics.json"))
    except ValueError:
        return None  # a damaged file: the fold runs again


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """`split.metric` for each number of the val and test figures (and the threshold)."""
    out = {}
    for split in ("val", "test"):
        for key, value in (metrics.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{split}.{key}"] = float(value)
    threshold = metrics.get("threshold")
    if isinstance(threshold, dict) and isinstance(threshold.get("value"), (int, float)):
        out["threshold"] = float(threshold["value"])
    return out


def summarise(folds: list[dict]) -> dict:
    """`{folds, mean, std}`: std is the sample standard deviation over folds (0 for one)."""
    names = sorted({k for f in folds for k in f["metrics"]})
    mean, std = {}, {}
    for name in names:
        values = np.array([f["metrics"][name] for f in folds if name in f["metrics"]], float)
        values = values[np.isfinite(values)]
        mean[name] = float(values.mean()) if len(values) else float("nan")
        std[name] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"folds": folds, "mean": mean, "std": std}


def run_folds(config, folds: int, runner: Optional[Callable] = None,
              only: Optional[Sequence[int]] = None) -> dict:
    """Run (or skip, when finished) each fold, then write crossval.json and crossval.html;
    returns the summary. `runner(config)` trains one fold (default: the job, locally)."""
    if runner is None:
        from trainer import job
        from trainer.runtime.platform import Platform

        def runner(cfg):
            job.run(cfg, Platform())

    base = fold_config(config, 0, folds)  # checked once: the fold keys fit this config
    groups = held_out_groups(base)
    entries = []
    for k in range(folds):
        cfg = fold_config(config, k, folds)
        run_url = storage.join(cfg.output.dir, cfg.name)
        metrics = finished_metrics(run_url)
        if metrics is None and (only is None or k in only):
            print(f"fold {k} of {folds}: training {run_url}", flush=True)
            runner(cfg)
            metrics = finished_metrics(run_url)
        elif metrics is not None:
            print(f"fold {k} of {folds}: finished, skipped ({run_url})", flush=True)
        if metrics is None:
            continue
        entries.append({"fold": k, "run": run_url,
                        "held_out_groups": groups[k] if groups else [],
                        "metrics": scalar_metrics(metrics)})
    summary = summarise(entries)
    summary["folds_asked"] = folds
    write_summary(crossval_dir(config), summary, config.name)
    return summary


def write_summary(folder: str, summary: dict, name: str) -> dict[str, str]:
    """crossval.json and crossval.html, each written locally and published whole."""
    from trainer.outputs import crossval_page

    out = {}
    with tempfile.TemporaryDirectory(prefix="crossval-") as tmp:
        for file, text in ((SUMMARY, json.dumps(summary, indent=2)),
                           (PAGE, crossval_page.render(summary, name))):
            local = os.path.join(tmp, file)
            with open(local, "w", encoding="utf-8") as f:
                f.write(text)
            out[file] = storage.join(folder, file)
            storage.put_file(local, out[file])
    return out


def _main(args: list[str]) -> int:
    from trainer import config as config_mod
    from trainer.runtime import logs

    logs.setup_logging(structured=False)
    cfg = config_mod.load(FLAGS.config, FLAGS.set, FLAGS.output_dir)
    summary = run_folds(cfg, FLAGS.folds)
    print(f"cross-validation: {len(summary['folds'])} of {FLAGS.folds} folds finished, "
          f"{crossval_dir(cfg)}/{SUMMARY}")
    for name, mean in summary["mean"].items():
        if name.startswith("test."):
            print(f"  {name}: {mean:.4g} ± {summary['std'][name]:.2g}")
    return 0 if len(summary["folds"]) == FLAGS.folds else 1


main = cli.Command(_main, FLAGS, required=["folds"])

if __name__ == "__main__":
    main.run()

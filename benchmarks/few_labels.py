"""Few labels, measured: does starting from a related task's run help, and by how much?

    python benchmarks/few_labels.py [--labels 250 1000 4000] [--epochs 40] [--quick] [--json rows.json]

Two synthetic glyph tasks (`benchmarks/glyphs.py`: strokes on a 4x4 grid, rotated, scaled,
shifted, with clutter strokes, a background gradient, random contrast and noise): a related
pretraining task (20 glyph classes, `--pretrain_samples` labelled images) and a target task (10
other glyph classes) trained with 250, 1,000 or 4,000 labels. For each label count, four
conditions, each one run of the package's real job (`trainer.job.run` on a config loaded with
`--set`-style overrides, as `python -m trainer.task` does):

- scratch: the package's default seed net (`shapes_cnn`) from random weights;
- init_from: the same net, `model.init_from` its run on the pretraining task;
- backbone: `--backbone` (default `mobilenet_v3_small`, the cheapest here) trained on the
  pretraining task from random weights (no ImageNet download), its backbone's weights saved as a
  file and given as `model.weights` (the backbone then keeps its BatchNorm statistics);
- backbone+reg: the same with `data.augment`, `train.ema` and `train.label_smoothing`.

Each target run sees about `--samples_seen` training samples (epochs = that over the labels,
between `--min_epochs` and `--epochs`), with the package's default early stopping.

Time on 2 shared CPU cores (load 11 to 15): the seed-net rows with their pretraining 321 s
(`--conditions scratch init_from`); the backbone's pretraining 764 s and its runs 2.5 to 4
minutes each at 250 labels, longer with more labels: the whole default run is about an hour
there, so pick `--conditions` and `--labels`; `--quick` (a smoke run, its figures near chance)
took 165 s at load 5 to 8. Figures: docs/few-labels.md.

The runs from a pretrained start freeze it for `--freeze_epochs` (the head alone), then train all
of it at `--finetune_lr`. Every run gets the same validation set (`--val` labelled images, used
for early stopping and the best epoch) and is scored on the same held-out test set (`--test`
images). One repeat per cell, fixed seeds (`train.seed=0`, data seeds below); no spread is measured,
so read a difference of a point or two as none. Prints each row as it completes, then the
table (test accuracy), the command and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import glyphs  # noqa: E402

CONDITIONS = ["scratch", "init_from", "backbone", "backbone+reg"]
SEED_NET = "shapes_cnn"
REGULARISE = ["data.augment=[translate: 0.1, rotate: 10, contrast: 0.2, noise: 0.05]",
              "train.ema=0.99", "train.label_smoothing=0.1"]
# data seeds: the two alphabets, and the samples of each split
PRETRAIN_ALPHABET, TARGET_ALPHABET = 101, 202
SPLIT_SEEDS = {"pretrain": 1, "train": 2, "val": 3, "test": 4}
POOL = 4000  # the target's labelled images: a run with N labels takes the first N of the same pool


def write_data(folder: str, args) -> dict:
    """The npz files of both tasks; returns their paths by split."""
    os.makedirs(folder, exist_ok=True)
    source, target = glyphs.alphabet(20, PRETRAIN_ALPHABET), glyphs.alphabet(10, TARGET_ALPHABET)
    sizes = {"pretrain": (source, args.pretrain_samples), "train": (target, max(POOL, *args.labels)),
             "val": (target, args.val), "test": (target, args.test)}
    paths = {}
    for split, (alphabet, n) in sizes.items():
        x, y = glyphs.sample(alphabet, n, SPLIT_SEEDS[split])
        paths[split] = os.path.join(folder, f"{split}.npz")
        np.savez(paths[split], x=x, y=y)
    return paths


def common(args, out: str, name: str, epochs: int) -> list[str]:
    return [f"name={name}", f"output.dir={out}", "data.format=npz", f"train.epochs={epochs}",
            "train.seed=0", "output.plots=false", "output.report=false",
            "output.saved_model=false"]


def run(overrides: list[str]) -> dict:
    """One run of the package's job; returns its metrics.json figures."""
    from trainer import config as config_mod, job
    from trainer.kerasflavor import keras
    from trainer.runtime.platform import Platform

    keras.backend.clear_session()
    cfg = config_mod.load(None, overrides)
    return job.run(cfg, Platform()).metrics


def pretrain(args, paths: dict, out: str, model: str) -> tuple[str, float]:
    """The related task's run of `model`; returns what the target runs start from (the run's
    folder for the seed net, the backbone's weights file for a backbone) and its test accuracy.

    A backbone trains here at batch 16, for twice the steps in which MobileNetV3's BatchNorm
    (momentum 0.999) can settle its statistics; on these images that was not enough
    (docs/few-labels.md, "Measured: few labels")."""
    name = f"pretrain_{model}"
    extra = [] if model == SEED_NET else ["train.batch_size=16"]
    metrics = run(common(args, out, name, args.pretrain_epochs)
                  + [f"data.train={paths['pretrain']}", f"model.name={model}",
                     "data.validation_split=0.1", "data.test_split=0.1", *extra])
    folder = os.path.join(out, name)
    return (folder if model == SEED_NET else backbone_weights(folder, model),
            float(metrics["test"]["accuracy"]))


def backbone_weights(folder: str, name: str) -> str:
    """The backbone's weights from the run's model.h5 (which holds the backbone's layers
    flattened into the model, under their own names), as a file `model.weights` takes."""
    from trainer import backbones
    from trainer.outputs import modelfile

    trained, _ = modelfile.load(os.path.join(folder, "model.h5"))
    backbone = backbones.construct(name, (glyphs.SIZE, glyphs.SIZE))
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    path = os.path.join(folder, "backbone_weights.h5")
    backbone.save_weights(path)
    return path


def epochs_for(args, labels: int) -> int:
    """About `--samples_seen` training samples per run, between `--min_epochs` and `--epochs`: few
    labels get more epochs, so that each run sees enough steps, and the large runs fit the
    time the benchmark has."""
    return max(1, min(args.epochs, max(args.min_epochs, args.samples_seen // labels)))


def condition(args, cond: str, labels: int, paths: dict, out: str, started: dict) -> list[str]:
    data = [f"data.train={paths['train']}", f"data.train_rows=[0, {labels}]",
            f"data.val={paths['val']}", f"data.test={paths['test']}"]
    base = common(args, out, f"{cond.replace('+', '_')}_{labels}", epochs_for(args, labels)) + data
    if cond == "scratch":
        return base + [f"model.name={SEED_NET}"]
    finetune = [f"train.freeze_epochs={args.freeze_epochs}",
                f"train.finetune_learning_rate={args.finetune_lr}"]
    if cond == "init_from":
        return base + [f"model.name={SEED_NET}", f"model.init_from={started[SEED_NET]}",
                       *finetune]
    backbone = base + [f"model.name={args.backbone}", f"model.weights={started[args.backbone]}",
                       *finetune]
    return backbone + (REGULARISE if cond == "backbone+reg" else [])


def best_epoch(out: str, cond: str, labels: int):
    """The epoch whose weights the run kept, from its metrics.json."""
    with open(os.path.join(out, f"{cond.replace('+', '_')}_{labels}", "metrics.json")) as f:
        return json.load(f).get("training", {}).get("best_epoch")


def table(rows: list[dict], labels: list[int], conditions: list[str]) -> str:
    cell = {(r["condition"], r["labels"]): r for r in rows}
    head = "| condition | " + " | ".join(f"{n:,} labels" for n in labels) + " |"
    lines = [head, "| --- |" + " ---: |" * len(labels)]
    for cond in conditions:
        figures = [f"{cell[cond, n]['test_accuracy']:.3f}" if (cond, n) in cell else "-"
                   for n in labels]
        lines.append(f"| {cond} | " + " | ".join(figures) + " |")
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", nargs="+", type=int, default=[250, 1000, 4000])
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=CONDITIONS)
    parser.add_argument("--epochs", type=int, default=40, help="at most this many epochs per run")
    parser.add_argument("--min_epochs", type=int, default=6)
    parser.add_argument("--samples_seen", type=int, default=20000,
                        help="epochs per target run: this over the labels, in [--min_epochs, --epochs]")
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--pretrain_samples", type=int, default=6000)
    parser.add_argument("--val", type=int, default=500, help="validation images of the target")
    parser.add_argument("--test", type=int, default=2000, help="test images of the target")
    parser.add_argument("--freeze_epochs", type=int, default=3)
    parser.add_argument("--finetune_lr", type=float, default=3e-4)
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--quick", action="store_true",
                        help="250 labels, 1,000 pretraining images, 2-3 epochs: a smoke run (its "
                        "figures mean nothing: the backbone's BatchNorm is far from settled)")
    parser.add_argument("--dir", default=None, help="where data and runs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the rows here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.labels, args.epochs, args.pretrain_epochs = [250], 3, 2
        args.pretrain_samples, args.val, args.test, args.freeze_epochs = 1000, 200, 300, 1
    bad = [n for n in args.labels if n <= 0]
    if bad:
        parser.error(f"--labels {bad[0]}: expected a positive number of labels")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = "python benchmarks/few_labels.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load_start, started_at = os.getloadavg(), time.perf_counter()
    print(f"command: {command}\nload average at the start: "
          + " ".join(f"{v:.1f}" for v in load_start), flush=True)
    import logging

    logging.getLogger("trainer").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        paths = write_data(os.path.join(folder, "data"), args)
        out = os.path.join(folder, "runs")
        pretrained = {}
        needed = {SEED_NET: "init_from" in args.conditions,
                  args.backbone: bool({"backbone", "backbone+reg"} & set(args.conditions))}
        for model, wanted in needed.items():
            if wanted:
                t0 = time.perf_counter()
                pretrained[model], acc = pretrain(args, paths, out, model)
                rows.append({"condition": f"pretrain {model}", "labels": args.pretrain_samples,
                             "test_accuracy": acc, "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
        for labels in args.labels:
            for cond in args.conditions:
                t0 = time.perf_counter()
                metrics = run(condition(args, cond, labels, paths, out, pretrained))
                rows.append({"condition": cond, "labels": labels,
                             "test_accuracy": float(metrics["test"]["accuracy"]),
                             "epochs": epochs_for(args, labels),
                             "best_epoch": best_epoch(out, cond, labels),
                             "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
    print("\nTarget task: test accuracy (10 classes, chance 0.100; "
          f"{args.test:,} test images, {args.val:,} validation images, 1 repeat)\n")
    print(table(rows, args.labels, args.conditions))
    for r in rows[:len(pretrained)]:
        print(f"\n{r['condition']}: {r['test_accuracy']:.3f} test accuracy on the pretraining "
              f"task (20 classes, {args.pretrain_samples:,} images), {r['seconds']:.0f} s")
    total = time.perf_counter() - started_at
    print(f"\ncommand: {command}\ntotal: {total:.0f} s; load average at the end: "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "rows": rows, "seconds": total,
                       "load_start": load_start, "load_end": os.getloadavg()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m trainer.datacheck --config FILE [--set ...] [--out DIR]`: look before paying for a GPU.

For each split it prints the sample count, shape, dtype and value range, the label distribution
(warning on heavy imbalance), NaN and Inf counts, and how many samples appear in two splits (by a
hash of their bytes). Where samples carry groups, it counts the groups found in two splits; and
for validation and test it gives the fraction of samples with a near-copy in the training split
(`data.neardup` fingerprints), the leak a random split of video frames makes. It writes a PNG
grid of a few samples per class and times the training pipeline; the last line is
`input pipeline: <N> samples/s steady (...); start-up <S> s`: a warm pass, then a timed one, and
the first pass's extra time (tracing, reader threads, the first window) apart. One streaming pass per split, so it works on data sets larger
than memory (fingerprints take 512 bytes per sample).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import tempfile
import time
from typing import Optional

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.config import Config
from trainer.data import groups, neardup
from trainer.data.groups import overstated

FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The YAML config whose data to look at; without it, the "
                        "embedded demo.")
flags.DEFINE_string("out", None, "Where the sample grid goes (default: "
                    "<output.dir>/<name>-datacheck).", flag_values=FLAGS)
flags.DEFINE_float("near", neardup.THRESHOLD, "Fingerprint distance under which an evaluation "
                   "sample counts as a near-copy of a training sample (0: same picture, about "
                   "1.4: unrelated).", lower_bound=0.0, flag_values=FLAGS)


IMBALANCE = 5.0  # largest class this many times the smallest: warn
PER_CLASS = 4
LEAK_QUERIES = 2000  # evaluation samples searched for near-copies (a seeded subset beyond this)


def _scan(split, class_names: Optional[list[str]], block: int) -> dict:
    """One pass: value range, NaN/Inf, per-sample hashes and the first samples of each class."""
    low, high, nan, inf = np.inf, -np.inf, 0, 0
    hashes: set[bytes] = set()
    prints: list[np.ndarray] = []
    examples: dict = {}
    at = 0
    for x, _raw in split.view.iter_chunks(block):
        x = np.asarray(x)
        labels = split.y[at:at + len(x)]
        at += len(x)
        if x.dtype.kind == "f":
            nan += int(np.isnan(x).sum())
            inf += int(np.isinf(x).sum())
            finite = x[np.isfinite(x)]
        else:
            finite = x
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        hashes.update(hashlib.blake2b(row.tobytes(), digest_size=12).digest()
                      for row in x.reshape(len(x), -1))
        prints.append(neardup.fingerprints(x))
        for img, label in zip(x, labels):
            key = int(label) if class_names else 0
            if len(examples.setdefault(key, [])) < (PER_CLASS if class_names else 4 * PER_CLASS):
                examples[key].append(img)
    return {"low": low, "high": high, "nan": nan, "inf": inf, "hashes": hashes,
            "prints": np.concatenate(prints), "examples": examples}


def _group_lines(splits, task: str) -> list[str]:
    """Groups per split and groups found in two splits (nothing when a split has no groups)."""
    per_split, in_two = groups.counts({k: p.view.groups for k, p in splits.present.items()})
    if not in_two:
        return []
    lines = ["groups: " + ", ".join(f"{k} {n}" for k, n in per_split.items())]
    for pair, n in in_two.items():
        a, b = pair.split("/")
        lines.append(f"groups in both {a} and {b}: {n}" +
                     (f"  warning: {overstated(task)} on new groups (data.split_by: "
                      "group)" if n else ""))
    return lines


def _leak_lines(splits, scans: dict, threshold: float, seed: int, task: str) -> list[str]:
    """For val and test: the fraction of samples with a near-copy in the training split, what
    chance gives, and a warning when it is more than chance (`neardup.leak_estimate`)."""
    lines = []
    train_view = splits.train.view
    for key in (k for k in ("val", "test") if k in scans):
        view = splits.present[key].view
        # rows of another file are no neighbours of training rows
        rows = view.rows + (0 if view.source is train_view.source else 1 << 40)
        queries = scans[key]["prints"]
        if len(queries) > LEAK_QUERIES:
            pick = np.sort(np.random.default_rng(seed).choice(len(queries), LEAK_QUERIES,
                                                              replace=False))
            queries, rows = queries[pick], rows[pick]
        leak = neardup.leak_estimate(queries, rows, scans["train"]["prints"], train_view.rows,
                                     threshold)
        lines.append(_leak_line(key, leak, len(queries), threshold))
        if leak.leaks:
            why = (f"{leak.neighbours:.0%} of {key} has a near-copy among its neighbours in the "
                   f"training data (frames or records of one sequence on both sides)"
                   if leak.neighbours > neardup.LEAK_EXCESS else
                   f"{leak.observed:.0%} of {key} has a near-copy in train, "
                   f"{leak.expected:.0%} by chance")
            lines.append(f"  warning: {why}; {overstated(task, key)} on new data (split "
                         "whole videos or sessions: data.split_by: group)")
    return lines


def _leak_line(key: str, leak: neardup.Leak, n: int, threshold: float) -> str:
    """One line per evaluation split: a split within chance reads as clean (however alike its
    samples are, which can make chance high); one beyond it gives both rates, and a warning
    line follows it."""
    near = round(leak.observed * n)
    median = float(np.median(leak.distances)) if n else float("nan")
    what = f"{near} of {n} samples have a training sample nearer than {threshold:g}"
    if not leak.leaks:
        chance = (f"; {leak.expected:.0%} would by chance, this split's samples being as alike "
                  "as they are" if leak.expected > leak.observed else "")
        return (f"near-duplicate leakage, {key}: none beyond chance ({what}{chance}; median "
                f"distance {median:.3f})")
    return (f"near-duplicate leakage, {key}: {what} ({leak.observed:.0%}), {leak.expected:.0%} "
            f"expected by chance (median distance {median:.3f})")


def _grid(examples: dict, class_names: Optional[list[str]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = sorted(examples)
    cols = max(len(v) for v in examples.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.6 * len(rows)), squeeze=False)
    for r, key in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(examples[key]):
                img = examples[key][c].astype(np.float64)
                lo, hi = img.min(), img.max()
                img = (img - lo) / (hi - lo) if hi > lo else img * 0
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img[..., :3], cmap="gray")
        if class_names:
            axes[r][0].set_title(class_names[key], fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def check(config: Config, out: Optional[str], near: float = neardup.THRESHOLD) -> list[str]:
    """The report's lines, in order; the last one gives the training pipeline's throughput.

    `near` is the fingerprint distance under which a sample counts as a near-copy.
    """
    from trainer.data import load_splits

    splits = load_splits(config)  # before TensorFlow is imported: a data error ends at once
    from trainer.data.dataset import resize_lines
    from trainer.data.pipeline import pipeline_options
    from trainer.data.windows import window_rows

    # One replica's batch: the pipeline as a run on one device reads it.
    opts = pipeline_options(config.data, config.train.seed, config.train.batch_size, shuffle=True)
    block = window_rows(splits.train.view, opts)
    lines = [f"layout: {splits.layout}", *_backbone_lines(config, splits),
             *splits.absent_lines(config.train.monitor)]
    scans = {}
    for key, part in splits.present.items():
        scans[key] = _scan(part, splits.class_names, block)
        lines += _split_lines(key, part, splits, scans[key])
    lines += resize_lines(splits)
    lines += _shared_lines(scans, config.task)
    lines += _group_lines(splits, config.task)
    lines += _leak_lines(splits, scans, near, config.train.seed, config.task)
    dest = out or storage.join(config.output.dir, f"{config.name}-datacheck")
    lines.append(_write_grid(scans["train"]["examples"], splits.class_names, dest))
    lines.append(_pipeline_line(splits, opts))
    return lines


def _backbone_lines(config: Config, splits) -> list[str]:
    """A backbone's input: the size it will see, and how the images get there."""
    from trainer import backbones  # TensorFlow: after the data has loaded

    if not backbones.is_backbone(config.model.name):
        return []
    return [backbones.seen_line(splits.input_shape, config.model.params, config.model.name)]


def _split_lines(key: str, part, splits, scan: dict) -> list[str]:
    """One split's size, shape, dtype and value range; its labels (warning on heavy imbalance)
    or target ranges; its NaN and Inf counts (warning when there are any)."""
    names = splits.class_names
    lines = [f"{key}: {len(part)} samples, shape {splits.input_shape}, dtype "
             f"{part.view.source.dtype}, values {scan['low']:.4g}..{scan['high']:.4g} "
             f"({part.source})"]
    if names:
        counts = np.bincount(part.y, minlength=len(names))
        lines.append("  labels: " + ", ".join(f"{n} {c} ({c / len(part):.0%})"
                                              for n, c in zip(names, counts)))
        present = counts[counts > 0]
        if len(present) < len(names) or present.max() >= IMBALANCE * present.min():
            lines.append(f"  warning: heavy class imbalance in {key} (largest {counts.max()}, "
                         f"smallest {counts.min()}); consider train.class_weight: balanced")
    else:
        lines.append("  targets: " + ", ".join(
            f"{n} {lo:.4g}..{hi:.4g}" for n, lo, hi in
            zip(splits.target_names, part.y.min(axis=0), part.y.max(axis=0))))
    lines.append(f"  NaN: {scan['nan']}, Inf: {scan['inf']}")
    if scan["nan"] or scan["inf"]:
        lines.append(f"  warning: {key} has non-finite values; training stops unless "
                     "data.nonfinite: zero")
    return lines


def _shared_lines(scans: dict, task: str) -> list[str]:
    """Exact copies (by a hash of the bytes) found in two splits, per pair of splits."""
    lines = []
    for a, b in itertools.combinations(scans, 2):
        shared = len(scans[a]["hashes"] & scans[b]["hashes"])
        lines.append(f"samples in both {a} and {b}: {shared}" +
                     (f"  warning: {overstated(task)}" if shared else ""))
    return lines


def _write_grid(examples: dict, class_names: Optional[list[str]], dest: str) -> str:
    """`samples.png` in `dest` (a folder or bucket URL); the line that says where."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "samples.png")
        _grid(examples, class_names, local)
        storage.put_file(local, storage.join(dest, "samples.png"))
    return f"sample grid: {storage.join(dest, 'samples.png')}"


def _pipeline_line(splits, opts) -> str:
    """The training pipeline's throughput: a warm pass first (tracing, the reader threads, the
    first window), then the timed one. The steady rate is what training sees epoch after
    epoch; the start-up is paid once a run."""
    from trainer.data.pipeline import count_samples, data_errors, make_dataset

    # A throughput probe, not a check: NaN and Inf are reported above, not refused here.
    ds = make_dataset(splits.train.view, splits.train.y, dataclasses.replace(opts, nonfinite="zero"))
    with data_errors():
        started = time.perf_counter()
        count_samples(ds)
        first = time.perf_counter() - started
        started = time.perf_counter()
        count = count_samples(ds)
        steady = time.perf_counter() - started
    return (f"input pipeline: {count / steady:.0f} samples/s steady (a warm pass, then a "
            f"timed one); start-up {max(0.0, first - steady):.2f} s")


def _check_from_flags(args: list[str]) -> int:
    from trainer import config as config_mod

    if FLAGS.out:
        storage.check_writable(FLAGS.out)  # before the data is read
    for line in check(config_mod.load(FLAGS.config, FLAGS.set), FLAGS.out, FLAGS.near):
        print(line, flush=True)
    return 0


main = cli.Command(_check_from_flags, FLAGS)

if __name__ == "__main__":
    main.run()

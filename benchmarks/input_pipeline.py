"""Input-pipeline throughput against the raw read limit (figures, not tests).

    python benchmarks/input_pipeline.py [--dir /tmp/trainer-bench] [--samples 200000] [--shards 16]
                                        [--augment '[flip_left_right, rotate, mixup]']

Writes 32x32x1 float32 samples with labels in 16 shards as npz, paired npy and TFRecord (raw and
GZIP) on local disk, warms the page cache, then prints in one run:
- the raw read limit: `np.load` of the same npz (and npy) shards;
- each format's pipeline (trainer.data.pipeline, shuffling on) in samples/s, alone (training
  standardises in the model's first layer, on the accelerator) and with that layer applied to
  every batch on this CPU, and its ratio to the limit (the best of 3 epochs, as the limit is the
  best of 3 reads);
- hexagonal_cnn training from the npz shards as a ratio to training on in-memory batches (the
  median of 4 alternating rounds);
- peak resident memory of one epoch over this data set and one 4 times larger.
With `--augment` (a `data.augment` list), the pipelines and the training from shards augment
every batch as training does (the in-memory batches are not augmented).
Compare with ../shared/NOTES.md (the seeds' own ways: 16,000 to 260,000 samples/s here).
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import config  # noqa: E402
from trainer.data import augment_spec, tfrecords  # noqa: E402
from trainer.data.dataset import load_splits  # noqa: E402
from trainer.data.pipeline import PipelineOptions, make_dataset, steps  # noqa: E402
from trainer.kerasflavor import keras, tf  # noqa: E402

BATCH = 200
NOTES = {"one .npy file per sample": 16_000, "tf.data per-element shuffle + batch": 19_000,
         "tf.data interleave, batching inside each shard": 260_000}


def write_data(folder: str, samples: int, shards: int, tfrecord: bool = True) -> None:
    if os.path.exists(os.path.join(folder, "done")):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    per = samples // shards
    for s in range(shards):
        x = rng.normal(0.5, 0.2, size=(per, 32, 32, 1)).astype(np.float32)
        y = rng.integers(0, 2, per).astype(np.int64)
        np.savez(os.path.join(folder, f"shard-{s:03d}.npz"), x=x, y=y)
        np.save(os.path.join(folder, f"x{s:03d}.npy"), x)
        np.save(os.path.join(folder, f"y{s:03d}.npy"), y)
        if tfrecord:
            for gz in (False, True):
                w = tfrecords.Writer(os.path.join(folder, f"shard-{s:03d}.tfrecord" + (".gz" if gz else "")), gz)
                for img, lab in zip(x, y):
                    w.write(tfrecords.example(img, lab))
                w.close()
    open(os.path.join(folder, "done"), "w").close()


def raw_limit(folder: str, kind: str) -> float:
    files = sorted(glob.glob(os.path.join(folder, "shard-*.npz" if kind == "npz" else "x*.npy")))
    best = 0.0
    for _ in range(3):
        gc.collect()
        n, t = 0, time.perf_counter()
        for f in files:
            if kind == "npz":
                with np.load(f) as a:
                    x, _ = a["x"], a["y"]
            else:
                x = np.load(f)
                np.load(f.replace("/x", "/y"))
            n += len(x)
        best = max(best, n / (time.perf_counter() - t))
    return best


def splits_for(folder: str, fmt: str):
    pattern = {"npz": "shard-*.npz", "npy": "x*.npy", "tfrecord": "shard-*.tfrecord",
               "tfrecord-gzip": "shard-*.tfrecord.gz"}[fmt]
    cfg = config.from_dict({"data": {"format": fmt.split("-")[0], "train": os.path.join(folder, pattern),
                                     "val": os.path.join(folder, pattern), "test": os.path.join(folder, pattern)}})
    return load_splits(cfg)


def pipeline_rate(folder: str, fmt: str, standardise: bool, epochs: int = 3,
                  augment: tuple = ()) -> float:
    """Samples/s of a shuffled epoch, optionally standardised: the best of `epochs` epochs after
    a first one that warms up, read by one iterator as `fit` reads them (as the raw limit, the
    best of 3)."""
    splits = splits_for(folder, fmt)
    view, y = splits.train.view, splits.train.y
    opts = PipelineOptions(batch_size=BATCH, shuffle=True, seed=0, augment=augment, classes=2)
    ds = make_dataset(view, y, opts, epochs=epochs + 1)
    if standardise:
        layer = keras.layers.Normalization(axis=-1, mean=[0.5], variance=[0.04])
        ds = ds.map(lambda x, y: (layer(x), y))
    per_epoch = steps(view, opts)

    @tf.function
    def consume(iterator, n):
        total = tf.constant(0, tf.int64)
        for _ in tf.range(n):
            total += tf.shape(next(iterator)[1], out_type=tf.int64)[0]
        return total

    iterator = iter(ds)
    consume(iterator, per_epoch)
    best = 0.0
    for _ in range(epochs):
        gc.collect()  # not inside the timing: a full collection costs ~0.3 s with TF loaded
        t = time.perf_counter()
        n = int(consume(iterator, per_epoch))
        best = max(best, n / (time.perf_counter() - t))
    return best


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        gc.collect()
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def training_ratio(folder: str, batches: int = 50, rounds: int = 4,
                   augment: list = ()) -> tuple[float, float, float]:
    """hexagonal_cnn samples/s fed from the npz shards and from one in-memory batch, and their ratio.

    Each `fit` runs a first epoch of `batches` steps (tracing, the pipeline filling) and a timed
    second one, the pipeline running on through both as in a real run. The two ways take turns
    `rounds` times; the ratio is the median of each round's ratio (two runs close in time, so a
    busy moment of this shared machine hits both), the rates are the medians.
    """
    from trainer.models import build_model
    from trainer.training.compiling import compile_model

    cfg = config.from_dict({"task": "classification", "model": {"name": "hexagonal_cnn"},
                            "train": {"batch_size": BATCH}, "data": {"augment": list(augment)}})
    splits = splits_for(folder, "npz")
    model = build_model(cfg, (32, 32, 1), 2, np.array([0.5], np.float32), np.array([0.04], np.float32))
    compile_model(model, cfg.train,
                  mixed_labels=augment_spec.mixes_labels(augment_spec.parse(cfg.data.augment)))
    opts = PipelineOptions(batch_size=BATCH, shuffle=True, seed=0,
                           augment=augment_spec.parse(augment), classes=2)
    x = np.random.default_rng(1).normal(0.5, 0.2, (BATCH, 32, 32, 1)).astype(np.float32)
    memory = tf.data.Dataset.from_tensors((x, splits.train.y[:BATCH])).repeat()
    rates: dict[str, list[float]] = {"memory": [], "shards": []}
    for _ in range(rounds):
        for name, runs in rates.items():
            ds = memory if name == "memory" else make_dataset(splits.train.view, splits.train.y, opts)
            clock = _EpochClock()
            model.fit(ds, epochs=2, steps_per_epoch=batches, verbose=0, callbacks=[clock])
            runs.append(batches * BATCH / clock.seconds[-1])
    ratio = float(np.median(np.array(rates["shards"]) / np.array(rates["memory"])))
    return float(np.median(rates["shards"])), float(np.median(rates["memory"])), ratio


def epoch_peak_rss(folder: str) -> int:
    """Peak RSS (VmHWM, bytes) of a fresh process that runs one shuffled epoch over the npz shards.

    VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child would report this
    (large) parent's peak.
    """
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r});"
            "import benchmarks.input_pipeline as b;"
            f"s = b.splits_for({folder!r}, 'npz');"
            "from trainer.data.pipeline import PipelineOptions, make_dataset;"
            "b.count_samples(make_dataset(s.train.view, s.train.y, PipelineOptions(batch_size=200, shuffle=True)));"
            "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/trainer-bench")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--skip_memory", action="store_true", help="skip the 4x data set")
    parser.add_argument("--augment", default="[]", help="a data.augment list, e.g. "
                        "'[flip_left_right, rotate, mixup]'")
    args = parser.parse_args()
    augment = config.load(None, [f"data.augment={args.augment}"]).data.augment
    small = os.path.join(args.dir, "small")
    write_data(small, args.samples, args.shards)
    print(f"data: {args.samples} samples of 32x32x1 float32 in {args.shards} shards, {small}; "
          f"batch {BATCH}, {os.cpu_count()} cores; augmentation: {augment or 'none'}")
    limits = {"npz": raw_limit(small, "npz"), "npy": raw_limit(small, "npy")}
    print(f"raw read limit, np.load of the npz shards: {limits['npz']:,.0f} samples/s")
    print(f"raw read limit, np.load of the npy shards: {limits['npy']:,.0f} samples/s")
    print(f"{'way':44} {'samples/s':>11} {'/ npz limit':>11} {'/ npy limit':>11}")
    for fmt in ("npz", "npy", "tfrecord", "tfrecord-gzip"):
        for std in (False, True):
            rate = pipeline_rate(small, fmt, std, augment=augment_spec.parse(augment))
            label = f"{fmt} pipeline, shuffled" + (" + standardised on CPU" if std else "")
            print(f"{label:44} {rate:>11,.0f} {rate / limits['npz']:>11.2f} {rate / limits['npy']:>11.2f}")
    for name, rate in NOTES.items():
        print(f"{'NOTES: ' + name:44} {rate:>11,} {'':>11} {rate / 1_560_000:>11.3f}")
    shards, memory, ratio = training_ratio(small, augment=augment)
    print(f"hexagonal_cnn training: {shards:,.0f} samples/s from npz shards, {memory:,.0f} from "
          f"in-memory batches (medians of 4 alternating rounds), ratio {ratio:.2f} (median of the "
          "rounds' ratios)")
    if not args.skip_memory:
        large = os.path.join(args.dir, "large")
        write_data(large, 4 * args.samples, 4 * args.shards, tfrecord=False)
        small_rss, large_rss = epoch_peak_rss(small), epoch_peak_rss(large)
        print(f"peak RSS of one epoch: {small_rss / 2**20:,.0f} MiB for {args.samples} samples, "
              f"{large_rss / 2**20:,.0f} MiB for {4 * args.samples} (ratio {large_rss / small_rss:.2f})")


if __name__ == "__main__":
    main()

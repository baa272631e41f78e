"""What reading channel-first arrays costs the input pipeline (figures, not tests).

    python benchmarks/channel_layout.py [--dir /tmp/trainer-layout] [--samples 50000] [--size 64]
                                        [--channels 1]

Writes the same samples twice as paired `.npy` shards, once (N, H, W, C) and once (N, C, H, W)
as PyTorch keeps them, and prints the training pipeline's samples/s for each (shuffling on, the
best of 3 epochs after a warm-up). Channel-first rows are copied from the file as stored and
turned to (H, W, C) per batch in TensorFlow, so the difference is that one transpose.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import config  # noqa: E402
from trainer.data.dataset import load_splits  # noqa: E402
from trainer.data.pipeline import count_samples, make_dataset, pipeline_options  # noqa: E402

BATCH = 200


def write(folder: str, x: np.ndarray, y: np.ndarray, shards: int) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, (xs, ys) in enumerate(zip(np.array_split(x, shards), np.array_split(y, shards))):
        np.save(os.path.join(folder, f"x{i:02d}.npy"), xs)
        np.save(os.path.join(folder, f"y{i:02d}.npy"), ys)
    return os.path.join(folder, "x*.npy")


def throughput(pattern: str, channels: str) -> float:
    cfg = config.load(None, ["task=regression", "data.format=npy", f"data.train={pattern}",
                             f"data.channels={channels}",
                             "data.validation_split=0", "data.test_split=0",
                             f"train.batch_size={BATCH}"])
    splits = load_splits(cfg)
    ds = make_dataset(splits.train.view, splits.train.y, pipeline_options(cfg.data, cfg.train.seed, BATCH, shuffle=True))
    count_samples(ds)  # warm-up: page cache, tracing
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        n = count_samples(ds)
        best = max(best, n / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/trainer-layout")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.size, args.size, args.channels)).astype(np.float32)
    y = rng.normal(size=args.samples).astype(np.float32)
    last = write(os.path.join(args.dir, "last"), x, y, args.shards)
    first = write(os.path.join(args.dir, "first"), np.ascontiguousarray(np.moveaxis(x, -1, 1)), y,
                  args.shards)
    del x
    shape = f"{args.size}x{args.size}x{args.channels}"
    a, b = throughput(last, "last"), throughput(first, "first")
    print(f"channels last  (N, H, W, C), {shape}: {a:,.0f} samples/s")
    print(f"channels first (N, C, H, W), {shape}: {b:,.0f} samples/s")
    print(f"channel-first / channel-last: {b / a:.2f}")


if __name__ == "__main__":
    main()

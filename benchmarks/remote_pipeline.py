"""The training input pipeline from a bucket at GPU rates, simulated, against local files.

    python benchmarks/remote_pipeline.py [--latency_ms 30] [--mb_per_s 100] [--samples 8000]
        [--big_samples 400] [--shards 4] [--threads 4,16,32] [--blocks 256,1024,4096]

The same npz shards (32x32x1 and 256x256x1 float32 samples) are read by `trainer.data.pipeline`
(`make_dataset`, shuffling on, batch 200, no model) from local disk and from `gs://` on the
storage emulator (tests/gcs_emulator.py) behind a relay that adds a first-byte latency to every
response and caps each connection's bandwidth, as a real bucket answers a job tens of
milliseconds away, and from the emulator directly (`gs:// 0ms`: what a Python server on this
machine delivers at all, the ceiling of any remote figure here). Each row is one setting of `data.read_threads` and `data.shuffle_block` (and
the shard size, from --shards; --blocks are 32x32 rows, and the 256x256 rows read the same bytes
per block): samples/s of a shuffled epoch (the best of 2, after one that
warms up), locally, from the emulator directly and through the relay, and the ratios. Prints `uptime` first: on a shared machine the
figures move with the load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read at gcsfs import

import gcs_emulator  # noqa: E402
from trainer import config  # noqa: E402
from trainer.data.dataset import load_splits  # noqa: E402
from trainer.data.pipeline import PipelineOptions, make_dataset, steps  # noqa: E402
from trainer.kerasflavor import tf  # noqa: E402

BATCH = 200


def write_shards(folder: str, samples: int, size: int, shards: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    per = samples // shards
    for s in range(shards):
        x = rng.normal(0.5, 0.2, size=(per, size, size, 1)).astype(np.float32)
        np.savez(os.path.join(folder, f"shard-{s:03d}.npz"), x=x,
                 y=rng.integers(0, 2, per).astype(np.int64))


def upload(folder: str, emulator, prefix: str) -> None:
    bucket = emulator.client().bucket(emulator.bucket)
    for name in sorted(os.listdir(folder)):
        bucket.blob(f"{prefix}/{name}").upload_from_filename(os.path.join(folder, name))


def rate(pattern: str, block: int, threads: int, env: dict = {}, epochs: int = 2) -> float:
    """Samples/s of a shuffled epoch, the best of `epochs` after one that warms up; `env` points
    gcsfs at a server (a new file system object, not fsspec's cached one)."""
    if env:
        import gcsfs

        os.environ.update(env)
        gcsfs.GCSFileSystem.clear_instance_cache()
    cfg = config.from_dict({"data": {"format": "npz", "train": pattern, "val": pattern,
                                     "test": pattern}})
    train = load_splits(cfg).train
    view, y = train.view, train.y
    opts = PipelineOptions(batch_size=BATCH, shuffle=True, seed=0, block=block, threads=threads)
    per_epoch = steps(view, opts)
    iterator = iter(make_dataset(view, y, opts, epochs=epochs + 1))

    def consume() -> int:
        return sum(int(next(iterator)[1].shape[0]) for _ in range(per_epoch))

    consume()
    best = 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        best = max(best, consume() / (time.perf_counter() - started))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency_ms", type=float, default=30.0)
    parser.add_argument("--mb_per_s", type=float, default=100.0)
    parser.add_argument("--samples", type=int, default=8000, help="32x32 samples")
    parser.add_argument("--big_samples", type=int, default=400, help="256x256 samples")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--threads", default="4,16,32")
    parser.add_argument("--blocks", default="256,1024,4096")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    blocks = [int(b) for b in args.blocks.split(",")]
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    tf.get_logger().setLevel("ERROR")
    emulator = gcs_emulator.start()
    relay = gcs_emulator.SlowRelay(emulator, args.latency_ms / 1000, args.mb_per_s * 1e6)
    direct = emulator.url  # the emulator itself: what it serves on this machine, no distance
    print(f"bucket: {args.latency_ms:g} ms to first byte, {args.mb_per_s:g} MB/s per connection; "
          f"{args.shards} shards per data set; batch {BATCH}")
    print(f"{'samples':>9} {'shard MB':>8} {'threads':>7} {'block':>6} {'local/s':>9} "
          f"{'gs:// 0ms':>9} {'gs:// far':>9} {'far/local':>9} {'far/0ms':>7}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size, samples in ((32, args.samples), (256, args.big_samples)):
                folder = os.path.join(tmp, f"{size}")
                write_shards(folder, samples, size, args.shards)
                upload(folder, emulator, f"bench/{size}")
                shard_mb = os.path.getsize(os.path.join(folder, "shard-000.npz")) / 1e6
                for t in threads:
                    for b in blocks:
                        b = max(1, b * 32 * 32 // (size * size))  # the same bytes per read
                        if b > samples // args.shards:
                            continue
                        local = rate(os.path.join(folder, "*.npz"), b, t)
                        near = rate(direct(f"bench/{size}/*.npz"), b, t, emulator.env())
                        far = rate(direct(f"bench/{size}/*.npz"), b, t, relay.env())
                        print(f"{size}x{size:<5} {shard_mb:8.1f} {t:7d} {b:6d} {local:9,.0f} "
                              f"{near:9,.0f} {far:9,.0f} {far / local:9.2f} {far / near:7.2f}",
                              flush=True)
    finally:
        relay.close()
        emulator.stop()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

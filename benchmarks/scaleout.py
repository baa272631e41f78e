"""Scale-out input: N real worker processes on loopback read the same local shards (figures,
not tests).

    python benchmarks/scaleout.py [--workers 1 2 4] [--samples 16000] [--epochs 3]
                                  [--dir /tmp/trainer-scaleout]

Writes `--samples` rows of 32x32x1 float32 as paired `.npy` shards once, then for each N starts
N processes, each a worker of one MultiWorkerMirroredStrategy cluster on 127.0.0.1 (its own
TF_CONFIG, as on Vertex AI), and each iterates the training input for `--epochs` epochs
through the strategy, the way `fit` does, in two ways:
- `share`: the job's way, one pipeline per worker from `distribute_datasets_from_function`,
  each reading its own part of every epoch;
- `whole`: one pipeline that the strategy distributes (auto-shard DATA), which every worker reads
  whole and of which it keeps its own batches (the job's way before per-worker input).
It prints, per N and way, the bytes the workers read together per epoch divided by the data
set's size (from the reader's row count per epoch; as a check, /proc/self/io `rchar`, every
byte the processes read while iterating, over the epochs), and each worker's steady samples/s
(the samples it trains on, in the epochs after the first). From the measured read factor it
then projects the bucket throughput that 8 GPU workers need for the seeds' image sizes, at the
per-GPU training rates in `SEEDS` (assumptions until benchmarks/gpu_throughput.py has measured
them on a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (32, 32, 1)
PER_REPLICA_BATCH = 64
# The seeds' images as stored (bytes a sample) and an assumed training rate per GPU (samples/s).
# What one reader thread moves from a bucket 30 ms away in 4 MB blocks, measured through
# tests/gcs_emulator.py's SlowRelay (docs/performance.md); the last column is the
# data.read_threads a worker needs for its share at 0.8 of that.
THREAD_MB_S = 55
SEEDS = [("000 hexagonal, 32x32x1 float32", 32 * 32 * 4, 100_000),
         ("001 contact frames, 64x64x1 uint8", 64 * 64, 50_000),
         ("003 digits, 28x28x1 uint8", 28 * 28, 200_000),
         ("004 shapes, 128x128x3 uint8", 128 * 128 * 3, 20_000),
         ("002 raccoon/penguin, 256x256x1 float32", 256 * 256 * 4, 2_000)]


def write_data(folder: str, samples: int, shards: int = 8) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"x{s:03d}.npy") for s in range(shards)]
    if not os.path.exists(os.path.join(folder, f"done-{samples}")):
        rng = np.random.default_rng(0)
        for s, path in enumerate(paths):
            n = samples // shards + (s < samples % shards)
            np.save(path, rng.normal(0.5, 0.2, (n, *SHAPE)).astype(np.float32))
            np.save(path.replace("/x", "/y"), rng.integers(0, 2, n).astype(np.int64))
        open(os.path.join(folder, f"done-{samples}"), "w").close()
    return paths


def rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def worker(folder: str, way: str, epochs: int) -> None:
    """One worker of the cluster in TF_CONFIG: iterate the training input, print one JSON line."""
    sys.path.insert(0, ROOT)
    from trainer.kerasflavor import tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow work
    from trainer.config import DataConfig
    from trainer.data.images import ImageSpec
    from trainer.data.pipeline import make_dataset, steps
    from trainer.data.shares import WHOLE, share_of
    from trainer.data.windows import PipelineOptions, RowsRead
    from trainer.data.readers import read_npy
    from trainer.data.source import Source, View

    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("x"))
    view = View(Source(read_npy(paths, DataConfig(), ImageSpec(SHAPE[:2], SHAPE[2]))))
    y = view.labels.astype(np.int32)
    replicas = strategy.num_replicas_in_sync
    opts = PipelineOptions(batch_size=PER_REPLICA_BATCH * replicas, shuffle=True, seed=1,
                           window=4096, block=256)
    rows_read = RowsRead()
    if way == "share":
        ds = strategy.distribute_datasets_from_function(
            lambda context: make_dataset(view, y, opts, epochs=epochs, share=share_of(context),
                                         rows_read=rows_read))
        per_epoch = steps(view, opts, replicas)
    else:
        ds = strategy.experimental_distribute_dataset(
            make_dataset(view, y, opts, epochs=epochs, share=WHOLE, rows_read=rows_read))
        per_epoch = steps(view, opts)
    chars = rchar()  # the pipeline reads ahead across epochs: rchar counts all of them
    it = iter(ds)
    times, samples = [], []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for _ in range(per_epoch):
            _, labels = next(it)
            n += sum(int(t.shape[0]) for t in strategy.experimental_local_results(labels))
        times.append(time.perf_counter() - start)
        samples.append(n)
    print("RESULT " + json.dumps({
        "rows_read": [rows_read[e] for e in range(epochs)], "rchar": rchar() - chars,
        "samples": samples, "seconds": times, "rows": len(view),
        "row_bytes": int(np.prod(SHAPE)) * 4}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(folder: str, way: str, workers: int, epochs: int) -> list[dict]:
    """Start `workers` processes as one cluster on loopback; their results."""
    ports = [free_port() for _ in range(workers)]
    procs = []
    for index in range(workers):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="3",
                   CUDA_VISIBLE_DEVICES="-1")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", way, "--dir", folder,
             "--epochs", str(epochs)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    try:
        outs = [p.communicate(timeout=1200) for p in procs]
    finally:
        for p in procs:
            p.kill()
    results = []
    for p, (out, err) in zip(procs, outs):
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            sys.exit(f"error: a worker failed (exit {p.returncode}): {err[-2000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results


def summary(results: list[dict]) -> dict:
    """Read factor per epoch (all workers' bytes / the data set's) and steady samples/s."""
    size = results[0]["rows"] * results[0]["row_bytes"]
    epochs = len(results[0]["rows_read"])
    factor = [sum(r["rows_read"][e] for r in results) * results[0]["row_bytes"] / size
              for e in range(epochs)]
    rchar = sum(r["rchar"] for r in results) / size / epochs
    steady = [sum(r["samples"][1:]) / sum(r["seconds"][1:]) for r in results]
    return {"read_factor": factor[-1], "rchar_factor": rchar, "worker_samples_per_s": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ways", nargs="+", default=["share", "whole"], choices=["share", "whole"])
    parser.add_argument("--dir", default="/tmp/trainer-scaleout")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", choices=["share", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.dir, args.worker, args.epochs)
    write_data(args.dir, args.samples)
    print(f"data: {args.samples} samples of 32x32x1 float32 in 8 .npy shards, {args.dir}; "
          f"{PER_REPLICA_BATCH} a replica, {args.epochs} epochs, {os.cpu_count()} cores shared "
          "by all workers")
    print(f"{'way':<6} {'workers':>7} {'bytes read / data set':>22} {'(rchar)':>8}   "
          "steady samples/s of each worker")
    figures = []
    for way in args.ways:
        for n in args.workers:
            s = summary(cluster(args.dir, way, n, args.epochs))
            figures.append({"way": way, "workers": n, **s})
            rates = ", ".join(f"{r:,.0f}" for r in s["worker_samples_per_s"])
            print(f"{way:<6} {n:>7} {s['read_factor']:>22.2f} {s['rchar_factor']:>8.2f}   {rates}",
                  flush=True)
    share = max((f for f in figures if f["way"] == "share"), key=lambda f: f["workers"])
    print(f"\nprojection for 8 GPU workers, read factor {share['read_factor']:.2f} (measured at "
          f"{share['workers']} workers; 8.00 with every worker reading everything):")
    print(f"{'seed images':<40} {'bytes':>8} {'GPU samples/s':>14} {'bucket MB/s':>12} "
          f"{'(all read all)':>15} {'read threads':>12}")
    for name, nbytes, rate in SEEDS:
        need = 8 * rate * nbytes * share["read_factor"] / 1e6
        before = need * 8 / share["read_factor"]  # every worker reading everything
        threads = math.ceil(need / 8 / (0.8 * THREAD_MB_S))
        print(f"{name:<40} {nbytes:>8,} {rate:>14,} {need:>12,.0f} {before:>15,.0f} "
              f"{threads:>12}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()

"""GPU throughput of the seed networks: precision modes, XLA, and how much the input pipeline costs.

Run on a GPU machine, inside the training image or as a Vertex AI custom job
(docs/performance.md, "GPU benchmark"):

    python benchmarks/gpu_throughput.py [--steps 100] [--gcs gs://BUCKET/bench] [--json out.json]

It reports, for `hexagonal_cnn` at 32x32 and `raccoon` at 256x256:
- training samples/s with precision off, mixed precision, and mixed precision + XLA;
- the input pipeline's own samples/s, from local shards and (with --gcs) from a bucket;
- the fraction of step time spent waiting for input: 1 - t(cached batch) / t(real pipeline).

Without a GPU it refuses to run; `--allow_cpu --tiny` is a smoke run of the same code on small
sizes (mixed precision is bfloat16 there, since float16 is emulated and slow on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import config as config_mod  # noqa: E402
from trainer import models, storage  # noqa: E402
from trainer.training import compiling  # noqa: E402
from trainer.runtime import devices  # noqa: E402
from trainer.data import load_splits  # noqa: E402
from trainer.data.pipeline import PipelineOptions, make_dataset  # noqa: E402
from trainer.kerasflavor import keras, tf  # noqa: E402


@dataclass
class Case:
    model: str
    size: int
    batch: int
    samples: int
    shards: int
    params: dict


FULL = [Case("hexagonal_cnn", 32, 512, 65536, 16, {}),
        Case("raccoon", 256, 64, 4096, 8, {"layer_param": 16})]
TINY = [Case("hexagonal_cnn", 32, 32, 512, 2, {}),
        Case("raccoon", 64, 8, 64, 2, {"layer_param": 4})]


def write_shards(case: Case, folder: str) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    per = case.samples // case.shards
    for i in range(case.shards):
        path = os.path.join(folder, f"{case.model}-{i:03d}.npz")
        np.savez(path, x=rng.normal(size=(per, case.size, case.size, 1)).astype(np.float32),
                 y=rng.normal(size=(per, 1)).astype(np.float32))
        paths.append(path)
    return paths


def pipeline(paths: list[str], batch: int, epochs: int = 1000) -> tf.data.Dataset:
    """The project's own readers and shuffling tf.data pipeline, as a training run uses them."""
    cfg = config_mod.from_dict({"task": "regression", "data": {
        "format": "npz", "train": paths, "val": paths[:1], "test": paths[:1]}})
    splits = load_splits(cfg)
    opts = PipelineOptions(batch_size=batch, shuffle=True, seed=0)
    return make_dataset(splits.train.view, splits.train.y, opts, epochs=epochs)


def input_rate(paths: list[str], batch: int, steps: int) -> float:
    """Samples/s of reading + batching alone, no model."""
    start = time.perf_counter()
    ds = pipeline(paths, batch).repeat()
    seen = 0
    for xb, _ in ds.take(steps):
        seen += int(xb.shape[0])
    return seen / (time.perf_counter() - start)


def train_rate(case: Case, ds: tf.data.Dataset, policy: str, xla: bool, steps: int) -> float:
    """Samples/s of `fit` after one warm-up epoch (tracing and XLA compilation excluded)."""
    cfg = config_mod.from_dict({"task": "regression", "model": {"name": case.model, **case.params}})
    model = models.build_model(cfg, (case.size, case.size, 1), 1, policy=policy)
    compiling.compile_model(model, cfg.train, jit_compile=xla)
    model.fit(ds, steps_per_epoch=max(2, steps // 5), epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * case.batch / (time.perf_counter() - start)


def run_case(case: Case, steps: int, mixed: str, gcs: str | None, workdir: str) -> dict:
    paths = write_shards(case, workdir)
    out: dict = {"model": case.model, "image": f"{case.size}x{case.size}x1", "batch": case.batch}
    out["input_local_samples_per_s"] = input_rate(paths, case.batch, steps)
    if gcs:
        remote = [storage.join(gcs, os.path.basename(p)) for p in paths]
        for src, dest in zip(paths, remote):
            storage.put_file(src, dest)
        out["input_gcs_samples_per_s"] = input_rate(remote, case.batch, steps)
    real = pipeline(paths, case.batch).repeat()
    for label, policy, xla in (("off", "float32", False), ("mixed", mixed, False),
                               ("mixed_xla", mixed, True)):
        out[f"train_{label}_samples_per_s"] = train_rate(case, real, policy, xla, steps)
    cached = real.take(1).cache().repeat()
    fed = out["train_mixed_xla_samples_per_s"]
    ideal = train_rate(case, cached, mixed, True, steps)
    out["input_wait_fraction"] = max(0.0, 1.0 - fed / ideal)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow_cpu", action="store_true", help="smoke-run without a GPU")
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--gcs", default=None, help="gs:// prefix to measure bucket reads")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    acc = devices.accelerators()
    if not acc.gpus and not args.allow_cpu:
        print("error: no GPU found, benchmarks/gpu_throughput.py, expected a machine with an NVIDIA "
              "GPU (use --allow_cpu --tiny for a smoke run)", file=sys.stderr)
        return 2
    mixed = "mixed_float16" if acc.gpus else "mixed_bfloat16"
    print(f"devices: {acc.describe()}; mixed precision policy: {mixed}")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in TINY if args.tiny else FULL:
            row = run_case(case, args.steps, mixed, args.gcs, workdir)
            results.append(row)
            print(json.dumps(row))
    keys = [k for k in results[0] if k.endswith("_per_s") or k == "input_wait_fraction"]
    print()
    print(f"{'figure':32}" + "".join(f"{r['model'] + ' ' + r['image']:>24}" for r in results))
    for key in keys:
        cells = "".join(f"{r.get(key, float('nan')):>24,.3f}" if key == "input_wait_fraction"
                        else f"{r.get(key, float('nan')):>24,.0f}" for r in results)
        print(f"{key:32}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": acc.describe(), "mixed_policy": mixed, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    sys.exit(main())

"""GPU throughput of the seed networks: precision modes, XLA, and how much the input pipeline costs.

Run on a GPU machine, inside the training image or as a Vertex AI custom job
(docs/performance.md, "GPU benchmark"):

    python benchmarks/gpu_throughput.py [--steps 100] [--gcs gs://BUCKET/bench] [--json out.json]
    python benchmarks/gpu_throughput.py --models backbones [--image_size 224] [--batch 64]
                                        [--modes off,mixed,mixed_xla]

It reports, for `hexagonal_cnn` at 32x32 and `raccoon` at 256x256 (or, with `--models`, the
models named, e.g. the `keras.applications` backbones, at `--image_size` x 3 channels):
- training samples/s with precision off, mixed precision, and mixed precision + XLA, and each
  one's model FLOPs utilisation (MFU: the package's FLOP count per training sample times the
  rate, over the device's matmul peak in that precision, `trainer.training.utilisation`);
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

from common import choices  # noqa: E402 - benchmarks/common.py

from trainer import config as config_mod  # noqa: E402
from trainer import backbones, models, storage  # noqa: E402
from trainer.training import compiling  # noqa: E402
from trainer.runtime import devices  # noqa: E402
from trainer.data import load_splits  # noqa: E402
from trainer.data.pipeline import PipelineOptions, make_dataset  # noqa: E402
from trainer.kerasflavor import keras, tf  # noqa: E402
from trainer.training import utilisation  # noqa: E402


@dataclass
class Case:
    model: str
    size: int
    batch: int
    samples: int
    shards: int
    params: dict
    channels: int = 1


FULL = [Case("hexagonal_cnn", 32, 512, 65536, 16, {}),
        Case("raccoon", 256, 64, 4096, 8, {"layer_param": 16})]
TINY = [Case("hexagonal_cnn", 32, 32, 512, 2, {}),
        Case("raccoon", 64, 8, 64, 2, {"layer_param": 4})]
MODES = {"off": False, "mixed": False, "mixed_xla": True}  # label: XLA


def named_cases(names: str, size: int, batch: int) -> list[Case]:
    """`--models`: registered models (`backbones`: every keras.applications backbone) at
    `size` x `size` x 3, a few batches of samples in two shards."""
    chosen = list(backbones.SPECS) if names == "backbones" else [n for n in names.split(",") if n]
    for name in chosen:
        if name not in models.REGISTRY:
            raise ValueError(f"error: unknown model {name!r}, --models, expected 'backbones' or "
                             f"names among {', '.join(sorted(models.REGISTRY))}")
    return [Case(name, size, batch, batch * 8, 2, {}, channels=3) for name in chosen]


def write_shards(case: Case, folder: str) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    per = case.samples // case.shards
    for i in range(case.shards):
        path = os.path.join(folder, f"{case.model}-{i:03d}.npz")
        np.savez(path, x=rng.normal(size=(per, case.size, case.size, case.channels))
                 .astype(np.float32),
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


def train_rate(case: Case, ds: tf.data.Dataset, policy: str, xla: bool,
               steps: int) -> tuple[float, int]:
    """Samples/s of `fit` after one warm-up epoch (tracing and XLA compilation excluded), and
    the model's training FLOPs per sample."""
    keras.backend.clear_session()
    cfg = config_mod.from_dict({"task": "regression", "model": {"name": case.model, **case.params}})
    model = models.build_model(cfg, (case.size, case.size, case.channels), 1, policy=policy)
    compiling.compile_model(model, cfg.train, jit_compile=xla)
    model.fit(ds, steps_per_epoch=max(2, steps // 5), epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * case.batch / (time.perf_counter() - start), \
        utilisation.train_flops_per_sample(model)


def run_case(case: Case, steps: int, mixed: str, gcs: str | None, workdir: str,
             modes: list[str]) -> dict:
    paths = write_shards(case, workdir)
    out: dict = {"model": case.model, "image": f"{case.size}x{case.size}x{case.channels}",
                 "batch": case.batch}
    out["input_local_samples_per_s"] = input_rate(paths, case.batch, steps)
    if gcs:
        remote = [storage.join(gcs, os.path.basename(p)) for p in paths]
        for src, dest in zip(paths, remote):
            storage.put_file(src, dest)
        out["input_gcs_samples_per_s"] = input_rate(remote, case.batch, steps)
    real = pipeline(paths, case.batch).repeat()
    for label in modes:
        policy = "float32" if label == "off" else mixed
        rate, flops = train_rate(case, real, policy, MODES[label], steps)
        # the peak probed again right after the steps: on shared cores it drifts with the load
        peak = utilisation.matmul_peak.__wrapped__(policy)
        out[f"train_{label}_samples_per_s"] = rate
        out[f"train_{label}_peak_gflop_per_s"] = peak / 1e9
        out[f"train_{label}_mfu"] = utilisation.utilisation(flops, rate, peak)
        out["train_gflop_per_sample"] = flops / 1e9
    if "mixed_xla" in modes:  # the input's cost: against the same steps on a cached batch
        cached = real.take(1).cache().repeat()
        fed = out["train_mixed_xla_samples_per_s"]
        ideal, _ = train_rate(case, cached, mixed, True, steps)
        out["input_wait_fraction"] = max(0.0, 1.0 - fed / ideal)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow_cpu", action="store_true", help="smoke-run without a GPU")
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--gcs", default=None, help="gs:// prefix to measure bucket reads")
    parser.add_argument("--models", default=None,
                        help="comma-separated registered models instead of the seed networks, "
                             "or `backbones` for every keras.applications backbone")
    parser.add_argument("--image_size", type=int, default=224, help="with --models: pixels a side")
    parser.add_argument("--batch", type=int, default=64, help="with --models: the batch")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, among {', '.join(MODES)}")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    modes = choices(args.modes, MODES, "--modes", "mode")
    if modes is None:
        return 2
    try:
        cases = named_cases(args.models, args.image_size, args.batch) if args.models else \
            TINY if args.tiny else FULL
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2

    acc = devices.accelerators()
    if not acc.gpus and not args.allow_cpu:
        print("error: no GPU found, benchmarks/gpu_throughput.py, expected a machine with an NVIDIA "
              "GPU (use --allow_cpu --tiny for a smoke run)", file=sys.stderr)
        return 2
    mixed = "mixed_float16" if acc.gpus else "mixed_bfloat16"
    print(f"devices: {acc.describe()}; mixed precision policy: {mixed}; load average "
          + ", ".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            row = run_case(case, args.steps, mixed, args.gcs, workdir, modes)
            results.append(row)
            print(json.dumps(row))
    keys = [k for k in results[0] if k.endswith(("_per_s", "_mfu", "_per_sample"))
            or k == "input_wait_fraction"]
    print()
    print(f"{'figure':32}" + "".join(f"{r['model'] + ' ' + r['image']:>28}" for r in results))
    for key in keys:
        cells = "".join(f"{r.get(key, float('nan')):>28,.0f}" if key.endswith("_per_s")
                        else f"{r.get(key, float('nan')):>28.1%}" if key.endswith("_mfu")
                        else f"{r.get(key, float('nan')):>28,.3f}" for r in results)
        print(f"{key:32}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": acc.describe(), "mixed_policy": mixed, "results": results,
                       "load_average": os.getloadavg()}, f, indent=2)
    return 0


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    sys.exit(main())

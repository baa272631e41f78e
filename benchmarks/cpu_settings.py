"""Threads, oneDNN, steps per call, XLA and op determinism on this CPU: seed 000's network
trained as the package trains it by default, under each setting, each in a fresh process per
round, in alternating rounds, with every round's ratio against the defaults of the same round.

    python benchmarks/cpu_settings.py [--batch 200] [--steps 20] [--rounds 3]
                                      [--settings default,threads_1_1,...] [--json out.json]
    python benchmarks/cpu_settings.py --profile [--batch 200] [--steps 20]

A setting is a process environment (`TF_ENABLE_ONEDNN_OPTS`), TensorFlow's intra-/inter-op
thread pools, or the compile arguments a run's config gives (`train.steps_per_execution`,
`train.jit_compile`, `train.deterministic`, `train.mixed_precision`); everything else is the package's default: the
precision `auto` picks, `steps_per_execution` `auto`, deterministic ops on the CPU. A fresh
process per setting and round, since thread pools and oneDNN are fixed when TensorFlow starts;
on a shared machine the rounds alternate, so that load which hits a round hits every setting
of it, and the ratios are read round by round.

`--profile` runs the whole job with its defaults for two epochs under cProfile, the second
epoch profiled (training steps, validation, the checkpoint and every callback): it prints the
share of that epoch's wall time inside TensorFlow's executor (the C++ calls that run a graph or
an op, where the arithmetic is) and the share in Python, with the Python functions that cost
most. (The file is not named `threading.py`: run from `benchmarks/` it would shadow the
standard library's module.)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import choices, job_data, write_json  # noqa: E402 - benchmarks/common.py

SHAPE = (32, 32, 1)
# name: (environment, (intra, inter) threads or None, compile overrides)
SETTINGS = {
    "default": ({}, None, {}),
    "threads_1_1": ({}, (1, 1), {}),
    "threads_2_1": ({}, (2, 1), {}),
    "threads_2_2": ({}, (2, 2), {}),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None, {}),
    "steps_per_call_4": ({}, None, {"steps_per_execution": 4}),
    "steps_per_call_16": ({}, None, {"steps_per_execution": 16}),
    # XLA with deterministic ops fails at the first step (MaxPoolGrad has no deterministic XLA
    # kernel), so XLA is measured without them
    "xla_not_deterministic": ({}, None, {"jit_compile": True, "deterministic": False}),
    "not_deterministic": ({}, None, {"deterministic": False}),
    "float32": ({}, None, {"mixed_precision": "off"}),
}
# the C++ entry points through which Python hands work to TensorFlow's executor
TF_CALLS = ("TFE_Py_Execute", "TFE_Py_FastPathExecute", "TFE_Py_ExecuteCancelable",
            "TFE_Py_TensorShapeSlice")


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + \
        f" on {os.cpu_count()} cores"


def child(name: str, batch: int, steps: int) -> dict:
    """One setting's training rate, in this (fresh) process."""
    import numpy as np

    from trainer.kerasflavor import keras, tf

    _, threads, overrides = SETTINGS[name]
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    from trainer import config as config_mod, models
    from trainer.runtime import devices
    from trainer.training import compiling, utilisation

    cfg = config_mod.from_dict({"task": "regression", "model": {"name": "hexagonal_cnn"},
                                "train": {"batch_size": batch}})
    acc = devices.accelerators()
    policy = devices.precision_policy(overrides.get("mixed_precision", cfg.train.mixed_precision),
                                      acc)
    devices.seed_everything(0, overrides.get("deterministic", devices.deterministic(
        cfg.train.deterministic, acc)))
    model = models.build_model(cfg, SHAPE, 2, policy=policy)
    flops = utilisation.train_flops_per_sample(model)
    peak = utilisation.matmul_peak(policy)
    spe = utilisation.steps_per_execution(overrides.get("steps_per_execution",
                                                        cfg.train.steps_per_execution),
                                          flops, batch, peak)
    compiling.compile_model(model, cfg.train, steps_per_execution=spe,
                            jit_compile=overrides.get("jit_compile", devices.use_xla(
                                cfg.train.jit_compile, acc)))
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps, *SHAPE), dtype=np.float32)
    y = rng.random((batch * steps, 2), dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
    model.fit(ds, steps_per_epoch=max(spe, 2), epochs=1, verbose=0)  # tracing, compilation
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    rate = steps * batch / (time.perf_counter() - start)
    return {"setting": name, "samples_per_s": rate, "steps_per_execution": spe,
            "mfu": utilisation.utilisation(flops, rate, peak), "policy": policy,
            "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                        tf.config.threading.get_inter_op_parallelism_threads()]}


def run_setting(name: str, batch: int, steps: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **SETTINGS[name][0])
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                           "--batch", str(batch), "--steps", str(steps)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"setting {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_job(batch: int, steps: int, top: int = 12) -> dict:
    """The job with its defaults for two epochs; the second epoch under cProfile."""
    from trainer import config as config_mod, job
    from trainer.kerasflavor import keras
    from trainer.runtime.platform import Platform

    workdir = tempfile.mkdtemp(prefix="cpu_settings_")
    data = job_data(workdir, batch, steps, SHAPE)
    cfg = config_mod.load(os.path.join(ROOT, "local", "configs", "hexagonal.yaml"),
                          [f"data.train={data}/x*.npy", "train.epochs=2",
                           f"train.batch_size={batch}", "output.plots=false",
                           "output.report=false", "output.saved_model=false"],
                          output_dir=os.path.join(workdir, "runs"))
    profiler = cProfile.Profile()
    wall = {}

    class SecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                wall["start"] = time.perf_counter()
                profiler.enable()

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                profiler.disable()
                wall["seconds"] = time.perf_counter() - wall["start"]

    job.run(cfg, Platform(), callbacks=[SecondEpoch()])
    stats = pstats.Stats(profiler)
    in_tf = sum(tottime for (_, _, fn), (_, _, tottime, _, _) in stats.stats.items()
                if any(call in fn for call in TF_CALLS))
    by_package: dict[str, float] = {}
    rows = []
    for (path, line, fn), (_, calls, tottime, _, _) in stats.stats.items():
        if any(call in fn for call in TF_CALLS):
            continue
        by_package[_package(path, fn)] = by_package.get(_package(path, fn), 0.0) + tottime
        where = os.path.relpath(path, ROOT) if path.startswith(ROOT) else os.path.basename(path)
        rows.append((tottime, calls, f"{where}:{line}({fn})"))
    # cumulative time of the epoch's stages: the training calls, validation, the callbacks
    stages = {stage: sum(cum for (path, _, fn), (_, _, _, cum, _) in stats.stats.items()
                         if any(fn == f and path.endswith(p) for p, f in keys))
              for stage, keys in STAGES.items()}
    return {"epoch_seconds": wall["seconds"], "in_tensorflow_seconds": in_tf,
            "profiled_seconds": stats.total_tt, "python_by_package": by_package,
            "stages": stages,
            "top_python": [{"seconds": t, "calls": c, "function": f}
                           for t, c, f in sorted(rows, reverse=True)[:top]]}


# (file ending, function) whose cumulative time is a stage of the epoch
STAGES = {"training calls (train_function)": [("polymorphic_function.py", "__call__")],
          "validation (evaluate)": [("training.py", "evaluate")],
          "callbacks at the epoch's end": [("callbacks.py", "on_epoch_end")]}


def _package(path: str, fn: str) -> str:
    """Where a function's own time goes: TensorFlow's Python, Keras, the package, the rest."""
    for name in ("tensorflow", "tf_keras", "h5py", "numpy"):
        if f"/{name}/" in path:
            return name
    if path.startswith(ROOT):
        return "trainer"
    return "built-ins" if path == "~" else "standard library and others"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated, among {', '.join(SETTINGS)}")
    parser.add_argument("--profile", action="store_true",
                        help="profile one epoch of the job instead (Python vs TensorFlow)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps)))
        return 0
    names = choices(args.settings, SETTINGS, "--settings", "setting")
    if names is None:
        return 2
    if args.profile:
        return print_profile(args)
    if "default" not in names:
        names.insert(0, "default")
    print(f"before: {load()}", flush=True)
    runs = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            runs[name].append(run_setting(name, args.batch, args.steps))
        base = runs["default"][r]["samples_per_s"]
        print(f"round {r + 1}: " + ", ".join(
            f"{n} {runs[n][r]['samples_per_s'] / base:.2f}" for n in names if n != "default")
            + f" (default {base:,.0f} samples/s; {load()})", flush=True)
    after = load()
    import statistics

    first = runs["default"][0]
    print(f"seed 000's network (hexagonal_cnn), {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} -> 2, batch "
          f"{args.batch}, {args.steps} steps x {args.rounds} alternating rounds, a fresh process "
          f"per setting and round; defaults: {first['policy']}, threads (intra, inter) "
          f"{first['threads']} (0: TensorFlow's choice), {first['steps_per_execution']} step(s) "
          "per call, deterministic ops")
    print(f"{'setting':22}{'samples/s':>11}{'MFU':>7}{'vs default':>12}  rounds")
    results = []
    for name in names:
        rates = [x["samples_per_s"] for x in runs[name]]
        ratios = [x["samples_per_s"] / d["samples_per_s"]
                  for x, d in zip(runs[name], runs["default"])]
        mfu = statistics.median(x["mfu"] for x in runs[name])
        results.append({"setting": name, "samples_per_s": statistics.median(rates),
                        "mfu": mfu, "vs_default": statistics.median(ratios),
                        "round_ratios": ratios, "rounds": runs[name]})
        print(f"{name:22}{statistics.median(rates):>11,.0f}{mfu:>7.1%}"
              f"{statistics.median(ratios):>12.2f}  " + ", ".join(f"{r:.2f}" for r in ratios))
    clear = [r["setting"] for r in results
             if r["setting"] != "default" and min(r["round_ratios"]) > 1.05]
    print("faster than the defaults by more than 5% in every round: "
          + (", ".join(clear) if clear else "none"))
    print(f"after: {after}")
    write_json(args.json, {"batch": args.batch, "steps": args.steps, "results": results})
    return 0


def print_profile(args) -> int:
    print(f"before: {load()}", flush=True)
    prof = profile_job(args.batch, args.steps)
    wall, in_tf = prof["epoch_seconds"], prof["in_tensorflow_seconds"]
    print(f"the job's second epoch ({args.steps} training steps of {args.batch}, validation, the "
          f"checkpoint, the callbacks) under cProfile: {wall:.2f} s wall, {in_tf:.2f} s "
          f"({in_tf / wall:.0%}) inside TensorFlow's executor, {wall - in_tf:.2f} s "
          f"({1 - in_tf / wall:.0%}) in Python (the profiler's own cost included)")
    print("Python's own time by where it lies: " + ", ".join(
        f"{k} {v:.2f} s" for k, v in sorted(prof["python_by_package"].items(),
                                          key=lambda kv: -kv[1])))
    print("stages (cumulative): " + ", ".join(f"{k} {v:.2f} s" for k, v in prof["stages"].items()))
    print(f"{'seconds':>8}{'calls':>8}  Python function (own time)")
    for row in prof["top_python"]:
        print(f"{row['seconds']:>8.3f}{row['calls']:>8}  {row['function']}")
    print(f"after: {load()}")
    write_json(args.json, prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training rate of seed 000's network on this machine: the package in float32 and bfloat16, one
step or several per call, the whole job with its defaults (every epoch's time, validation and
checkpoint included), beside a PyTorch peer in each of its ways (float32 or bfloat16 autocast,
NCHW or channels_last, eager or `torch.compile`), in alternating rounds in one run.

    python benchmarks/training_rate.py [--batch 200] [--steps 40] [--rounds 5]
                                       [--torch_python PATH] [--peer_ways all|seeds]
                                       [--json out.json]

Each peer way runs in its own process (`benchmarks/torch_peer.py`) under `--torch_python`, by
default this interpreter; without torch there its rows are left out and said so. The peer's
best way is the one with the highest median; every row's ratio is taken round by round against
that way's figure of the same round (so load that hits a round hits both sides), and the median
of those ratios is printed, with the rounds' ratios of the package's defaults and of the job.
Each row gives the median samples/s over the rounds and the model FLOPs utilisation against the
matmul peak of its precision (probed again each round). Goals: the job end to end at least 3
times the peer's best way, and the package's defaults at 60% of the matmul peak in the
training steps. The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import job_data  # noqa: E402 - benchmarks/common.py
from trainer import config as config_mod, job, models  # noqa: E402
from trainer.kerasflavor import keras, tf  # noqa: E402
from trainer.runtime import devices  # noqa: E402
from trainer.runtime.platform import Platform  # noqa: E402
from trainer.training import compiling, utilisation  # noqa: E402

SHAPE = (32, 32, 1)
# The peer's ways: (dtype, memory layout, mode). The first is how the PyTorch seeds train.
PEER_WAYS = [(d, layout, mode) for mode in ("eager", "compiled") for d in ("float32", "bfloat16")
             for layout in ("nchw", "channels_last")]
JOB = "job, defaults, whole epoch (epoch_samples_per_s)"


class PackageRow:
    """The package's model, compiled as a run compiles it, fed from memory: training steps alone."""

    def __init__(self, policy: str, spe, batch: int, steps: int):
        self.policy = policy
        cfg = config_mod.from_dict({"task": "regression", "model": {"name": "hexagonal_cnn"},
                                    "train": {"batch_size": batch}})
        keras.utils.set_random_seed(0)
        self.model = models.build_model(cfg, SHAPE, 2, policy=policy)
        self.flops = utilisation.train_flops_per_sample(self.model)
        self.peak = utilisation.matmul_peak(policy)
        self.spe = utilisation.steps_per_execution(spe, self.flops, batch, self.peak)
        compiling.compile_model(self.model, cfg.train, steps_per_execution=self.spe)
        rng = np.random.default_rng(0)
        x = rng.random((batch * steps, *SHAPE), dtype=np.float32)
        y = rng.random((batch * steps, 2), dtype=np.float32)
        self.ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
        self.steps, self.batch = steps, batch
        precision = "bfloat16" if "bfloat16" in policy else "float32"
        calls = f"{self.spe} step{'s' if self.spe > 1 else ''} per call"
        self.name = f"package, {precision}, {calls + ' (auto)' if spe == 'auto' else calls}"
        self.round()  # warm-up: tracing

    def round(self) -> float:
        start = time.perf_counter()
        self.model.fit(self.ds, steps_per_epoch=self.steps, epochs=1, verbose=0)
        return self.steps * self.batch / (time.perf_counter() - start)


class JobRow:
    """The whole job with the package's defaults on `.npy` files, as `python -m trainer.task`
    runs it: a round is a fresh run of 3 epochs, and its figure the median of the epochs after
    the first of `epoch_samples_per_s` (every epoch's time: training steps, validation and the
    checkpoint). `train_share` keeps the fraction of the epoch the training steps took."""

    name = JOB
    policy = None  # the defaults' own

    def __init__(self, batch: int, steps: int, workdir: str):
        data = job_data(workdir, batch, steps, SHAPE)  # `steps` training batches an epoch
        self.overrides = [f"data.train={data}/x*.npy", "data.format=npy", "train.epochs=3",
                          f"train.batch_size={batch}", "output.plots=false",
                          "output.report=false", "output.saved_model=false"]
        self.config = os.path.join(ROOT, "local", "configs", "hexagonal.yaml")
        self.workdir, self.rounds, self.train_share = workdir, 0, []
        self.round()  # warm-up: the first run pays one-off costs (imports, the peak probe)

    def round(self) -> float:
        self.rounds += 1
        out = os.path.join(self.workdir, f"runs{self.rounds}")
        cfg = config_mod.load(self.config, self.overrides, output_dir=out)
        keras.backend.clear_session()
        quiet = logging.getLogger("trainer")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the job's own log lines: not in the benchmark's output
        try:
            result = job.run(cfg, Platform())
        finally:
            quiet.setLevel(level)
        with open(os.path.join(result.run_dir, "history.csv")) as f:
            later = list(csv.DictReader(f))[1:]
        self.train_share.append(float(np.median([float(e["epoch_samples_per_s"])
                                                 / float(e["train_samples_per_s"]) for e in later])))
        return float(np.median([float(e["epoch_samples_per_s"]) for e in later]))


class PeerRow:
    """The PyTorch peer in one of its ways, in its own process, one round per request."""

    def __init__(self, python: str, batch: int, steps: int, way: tuple[str, str, str]):
        dtype, layout, mode = way
        self.policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
        self.name = f"PyTorch, {dtype}, {layout}, {mode}"
        self.proc = subprocess.Popen(
            [python, os.path.join(ROOT, "benchmarks", "torch_peer.py"), str(batch), str(steps),
             "--dtype", dtype, "--layout", layout, "--mode", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            raise RuntimeError(f"the PyTorch peer ({self.name}) did not start")
        self.version = ready.split()[2]

    def round(self) -> float:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + \
        f" on {os.cpu_count()} cores"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch_python", default=sys.executable,
                        help="a Python interpreter with torch, for the peer")
    parser.add_argument("--peer_ways", choices=("all", "seeds"), default="all",
                        help="every way of the peer, or only the seeds' (float32, NCHW, eager)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    print(f"before: {load()}", flush=True)
    acc = devices.accelerators()
    default_policy = devices.precision_policy("auto", acc)
    workdir = tempfile.mkdtemp(prefix="training_rate_")
    rows = [PackageRow(p, spe, args.batch, args.steps)
            for p in ("float32", "mixed_bfloat16") for spe in (1, "auto")]
    flops = rows[0].flops
    rows.append(JobRow(args.batch, args.steps, workdir))
    peers = []
    if has_torch(args.torch_python):
        ways = PEER_WAYS if args.peer_ways == "all" else PEER_WAYS[:1]
        peers = [PeerRow(args.torch_python, args.batch, args.steps, way) for way in ways]
    rows += peers
    rates = {row.name: [] for row in rows}
    # The peaks are probed again every round, so that each round's utilisation is against the
    # machine as it was then (on shared cores it drifts).
    peaks = {p: [] for p in ("float32", "mixed_bfloat16")}
    for _ in range(args.rounds):
        for policy in peaks:
            peaks[policy].append(utilisation.matmul_peak.__wrapped__(policy))
        for row in rows:
            rates[row.name].append(row.round())
    for peer in peers:
        peer.close()
    after = load()

    best = max(peers, key=lambda p: np.median(rates[p.name])) if peers else None
    print(f"seed 000's network (hexagonal_cnn), {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} -> 2, batch "
          f"{args.batch}, {args.steps} steps x {args.rounds} alternating rounds; {acc.describe()}"
          + (f"; PyTorch {peers[0].version}" if peers else ""))
    print(f"model: {flops / 1e6:.1f} MFLOP per training sample; matmul peak (median of the "
          f"rounds): float32 {np.median(peaks['float32']) / 1e9:,.0f} GFLOP/s, bfloat16 "
          f"{np.median(peaks['mixed_bfloat16']) / 1e9:,.0f} GFLOP/s")
    vs = f"vs {best.name.split(', ', 1)[1]}" if best else "vs peer"
    print(f"{'way':52}{'samples/s':>11}{'vs best peer':>14}{'MFU':>7}")
    results = []
    default_policy_row = next(r for r in rows[:4] if r.name.endswith("(auto)") and (
        "bfloat16" in r.name) == (default_policy == "mixed_bfloat16"))
    for row in rows:
        median = float(np.median(rates[row.name]))
        ratios = (np.array(rates[row.name]) / np.array(rates[best.name])) if best else None
        policy = row.policy or default_policy
        # The job's epochs include validation: its MFU is the whole epoch's, not the steps'.
        mfu = float(np.median([utilisation.utilisation(flops, rate, peak) for rate, peak
                               in zip(rates[row.name], peaks[policy])]))
        results.append({"way": row.name, "samples_per_s": median,
                        "vs_best_peer": float(np.median(ratios)) if best else None,
                        "rounds": rates[row.name],
                        "round_ratios": ratios.tolist() if best else None, "mfu": mfu})
        print(f"{row.name:52}{median:>11,.0f}"
              f"{float(np.median(ratios)) if best else float('nan'):>14.2f}{mfu:>7.1%}")
    if not peers:
        print(f"PyTorch peer: left out, no torch under {args.torch_python} (use --torch_python)")
    job_row = rows[4]
    by_name = {r["way"]: r for r in results}
    print(f"the job spends {np.median(job_row.train_share):.0%} of each epoch in its training "
          "steps (median of the rounds); the rest is validation, the checkpoint and the callbacks")
    if best:
        for name in (default_policy_row.name, JOB):
            print(f"{name}, round by round {vs}: "
                  + ", ".join(f"{r:.2f}" for r in by_name[name]["round_ratios"]))
        job_ratio = by_name[JOB]["vs_best_peer"]
        print(f"goal: the job end to end at 3x the peer's best way ({best.name}): {job_ratio:.2f}x, "
              f"{'met' if job_ratio >= 3 else 'not met'}")
    mfu = by_name[default_policy_row.name]["mfu"]
    print(f"goal: the defaults' training steps ({default_policy_row.name}) at 60% of the matmul "
          f"peak: {mfu:.1%}, {'met' if mfu >= 0.6 else 'not met'}")
    print(f"after: {after}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": acc.describe(), "batch": args.batch, "flops": flops, "peaks": peaks,
                       "torch": peers[0].version if peers else None, "results": results,
                       "job_train_share": job_row.train_share}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training rate of seed 000's network on this machine: the package in float32 and bfloat16, one
step or several per call, beside a PyTorch peer (the same network, the same batch, an in-memory
tensor loop, float32, as the PyTorch seeds train), in alternating rounds in one run.

    python benchmarks/training_rate.py [--batch 200] [--steps 40] [--rounds 5]
                                       [--torch_python PATH] [--json out.json]

The peer runs in its own process (`benchmarks/torch_peer.py`) under `--torch_python`, by default
this interpreter; without torch there its row is left out and said so. Each row gives the
median samples/s over the rounds, the ratio to the peer (median of the rounds' ratios), the
model FLOPs utilisation against the matmul peak of the row's precision (probed again each round,
median of the rounds), and the goals: the
package's defaults at least 3 times the peer, and at least half the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trainer import config as config_mod, models  # noqa: E402
from trainer.kerasflavor import keras, tf  # noqa: E402
from trainer.runtime import devices  # noqa: E402
from trainer.training import utilisation  # noqa: E402

PEER = "PyTorch peer, float32"
SHAPE = (32, 32, 1)


class PackageRow:
    """The package's model, compiled as a run compiles it, fed from memory."""

    def __init__(self, policy: str, spe, batch: int, steps: int):
        self.policy = policy
        cfg = config_mod.from_dict({"task": "regression", "model": {"name": "hexagonal_cnn"},
                                    "train": {"batch_size": batch}})
        keras.utils.set_random_seed(0)
        self.model = models.build_model(cfg, SHAPE, 2, policy=policy)
        self.flops = utilisation.train_flops_per_sample(self.model)
        self.peak = utilisation.matmul_peak(policy)
        self.spe = utilisation.steps_per_execution(spe, self.flops, batch, self.peak)
        models.compile_model(self.model, cfg, steps_per_execution=self.spe)
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


class PeerRow:
    """The PyTorch peer in its own process, one round per request."""

    def __init__(self, python: str, batch: int, steps: int):
        self.name = PEER
        self.proc = subprocess.Popen([python, os.path.join(ROOT, "benchmarks", "torch_peer.py"),
                                      str(batch), str(steps)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            raise RuntimeError("the PyTorch peer did not start")
        self.version = ready.split()[2]
        self.flops = None

    def round(self) -> float:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch_python", default=sys.executable,
                        help="a Python interpreter with torch, for the peer")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    acc = devices.accelerators()
    default_policy = devices.precision_policy("auto", acc)
    rows = [PackageRow(p, spe, args.batch, args.steps)
            for p in ("float32", "mixed_bfloat16") for spe in (1, "auto")]
    flops = rows[0].flops
    peer = PeerRow(args.torch_python, args.batch, args.steps) if has_torch(args.torch_python) else None
    if peer is not None:
        peer.flops = flops
        rows.append(peer)
    rates = {row.name: [] for row in rows}
    # The peaks are probed again every round, so that each round's utilisation is against the
    # machine as it was then (on shared cores it drifts).
    peaks = {p: [] for p in ("float32", "mixed_bfloat16")}
    for _ in range(args.rounds):
        for policy in peaks:
            peaks[policy].append(utilisation.matmul_peak.__wrapped__(policy))
        for row in rows:
            rates[row.name].append(row.round())
    if peer is not None:
        peer.close()

    print(f"seed 000's network (hexagonal_cnn), {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} -> 2, batch "
          f"{args.batch}, {args.steps} steps x {args.rounds} alternating rounds; {acc.describe()}")
    print(f"model: {flops / 1e6:.1f} MFLOP per training sample; matmul peak (median of the "
          f"rounds): float32 {np.median(peaks['float32']) / 1e9:,.0f} GFLOP/s, bfloat16 "
          f"{np.median(peaks['mixed_bfloat16']) / 1e9:,.0f} GFLOP/s")
    print(f"{'way':44}{'samples/s':>11}{'vs peer':>9}{'MFU':>7}")
    results = []
    for row in rows:
        median = float(np.median(rates[row.name]))
        ratio = (float(np.median(np.array(rates[row.name]) / np.array(rates[PEER])))
                 if peer is not None else None)
        policy = getattr(row, "policy", "float32")  # the peer computes in float32
        mfu = float(np.median([utilisation.utilisation(flops, rate, peak) for rate, peak
                               in zip(rates[row.name], peaks[policy])]))
        results.append({"way": row.name, "samples_per_s": median, "vs_peer": ratio, "mfu": mfu,
                        "rounds": rates[row.name]})
        print(f"{row.name:44}{median:>11,.0f}{ratio if ratio is not None else float('nan'):>9.2f}"
              f"{mfu:>7.1%}")
    if peer is None:
        print(f"{PEER}: left out, no torch under {args.torch_python} (use --torch_python)")
    default = next(r for r in results
                   if r["way"].endswith("(auto)") and ("bfloat16" in r["way"]) == (
                       default_policy == "mixed_bfloat16"))
    print(f"the defaults on this machine ({default['way']}):"
          + (f" {default['vs_peer']:.2f}x the peer (goal 3x: {'met' if default['vs_peer'] >= 3 else 'not met'})"
             if default["vs_peer"] is not None else "")
          + f"; {default['mfu']:.1%} of the matmul peak (goal 50%: "
          f"{'met' if default['mfu'] >= 0.5 else 'not met'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": acc.describe(), "batch": args.batch, "flops": flops, "peaks": peaks,
                       "torch": peer.version if peer else None, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

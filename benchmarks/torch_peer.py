"""The PyTorch peer of `benchmarks/training_rate.py`: seed 000's network written in PyTorch and
trained the way the PyTorch seeds train (an in-memory tensor loop, Adam), in one of PyTorch's
ways, in a process of its own so that the two libraries' thread pools never run at once.

    python benchmarks/torch_peer.py BATCH STEPS [--dtype float32|bfloat16]
                                    [--layout nchw|channels_last] [--mode eager|compiled]

`float32, nchw, eager` is how the seeds train; `bfloat16` is CPU autocast, `channels_last` the
memory format PyTorch recommends for convolutions on CPUs, `compiled` is `torch.compile` (its
compilation is paid in the untimed warm-up round). Reads one line per round from stdin and
answers each with the samples/s of STEPS training steps (fewer, whole ones, where a
slow way passes `--max_seconds`). Needs only torch and numpy; torch is
never a dependency of the package.
"""

import argparse
import contextlib
import time

import numpy as np
import torch
from torch import nn


def seed000_net(outputs: int = 2) -> nn.Module:
    """`trainer.models.hexagonal_cnn` for 32x32x1 inputs, layer for layer."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1), nn.Flatten(),
        nn.Linear(64 * 3 * 3, 64), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, outputs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("batch", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--layout", choices=("nchw", "channels_last"), default="nchw")
    parser.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    parser.add_argument("--max_seconds", type=float, default=30.0,
                        help="a round ends after this long, whole steps counted (slow ways)")
    args = parser.parse_args()
    batch, steps = args.batch, args.steps
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch * steps, 1, 32, 32), dtype=np.float32))
    y = torch.from_numpy(rng.random((batch * steps, 2), dtype=np.float32))
    model = seed000_net()
    if args.layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    model.train()

    def autocast():
        if args.dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(xb, yb):
        optimizer.zero_grad()
        with autocast():
            loss = loss_fn(model(xb).float(), yb)
        loss.backward()
        optimizer.step()

    if args.mode == "compiled":
        step = torch.compile(step)

    def epoch() -> float:
        start = time.perf_counter()
        done = 0
        for i in range(0, len(x), batch):
            step(x[i:i + batch], y[i:i + batch])
            done += len(x[i:i + batch])
            if time.perf_counter() - start > args.max_seconds:
                break
        return done / (time.perf_counter() - start)

    epoch()  # warm-up (and compilation)
    print(f"ready torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    while True:
        try:
            line = input()
        except EOFError:
            break
        if line:
            print(f"{epoch():.1f}", flush=True)


if __name__ == "__main__":
    main()

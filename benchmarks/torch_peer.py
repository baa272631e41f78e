"""The PyTorch peer of `benchmarks/training_rate.py`: seed 000's network written in PyTorch and
trained the way the PyTorch seeds train (an in-memory tensor loop, Adam, float32), in a process
of its own so that the two libraries' thread pools never run at once.

    python benchmarks/torch_peer.py BATCH STEPS

reads one line per round from stdin and answers each with the samples/s of STEPS training steps
(after one untimed warm-up round). Needs only torch and numpy; torch is never a dependency of
the package.
"""

import sys
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
    batch, steps = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch * steps, 1, 32, 32), dtype=np.float32))
    y = torch.from_numpy(rng.random((batch * steps, 2), dtype=np.float32))
    model = seed000_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    model.train()

    def epoch() -> float:
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            optimizer.zero_grad()
            loss = loss_fn(model(x[i:i + batch]), y[i:i + batch])
            loss.backward()
            optimizer.step()
        return len(x) / (time.perf_counter() - start)

    epoch()  # warm-up
    print(f"ready torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for _ in sys.stdin:
        print(f"{epoch():.1f}", flush=True)


if __name__ == "__main__":
    main()

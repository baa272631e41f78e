"""What several benchmarks share: seed 000's data as `.npy` files for a whole job, a
comma-separated choice checked against what a flag accepts, and the figures written as JSON."""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def job_data(workdir: str, batch: int, steps: int, shape: tuple) -> str:
    """A folder of random `x0.npy`/`y0.npy` (2 targets) for a job whose 70% training split
    makes `steps` batches an epoch; returns the folder."""
    rng = np.random.default_rng(0)
    n = batch * steps * 10 // 7 + 1
    data = os.path.join(workdir, "data")
    os.makedirs(data)
    np.save(os.path.join(data, "x0.npy"), rng.random((n, *shape), dtype=np.float32))
    np.save(os.path.join(data, "y0.npy"), rng.random((n, 2), dtype=np.float32))
    return data


def choices(text: str, allowed, flag: str, what: str) -> list[str] | None:
    """The comma-separated names of `text`, or None after one `error:` line on stderr when one
    is not `allowed` (or none is given)."""
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        print(f"error: unknown {what} {bad[0] if bad else '(none)'!r}, {flag}, expected some of "
              f"{', '.join(allowed)}", file=sys.stderr)
        return None
    return names


def write_json(path: str | None, figures) -> None:
    """The figures to `path` (nothing without one)."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)

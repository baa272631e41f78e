"""Per-channel mean and variance in one streaming pass, merged block by block (Chan et al.).

Used by training (the Normalization layer stored in the model) and by the converter (the
manifest), so both see the same numbers without ever holding the data set. `target_stats` gives
the same for regression targets, which are held in memory.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


_PIECE = 1 << 20  # values per piece of the squared-deviation pass


class RunningStats:
    """Count, mean and sum of squared deviations per channel, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray = np.zeros(0)
        self.m2: np.ndarray = np.zeros(0)

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x).reshape(-1, x.shape[-1])
        n = len(flat)
        if n == 0:
            return
        mean = flat.mean(axis=0, dtype=np.float64)
        # Squared deviations in pieces of about a million values, in the data's own float type
        # around the mean rounded to it (then corrected to the exact mean): no temporary copy of
        # the whole chunk in float64.
        shift = mean.astype(flat.dtype) if flat.dtype in (np.float32, np.float64) else mean
        m2 = np.zeros(flat.shape[1])
        step = max(1, _PIECE // flat.shape[1])
        for a in range(0, n, step):
            d = np.subtract(flat[a:a + step], shift)
            np.square(d, out=d)
            m2 += d.sum(axis=0, dtype=np.float64)
        m2 -= n * (mean - shift) ** 2
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / max(self.count, 1)


def channel_stats(chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per channel of (N, H, W, C) chunks; a constant channel gets variance 1."""
    stats = RunningStats()
    for x in chunks:
        stats.update(x if x.ndim == 4 else x[..., np.newaxis])
    # A constant channel would divide by zero; leave it unscaled instead.
    var = np.where(stats.variance > 0, stats.variance, 1.0)
    return stats.mean.astype(np.float32), var.astype(np.float32)


def target_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per target column of (N, K) regression targets, computed in float64
    and stored as float32 (the same numbers on every run and every worker); a constant target
    gets variance 1 (left unscaled)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    mean = y.mean(axis=0)
    var = ((y - mean) ** 2).mean(axis=0)
    var = np.where(var > 0, var, 1.0)
    return mean.astype(np.float32), var.astype(np.float32)

"""Near-duplicate leakage: evaluation samples that have a near-copy in the training split.

A hash of the bytes finds exact copies only. Neighbouring frames of a video differ by noise and
a little drift, and a model that has memorised one frame scores its neighbour, so evaluation on
such a sample says little about new data. Each image is reduced to a fingerprint: a greyscale
thumbnail of block means, centred and scaled to unit length, so that brightness and contrast do
not count. Two fingerprints are `sqrt(2 - 2r)` apart, where r is the correlation of the
thumbnails: 0 for the same picture, about 1.4 for unrelated ones. Nearest neighbours are found
by matrix products over chunks, so memory is the fingerprints (at most 512 bytes per sample, in
float16) plus one chunk-by-chunk product, whatever the data set's size.

Similar is not leaked. Rendered shapes, lattices at nearby spacings, frames of one static scene:
distinct draws of low-variety data are often this near to each other, and a new draw would be as
near to the training data as the evaluation split is. What overstates a score is an evaluation
split nearer to the training split than its own samples are to each other: `leak_estimate`
compares the two. It takes the near-copy rate inside the evaluation split as the data's own
(the chance that two independent draws are near-copies, p, from 1 - (1 - p)^(n_eval - 1)) and
predicts the rate a training split of that size would give by chance, 1 - (1 - p)^n_train.
The excess over it is a leak: copies of evaluation samples in the training data. The frames of
one video split at random look like low variety by that measure (each evaluation frame has
near-copies among its own split too), but not by their order: their near-copies in training are
their neighbours in the data (within NEIGHBOURS rows), which independent draws almost never are.
A split warns on either. `benchmarks/neardup_rates.py` measures how often this is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

THUMB = 16  # thumbnail side (at most): coarse enough to ignore noise, fine enough to tell apart
# scenes, lattices and shapes that differ in a few pixels
THRESHOLD = 0.2  # nearer than this (r above 0.98) counts as a near-copy
CHUNK = 2048  # rows per side of one product block: 16 MB of float32


def fingerprints(x: np.ndarray) -> np.ndarray:
    """Unit-length, zero-mean THUMB x THUMB greyscale thumbnails of (N, H, W[, C]) images."""
    x = np.asarray(x, np.float32)
    grey = x.mean(axis=3) if x.ndim == 4 else x
    grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
    for axis in (1, 2):  # block means along height, then width
        n = grey.shape[axis]
        # at least 2 pixels a block, so that pixel noise averages out in small images
        edges = np.linspace(0, n, max(1, min(THUMB, n // 2)) + 1).astype(np.int64)
        grey = np.add.reduceat(grey, edges[:-1], axis=axis) / np.diff(edges).reshape(
            (-1, 1) if axis == 1 else (1, -1))
    flat = grey.reshape(len(grey), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    # A flat image has no pattern to compare: it stays the zero vector, 1 from every pattern.
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-12).astype(np.float16)


def nearest(queries: np.ndarray, references: np.ndarray, *,
            positions: Optional[tuple[np.ndarray, np.ndarray]] = None,
            apart: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index): each query fingerprint's nearest reference fingerprint. With
    `positions` (of the queries, of the references: rows in the data's order), references
    within `apart` rows of the query are left out (0: itself; NEIGHBOURS: its sequence).

    |q - r|^2 = |q|^2 + |r|^2 - 2 q.r, one CHUNK x CHUNK block at a time, with a running minimum.
    """
    queries = np.asarray(queries, np.float32)
    best = np.full(len(queries), np.inf, np.float32)
    where = np.zeros(len(queries), np.int64)
    q_sq = (queries ** 2).sum(axis=1)
    for r0 in range(0, len(references), CHUNK):
        r = np.asarray(references[r0:r0 + CHUNK], np.float32)
        r_sq = (r ** 2).sum(axis=1)
        for q0 in range(0, len(queries), CHUNK):
            d2 = r_sq[None, :] - 2.0 * (queries[q0:q0 + CHUNK] @ r.T)
            if positions is not None:
                gap = np.abs(positions[0][q0:q0 + CHUNK, None] - positions[1][None, r0:r0 + CHUNK])
                d2[gap <= apart] = np.inf
            at = d2.argmin(axis=1)
            d2 = d2[np.arange(len(at)), at] + q_sq[q0:q0 + CHUNK]
            better = d2 < best[q0:q0 + CHUNK]
            best[q0:q0 + CHUNK][better] = d2[better]
            where[q0:q0 + CHUNK][better] = at[better] + r0
    return np.sqrt(np.maximum(best, 0.0)), where


@dataclass(frozen=True)
class Leak:
    """What `leak_estimate` found for one evaluation split, as fractions of its samples."""
    observed: float  # with a near-copy in the training split
    expected: float  # that the data's own variety gives by chance
    neighbours: float  # whose near-copy is a neighbour in the data's order (frames of a video)
    distances: np.ndarray  # each sample's distance to its nearest training sample

    @property
    def leaks(self) -> bool:
        """Nearer the training split than chance makes it, or near-copies of its neighbours."""
        return self.observed - self.expected > LEAK_EXCESS or self.neighbours > LEAK_EXCESS


def leak_estimate(evaluation: np.ndarray, eval_rows: np.ndarray, train: np.ndarray,
                  train_rows: np.ndarray, threshold: float = THRESHOLD) -> Leak:
    """The near-copies of `evaluation` in `train` (fingerprints, and their rows in the data's
    order), against chance (see the module docstring)."""
    eval_rows, train_rows = np.asarray(eval_rows, np.int64), np.asarray(train_rows, np.int64)
    dist, at = nearest(evaluation, train)
    near = dist < threshold
    n = len(evaluation)
    if n == 0 or not len(train):
        return Leak(0.0, 0.0, 0.0, dist)
    beside = near & (np.abs(eval_rows - train_rows[at]) <= NEIGHBOURS)
    expected = 0.0
    if n > 1:  # the split's own near-copies, its sequences (neighbouring rows) left out
        own_dist, _ = nearest(evaluation, evaluation, positions=(eval_rows, eval_rows),
                              apart=NEIGHBOURS)
        own = float((own_dist < threshold).mean())
        pair = 1.0 - (1.0 - own) ** (1.0 / (n - 1)) if own < 1 else 1.0
        expected = float(1.0 - (1.0 - pair) ** len(train))
    return Leak(float(near.mean()), expected, float(beside.mean()), dist)


LEAK_EXCESS = 0.05  # near-copies in this much more of a split than chance gives: warn
NEIGHBOURS = 3  # rows apart in the data's order that count as one sequence (a video's frames)

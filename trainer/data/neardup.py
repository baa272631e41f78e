"""Near-duplicate leakage: evaluation samples that have a near-copy in the training split.

A hash of the bytes finds exact copies only. Neighbouring frames of a video differ by noise and
a little drift, and a model that has memorised one frame scores its neighbour, so evaluation on
such a sample says little about new data. Each image is reduced to a fingerprint: a greyscale
thumbnail of block means, centred and scaled to unit length, so that brightness and contrast do
not count. Two fingerprints are `sqrt(2 - 2r)` apart, where r is the correlation of the
thumbnails: 0 for the same picture, about 1.4 for unrelated ones. Nearest neighbours are found
by matrix products over chunks, so memory is the fingerprints (256 bytes per sample) plus one
chunk-by-chunk product, whatever the data set's size.
"""

from __future__ import annotations

import numpy as np

THUMB = 8  # thumbnail side: coarse enough to ignore noise, fine enough to tell scenes apart
THRESHOLD = 0.3  # nearer than this (r above about 0.955) counts as a near-copy
CHUNK = 2048  # rows per side of one product block: 16 MB of float32


def fingerprints(x: np.ndarray) -> np.ndarray:
    """Unit-length, zero-mean THUMB x THUMB greyscale thumbnails of (N, H, W[, C]) images."""
    x = np.asarray(x, np.float32)
    grey = x.mean(axis=3) if x.ndim == 4 else x
    grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
    for axis in (1, 2):  # block means along height, then width
        n = grey.shape[axis]
        edges = np.linspace(0, n, min(THUMB, n) + 1).astype(np.int64)
        grey = np.add.reduceat(grey, edges[:-1], axis=axis) / np.diff(edges).reshape(
            (-1, 1) if axis == 1 else (1, -1))
    flat = grey.reshape(len(grey), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    # A flat image has no pattern to compare: it stays the zero vector, 1 from every pattern.
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-12)


def nearest(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Distance from each query fingerprint to its nearest reference fingerprint.

    |q - r|^2 = |q|^2 + |r|^2 - 2 q.r, one CHUNK x CHUNK block at a time, with a running minimum.
    """
    best = np.full(len(queries), np.inf, np.float32)
    q_sq = (queries ** 2).sum(axis=1)
    for r0 in range(0, len(references), CHUNK):
        r = references[r0:r0 + CHUNK]
        r_sq = (r ** 2).sum(axis=1)
        for q0 in range(0, len(queries), CHUNK):
            d2 = r_sq[None, :] - 2.0 * (queries[q0:q0 + CHUNK] @ r.T)
            np.minimum(best[q0:q0 + CHUNK], d2.min(axis=1) + q_sq[q0:q0 + CHUNK],
                       out=best[q0:q0 + CHUNK])
    return np.sqrt(np.maximum(best, 0.0))

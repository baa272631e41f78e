"""Synthetic glyphs for the few-labels benchmark: two tasks that share their low-level features.

Each class is a glyph: three or four strokes between the points of a 4x4 grid, like a letter of
an alphabet nobody knows. A sample draws its class's glyph with the nuisances a camera adds: a
random rotation (up to 20 degrees), scale (0.75 to 1.15), shift (up to 4 px) and stroke width,
two clutter strokes that belong to no glyph, a background gradient, a random contrast and
Gaussian noise. Strokes are bright on a darker ground in every sample (an inverted contrast is
another kind of image, where transfer was seen not to help).

The pretraining task and the target task draw their glyphs from the same stroke generator but
with different seeds: other classes, the same strokes, corners and crossings. A network that has
learned to read one alphabet has features for the other, which is what transfer needs; the
target's classes are new, so its head is new.
"""

from __future__ import annotations

import numpy as np

SIZE = 32
GRID = np.array([(r, c) for r in range(4) for c in range(4)], np.float32) / 3.0 - 0.5


def alphabet(classes: int, seed: int) -> np.ndarray:
    """`classes` glyphs, each 4 strokes (the fourth zero-length for a 3-stroke glyph), as
    endpoint pairs in [-0.5, 0.5]: shape (classes, 4, 2, 2). No two glyphs are the same."""
    rng = np.random.default_rng(seed)
    glyphs, seen = [], set()
    while len(glyphs) < classes:
        strokes = set()
        n = rng.integers(3, 5)
        point = rng.integers(16)
        while len(strokes) < n:  # mostly connected, as pen strokes are
            start = point if rng.uniform() < 0.7 else rng.integers(16)
            end = rng.integers(16)
            if end != start:
                strokes.add(tuple(sorted((int(start), int(end)))))
                point = end
        key = frozenset(strokes)
        if key in seen:
            continue
        seen.add(key)
        pairs = [GRID[list(s)] for s in sorted(strokes)]
        while len(pairs) < 4:
            pairs.append(pairs[0][[0, 0]])  # a zero-length stroke draws nothing new
        glyphs.append(np.stack(pairs))
    return np.stack(glyphs).astype(np.float32)


def _draw(segments: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Anti-aliased strokes: segments (n, s, 2, 2) in pixel coordinates, width (n,) in px."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    pix = np.stack([rows.ravel(), cols.ravel()], axis=1)  # (P, 2)
    a, b = segments[:, :, None, 0, :], segments[:, :, None, 1, :]  # (n, s, 1, 2)
    ab = b - a
    t = np.clip(((pix - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-6), 0.0, 1.0)
    dist = np.linalg.norm(pix - (a + t[..., None] * ab), axis=-1).min(axis=1)  # (n, P)
    ink = np.clip(width[:, None] / 2 + 0.5 - dist, 0.0, 1.0)
    return ink.reshape(-1, SIZE, SIZE)


def sample(glyphs: np.ndarray, n: int, seed: int, chunk: int = 500):
    """n images (n, 32, 32, 1) float32 and their labels, classes in equal shares."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(glyphs))
    out = np.empty((n, SIZE, SIZE, 1), np.float32)
    for lo in range(0, n, chunk):
        y = labels[lo:lo + chunk]
        m = len(y)
        angle = rng.uniform(-20, 20, m) * np.pi / 180
        scale = rng.uniform(0.75, 1.15, m) * (SIZE - 8)
        rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1),
                        np.stack([np.sin(angle), np.cos(angle)], -1)], -2)  # (m, 2, 2)
        pts = np.einsum("mij,mskj->mski", rot, glyphs[y]) * scale[:, None, None, None]
        pts += (SIZE - 1) / 2 + rng.uniform(-4, 4, (m, 1, 1, 2))
        clutter = rng.uniform(0, SIZE - 1, (m, 2, 2, 2))
        clutter[:, :, 1] = clutter[:, :, 0] + rng.normal(0, 5, (m, 2, 2))  # short strokes
        ink = _draw(np.concatenate([pts, clutter], axis=1).astype(np.float32),
                    rng.uniform(1.2, 2.6, m).astype(np.float32))
        rows, cols = np.mgrid[0:SIZE, 0:SIZE] / SIZE - 0.5
        slope = rng.normal(0, 0.6, (m, 2, 1, 1))
        ground = slope[:, 0] * rows + slope[:, 1] * cols + rng.uniform(0.2, 0.5, (m, 1, 1))
        contrast = rng.uniform(0.35, 1.0, (m, 1, 1))
        img = ground + contrast * ink + rng.normal(0, 0.25, (m, SIZE, SIZE))
        out[lo:lo + m, ..., 0] = img
    return out, labels.astype(np.int64)

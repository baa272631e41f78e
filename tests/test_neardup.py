"""Fingerprints and nearest neighbours of trainer.data.neardup, against brute force."""

import numpy as np

from trainer.data import neardup


def test_fingerprints_ignore_brightness_and_find_the_nearest():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2100, 12, 12, 1)).astype(np.float32)
    f = neardup.fingerprints(x)
    assert f.shape == (2100, 64) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    assert np.allclose(neardup.fingerprints(3 * x[:5] + 7), f[:5], atol=1e-5)
    flat = neardup.fingerprints(np.full((1, 12, 12, 1), 4.0))
    assert np.all(flat == 0)  # nothing to compare: 1 from any pattern
    queries, refs = f[:2100:3], f[1::3]  # more than one chunk each way
    brute = np.sqrt(((queries[:, None] - refs[None]) ** 2).sum(-1)).min(axis=1)
    assert np.allclose(neardup.nearest(queries, refs), brute, atol=1e-3)
    near = neardup.fingerprints(x[:10] + rng.normal(0, 0.05, x[:10].shape).astype(np.float32))
    assert np.all(neardup.nearest(near, f) < neardup.THRESHOLD)
    assert np.all(neardup.nearest(f[:10], f[10:]) > 2 * neardup.THRESHOLD)  # unrelated images

"""Fingerprints and nearest neighbours of trainer.data.neardup, against brute force."""

import numpy as np

from trainer.data import neardup


def test_fingerprints_ignore_brightness_and_find_the_nearest():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2100, 12, 12, 1)).astype(np.float32)
    f = neardup.fingerprints(x)
    assert f.shape == (2100, 36) and np.allclose(np.linalg.norm(f.astype(np.float32), axis=1), 1,
                                                  atol=1e-3)
    assert np.allclose(neardup.fingerprints(3 * x[:5] + 7), f[:5], atol=1e-3)
    flat = neardup.fingerprints(np.full((1, 12, 12, 1), 4.0))
    assert np.all(flat == 0)  # nothing to compare: 1 from any pattern
    queries, refs = f[:2100:3], f[1::3]  # more than one chunk each way
    q32, r32 = queries.astype(np.float32), refs.astype(np.float32)
    brute = np.sqrt(((q32[:, None] - r32[None]) ** 2).sum(-1))
    dist, at = neardup.nearest(queries, refs)
    assert np.allclose(dist, brute.min(axis=1), atol=1e-3)
    assert np.allclose(brute[np.arange(len(at)), at], brute.min(axis=1), atol=1e-3)
    near = neardup.fingerprints(x[:10] + rng.normal(0, 0.05, x[:10].shape).astype(np.float32))
    assert np.all(neardup.nearest(near, f)[0] < neardup.THRESHOLD)
    assert np.all(neardup.nearest(f[:10], f[10:])[0] > 2 * neardup.THRESHOLD)  # unrelated images


def _estimate(x, train_rows, val_rows, planted=None):
    train = neardup.fingerprints(x[train_rows])
    if planted is not None:  # copies saved away from their originals, after the last row
        train = np.concatenate([train, neardup.fingerprints(planted)])
        train_rows = np.concatenate([train_rows, len(x) + 10 + np.arange(len(planted))])
    return neardup.leak_estimate(neardup.fingerprints(x[val_rows]), val_rows, train, train_rows)


def _random_split(n, rng):
    order = rng.permutation(n)
    return np.sort(order[n // 5:]), np.sort(order[:n // 5])


def test_similar_draws_of_low_variety_data_are_not_a_leak():
    """The demo's shapes: most test images have a twin in training (same shape and corners, other
    colour), as a new draw would: no warning."""
    from trainer.data import demo

    x, _ = demo.generate(150, (32, 32), 1)
    train, val = _random_split(len(x), np.random.default_rng(0))
    leak = _estimate(x, train, val)
    assert leak.observed > 0.5 and not leak.leaks, leak


def test_planted_copies_and_frames_split_at_random_are_leaks():
    from conftest import drifting_videos

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16, 16, 1)).astype(np.float32)  # distinct draws
    train, val = _random_split(len(x), rng)
    assert not _estimate(x, train, val).leaks
    copies = x[val[:20]] + rng.normal(0, 0.1, (20, 16, 16, 1)).astype(np.float32)
    planted = _estimate(x, train, val, copies)
    assert planted.leaks and planted.observed == 0.2 and planted.neighbours == 0, planted
    frames, _, group = drifting_videos(20, 25, seed=2, shown=0.0)
    train, val = _random_split(len(frames), rng)  # a video's frames on both sides
    by_frame = _estimate(frames, train, val)
    assert by_frame.leaks and by_frame.neighbours > 0.1, by_frame
    held = np.isin(group, np.unique(group)[:4])  # whole videos held out
    by_video = _estimate(frames, np.flatnonzero(~held), np.flatnonzero(held))
    assert not by_video.leaks and by_video.observed < 0.05, by_video

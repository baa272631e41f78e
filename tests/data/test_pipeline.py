"""The input pipeline: a new order every epoch across all shards, repeatable from the seed."""

import numpy as np
import pytest

from trainer.data.pipeline import (PipelineOptions, RowsRead, Share, augment, make_dataset,
                                   steps)
from trainer.data.source import Source, View, array_shard
from trainer.data.stats import channel_stats


def _ids_view(n_shards=8, per_shard=250, size=4):
    """Shards whose images hold their own global id, so the order can be read back."""
    shards = []
    for s in range(n_shards):
        ids = np.arange(s * per_shard, (s + 1) * per_shard)
        x = np.broadcast_to(ids[:, None, None, None], (per_shard, size, size, 1)).astype(np.float32)
        shards.append(array_shard(x, ids.astype(np.int32), f"shard{s}"))
    return View(Source(shards))


def _epochs(view, opts, epochs, first_epoch=0):
    ds = make_dataset(view, view.labels, opts, first_epoch=first_epoch, epochs=epochs)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    per = steps(view, opts)
    assert len(batches) == per * epochs
    out = []
    for e in range(epochs):
        part = batches[e * per:(e + 1) * per]
        assert all(len(y) == opts.batch_size for _, y in part[:-1])  # whole batches but the last
        ids = np.concatenate([y for _, y in part])
        assert np.array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in part]), ids)  # x matches y
        out.append(ids)
    return out


def test_every_epoch_a_new_order_across_all_shards_repeatable_from_the_seed():
    view = _ids_view()
    opts = PipelineOptions(batch_size=50, shuffle=True, seed=3, window=500, block=25)
    a0, a1 = _epochs(view, opts, 2)
    b0, b1 = _epochs(view, opts, 2)
    c0, _ = _epochs(view, PipelineOptions(**{**opts.__dict__, "seed": 4}), 2)
    for ids in (a0, a1):
        assert sorted(ids) == list(range(2000))  # each sample exactly once per epoch
    assert not np.array_equal(a0, a1) and not np.array_equal(a0, c0)
    assert np.array_equal(a0, b0) and np.array_equal(a1, b1)
    # a resumed run (starting at epoch 1) sees exactly epoch 1's order
    (r1,) = _epochs(view, opts, 1, first_epoch=1)
    assert np.array_equal(r1, a1)
    # mixing: position in the epoch tells nothing about position on disk ...
    assert abs(np.corrcoef(np.arange(2000), a0)[0, 1]) < 0.1
    # ... and a batch of 50 draws on most of the 8 shards, not one
    shards_per_batch = [len(set(a0[i:i + 50] // 250)) for i in range(0, 2000, 50)]
    assert np.mean(shards_per_batch) >= 6


def _worker_batches(view, opts, share, epochs=2, first_step=0):
    """One worker's pipeline: its per-replica batches, and its reader's rows per epoch."""
    rows_read = RowsRead()
    ds = make_dataset(view, view.labels, opts, epochs=epochs, share=share, rows_read=rows_read,
                      first_step=first_step)
    return [(x.numpy(), y.numpy()) for x, y in ds], rows_read


@pytest.mark.parametrize("workers,replicas,rows", [(2, 4, 2003), (3, 3, 1999)])
def test_each_worker_reads_its_own_part_of_every_epoch(workers, replicas, rows):
    # A global batch of 48: with 2003 rows and 4 replicas (2 a worker) the last step's 35 rows
    # are spread 9, 9, 9, 8; with 1999 rows and 3 replicas its 31 rows 11, 10, 10.
    source = _ids_view(n_shards=8, per_shard=250).source
    if rows > 2000:  # and a short shard
        source = Source([*source.shards, array_shard(
            np.full((3, 4, 4, 1), 7.0, np.float32), np.arange(2000, 2003, dtype=np.int32), "x")])
    view = View(source, np.arange(rows))
    opts = PipelineOptions(batch_size=48, shuffle=True, seed=5, window=300, block=25,
                           augment=("flip_left_right",))
    local = replicas // workers
    per = steps(view, opts, replicas)
    parts = [_worker_batches(view, opts, Share(workers, k, replicas)) for k in range(workers)]
    for k, (batches, rows_read) in enumerate(parts):
        assert len(batches) == 2 * per * local  # the same steps on every worker
        assert all(len(y) == 48 // replicas for _, y in batches[:(per - 1) * local])
        assert all(len(y) >= 1 for _, y in batches)
    for e in range(2):
        mine = [np.concatenate([y for _, y in b[e * per * local:(e + 1) * per * local]])
                for b, _ in parts]
        # each row is read by exactly one worker, and all of them read every row between them
        assert sorted(np.concatenate(mine)) == list(range(len(view)))
        assert [r[e] for _, r in parts] == [len(m) for m in mine]
        assert max(map(len, mine)) - min(map(len, mine)) <= local
    # a worker resumed at step 5 gets the batches (and augmentation) it had from step 5 on
    again, _ = _worker_batches(view, opts, Share(workers, workers - 1, replicas), first_step=5)
    whole = parts[-1][0][5 * local:]
    assert len(again) == len(whole)
    for (x, y), (x0, y0) in zip(again, whole):
        assert np.array_equal(y, y0) and np.array_equal(x, x0)


def test_a_remainder_smaller_than_the_replicas_waits_for_the_next_epoch():
    view = View(_ids_view(n_shards=2, per_shard=50).source, np.arange(99))  # 96 + 3 rows
    opts = PipelineOptions(batch_size=24, shuffle=True, seed=1, window=50, block=10)
    assert steps(view, opts) == 5 and steps(view, opts, replicas=4) == 4
    seen = [np.concatenate([y for _, y in _worker_batches(view, opts, Share(2, k, 4), 1)[0]])
            for k in range(2)]
    assert len(seen[0]) == len(seen[1]) == 48 and not set(seen[0]) & set(seen[1])


def test_evaluation_keeps_file_order():
    view = _ids_view(n_shards=3, per_shard=70)
    (ids,) = _epochs(view, PipelineOptions(batch_size=32, window=64, block=16), 1)
    assert np.array_equal(ids, np.arange(210))


def test_augmentation_only_rotates_and_flips_and_is_seeded():
    from trainer.kerasflavor import tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 5, 1)).astype(np.float32)
    kinds = ("rot90", "flip_left_right", "flip_up_down")
    out = augment(tf.constant(x), tf.zeros(64), kinds, 7, tf.constant(2, tf.int64))[0].numpy()
    again = augment(tf.constant(x), tf.zeros(64), kinds, 7, tf.constant(2, tf.int64))[0].numpy()
    other = augment(tf.constant(x), tf.zeros(64), kinds, 7, tf.constant(3, tf.int64))[0].numpy()
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    seen = set()
    for orig, got in zip(x[..., 0], out[..., 0]):
        variants = [np.rot90(f, k) for f in (orig, orig[:, ::-1]) for k in range(4)]
        matches = [i for i, v in enumerate(variants) if np.array_equal(v, got)]
        assert matches, "not a rotation or flip of the input"
        seen.add(matches[0])
    assert len(seen) >= 6  # the eight symmetries of the square all occur


def test_rot90_needs_square_images():
    from trainer.errors import UserError

    view = View(Source([array_shard(np.zeros((4, 6, 8)), np.zeros(4), "wide")]))
    with pytest.raises(UserError, match="not square"):
        make_dataset(view, view.labels, PipelineOptions(batch_size=2, shuffle=True, augment=("rot90",)))


def test_streaming_statistics_match_numpy():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(1000, 4, 4, 3)).astype(np.float32)
    mean, var = channel_stats(x[i:i + 97] for i in range(0, 1000, 97))
    assert np.allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-5)
    assert np.allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-5)

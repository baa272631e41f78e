"""Rows read straight from the files into the pipeline's buffers: same batches, nothing overwritten."""

import fsspec
import numpy as np
import pytest

from trainer import storage
from trainer.storage import reads
from trainer.data import formats, tfrecords
from trainer.data import windows as window_reads
from trainer.data.images import ImageSpec
from trainer.data.pipeline import PipelineOptions, make_dataset
from trainer.data.source import Source, View, array_shard
from trainer import config

from conftest import write_npz

N_SHARDS, PER_SHARD = 4, 300


@pytest.mark.parametrize("where", ["libc", "no libc preadv", "fsspec"])
def test_read_rows_into_copies_each_row_to_its_place(tmp_path, monkeypatch, where):
    data = np.random.default_rng(0).integers(0, 255, 100_000, dtype=np.uint8)
    path = str(tmp_path / "f")
    data.tofile(path)
    if where == "no libc preadv":  # a local file is read in spans, as a remote one
        monkeypatch.setattr(reads, "_PREADV", None)
    if where == "fsspec":
        with fsspec.open("memory://rows/f", "wb") as f:
            f.write(data.tobytes())
        path = "memory://rows/f"
    rng = np.random.default_rng(1)
    size = 100
    for offsets in (np.arange(1200) * size + 7,                           # back to back
                    np.cumsum(rng.integers(size, size + 9, 900)),           # short gaps
                    np.cumsum(rng.integers(size, size + 40_000, 6)),        # long gaps
                    np.arange(990, 1010) * size):                           # past the end
        dest = np.zeros((len(offsets) + 5, size), np.uint8)
        slots = rng.permutation(len(dest))[:len(offsets)]
        got = storage.read_rows_into(path, offsets, size, dest, slots * size)
        whole = int(np.sum(offsets + size <= len(data)))
        assert got == whole
        for i in range(got):
            assert np.array_equal(dest[slots[i]], data[offsets[i]:offsets[i] + size])


def _id_shards(folder):
    """The same rows (image i is filled with i, label i) as npz, npy, TFRecord and in memory."""
    paths = {"npz": [], "npy": [], "tfrecord": [], "tfrecord-gzip": []}
    shards = []
    for s in range(N_SHARDS):
        ids = np.arange(s * PER_SHARD, (s + 1) * PER_SHARD)
        x = np.broadcast_to(ids[:, None, None, None], (PER_SHARD, 4, 4, 1)).astype(np.float32)
        shards.append(array_shard(x, ids, f"memory {s}"))
        paths["npz"].append(write_npz(folder, f"s{s}.npz", x, ids))
        np.save(folder / f"x{s}.npy", x)
        np.save(folder / f"y{s}.npy", ids)
        paths["npy"].append(str(folder / f"x{s}.npy"))
        for gz, key in ((False, "tfrecord"), (True, "tfrecord-gzip")):
            path = str(folder / (f"s{s}.tfrecord" + (".gz" if gz else "")))
            writer = tfrecords.Writer(path, compress=gz)
            for img, i in zip(x, ids):  # labels of 1 to 3 varint bytes: records differ in length
                writer.write(tfrecords.example(img, i * 1000))
            writer.close()
            paths[key].append(path)
    return paths, Source(shards)


def _batches(view, labels, opts, epochs=2):
    return [(x.numpy(), y.numpy()) for x, y in make_dataset(view, labels, opts, epochs=epochs)]


@pytest.mark.parametrize("fmt", ["npz", "npy", "tfrecord", "tfrecord-gzip"])
def test_files_give_the_batches_of_the_same_rows_in_memory(tmp_path, fmt):
    paths, memory = _id_shards(tmp_path)
    data = config.DataConfig(format=fmt.split("-")[0])
    source = Source(formats.reader(data.format)(paths[fmt], data, ImageSpec()))
    assert all((s.raw is not None) == (fmt != "tfrecord-gzip") for s in source.shards)
    n = N_SHARDS * PER_SHARD
    rows = np.sort(np.random.default_rng(5).permutation(n)[: n * 3 // 4])  # a carved split: gaps
    opts = PipelineOptions(batch_size=32, shuffle=True, seed=2, window=200, block=40)
    for picked in (None, rows):
        view = View(source, picked)
        got = _batches(view, np.arange(n)[view.rows], opts)
        if fmt == "tfrecord-gzip":  # read whole (one block a shard): another order, same rows
            assert all(np.array_equal(x[:, 0, 0, 0], y) for x, y in got)
            assert sorted(np.concatenate([y for _, y in got])) == sorted(np.tile(view.rows, 2))
            continue
        expect = _batches(View(memory, picked), View(memory, picked).labels, opts)
        assert len(got) == len(expect)
        for (x, y), (ex, ey) in zip(got, expect):
            assert np.array_equal(y, ey) and np.array_equal(x, ex)


def test_other_dtypes_are_read_and_cast_into_place(tmp_path):
    """uint8 images are cast into the float32 window; 2-D targets follow their rows."""
    x = np.arange(200, dtype=np.uint8)[:, None, None].repeat(3, 1).repeat(3, 2)
    np.save(tmp_path / "x0.npy", x)
    np.save(tmp_path / "y0.npy", np.stack([np.arange(200), -np.arange(200)], axis=1).astype(np.float32))
    data = config.DataConfig(format="npy")
    view = View(Source(formats.reader("npy")([str(tmp_path / "x0.npy")], data, ImageSpec())))
    for bx, by in _batches(view, view.labels, PipelineOptions(batch_size=16, shuffle=True, window=64,
                                                              block=8), epochs=1):
        assert bx.dtype == np.float32 and np.array_equal(bx[:, 1, 1, 0], by[:, 0])
        assert np.array_equal(by[:, 1], -by[:, 0])


def test_batches_held_by_the_consumer_are_never_overwritten(monkeypatch):
    made = []

    class Counted(window_reads.Buffers):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(window_reads, "Buffers", Counted)
    ids = np.arange(3000)
    # 64-byte rows: every batch is an aligned slice, which TensorFlow takes without a copy
    x = np.broadcast_to(ids[:, None, None, None], (3000, 4, 4, 1)).astype(np.float32)
    view = View(Source([array_shard(x, ids, "ids")]))
    opts = PipelineOptions(batch_size=50, shuffle=True, seed=1, window=300, block=30)
    for x_batch, y_batch in make_dataset(view, view.labels, opts, epochs=4):  # let go of each
        assert np.array_equal(x_batch.numpy()[:, 0, 0, 0], y_batch.numpy())
    assert len(made[-1]) <= 12  # reused: a few buffers (prefetched batches hold theirs), not 40
    held = list(make_dataset(view, view.labels, opts, epochs=2))  # keep every batch
    for x_batch, y_batch in held:
        assert np.array_equal(x_batch.numpy()[:, 0, 0, 0], y_batch.numpy())
    assert len(made[-1]) >= 20  # each of the 20 windows stayed with its batches

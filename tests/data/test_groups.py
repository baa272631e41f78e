"""Groups in every format that carries them, and splits that keep a group on one side."""

import csv
import os

import h5py
import numpy as np
import pytest

from trainer import config
from trainer.data import groups, load_splits, tfrecords

from conftest import drifting_videos, write_npz


def _splits(seed=4, **data):
    return load_splits(config.from_dict({"data": {"split_by": "group", **data},
                                         "train": {"seed": seed}}))


def _groups_of(splits):
    return {k: set(getattr(splits, k).view.groups) for k in ("train", "val", "test")}


def test_split_by_group_keeps_every_video_on_one_side(tmp_path):
    x, y, group = drifting_videos(30, 5, seed=3, size=8)
    write_npz(tmp_path / "d", "a.npz", x[:73], y[:73], group=group[:73])  # a video spans both
    write_npz(tmp_path / "d", "b.npz", x[73:], y[73:], group=group[73:])
    s = _splits(format="npz", train=f"{tmp_path}/d/*.npz", validation_split=0.2, test_split=0.2)
    by_split = _groups_of(s)
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])
    assert set.union(*by_split.values()) == set(group)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 30, 30)  # 5-frame videos fit exactly
    for part in (s.train, s.val, s.test):  # rows and groups still belong together
        assert np.array_equal(part.view.groups, group[part.view.rows])
    summary = s.summary()
    assert summary["split_method"] == "group"
    assert [summary[k]["groups"] for k in ("train", "val", "test")] == [18, 6, 6]
    assert summary["groups_in_two_splits"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    again = _splits(format="npz", train=f"{tmp_path}/d/*.npz", validation_split=0.2, test_split=0.2)
    assert _groups_of(again) == by_split  # reproducible from train.seed
    other = _splits(seed=5, format="npz", train=f"{tmp_path}/d/*.npz", validation_split=0.2,
                    test_split=0.2)
    assert _groups_of(other)["val"] != by_split["val"]


def test_carving_aims_at_the_fractions_by_sample_count():
    sizes = np.random.default_rng(0).integers(1, 40, 60)  # groups of very different sizes
    names = np.repeat([f"s{i}" for i in range(60)], sizes)
    rows = np.arange(len(names))
    for seed in range(5):
        parts = groups.carve(names, rows, {"test": 0.1, "val": 0.25}, seed, "here")
        n = len(rows)
        assert sorted(np.concatenate(list(parts.values()))) == list(rows)
        # each cut lies at the group boundary nearest its target
        assert abs(len(parts["test"]) - 0.1 * n) <= sizes.max() / 2
        assert abs(len(parts["test"]) + len(parts["val"]) - 0.35 * n) <= sizes.max() / 2


def test_summary_without_groups_and_the_report(tmp_path):
    x, y, group = drifting_videos(4, 10, seed=1, size=8)
    write_npz(tmp_path, "g.npz", x, y, group=group)
    s = _splits(format="npz", train=f"{tmp_path}/g.npz", validation_split=0.1, test_split=0.1)
    lines = groups.report_lines(s.summary())
    assert lines[0] == ("split (group): train 2 groups (20 samples, 50%), val 1 groups (10 "
                        "samples, 25%), test 1 groups (10 samples, 25%)")
    assert "validation holds 25% of the carved samples, asked 10%" in lines[1]
    write_npz(tmp_path, "plain.npz", x, y)
    plain = load_splits(config.from_dict({"data": {"format": "npz",
                                                   "train": f"{tmp_path}/plain.npz"}}))
    assert "groups" not in plain.summary()["train"] and plain.split_method == "random"
    assert groups.report_lines(plain.summary()) == []


def _write(fmt, root, x, y, group):
    """The same samples in `fmt`, groups where that format keeps them."""
    os.makedirs(root, exist_ok=True)
    if fmt == "npy":
        np.save(root / "x0.npy", x)
        np.save(root / "y0.npy", y)
        np.save(root / "g0.npy", group)
        return {"train": str(root / "x0.npy")}
    if fmt == "tfrecord":
        writer = tfrecords.Writer(str(root / "t.tfrecord"))
        for i in range(len(x)):
            writer.write(tfrecords.example(x[i][..., None], y[i], group[i]))
        writer.close()
        return {"train": str(root / "t.tfrecord")}
    if fmt == "hdf5":
        with h5py.File(root / "c.h5", "w") as f:
            f["x"], f["y"], f["seed"] = x, y, group
        return {"train": str(root / "c.h5"), "group_key": "seed"}
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "session"])
        for i in range(len(x)):
            np.save(root / f"{i}.npy", x[i])
            w.writerow([f"{i}.npy", y[i], group[i]])
    return {"train": str(root / "m.csv"), "group_key": "session"}


@pytest.mark.parametrize("fmt", ["npy", "tfrecord", "hdf5", "csv"])
def test_every_format_carries_groups(tmp_path, fmt):
    x, _, _ = drifting_videos(6, 3, seed=2, size=8)
    y = np.arange(18) % 2  # both classes in every group, so any split trains on both
    group = np.repeat(np.arange(100, 106), 3)  # integer groups (seeds), strings in the csv
    s = _splits(format=fmt, validation_split=0.34, test_split=0.34,
                **_write(fmt, tmp_path, x, y, group))
    by_split = _groups_of(s)
    assert set.union(*by_split.values()) == {str(g) for g in range(100, 106)}
    assert sum(len(v) for v in by_split.values()) == 6  # no group in two splits
    assert [len(s.train), len(s.val), len(s.test)] == [6, 6, 6]
    rows = s.val.view.rows
    assert np.allclose(s.val.x[..., 0], x[rows])
    assert list(s.val.view.groups) == [str(g) for g in group[rows]]

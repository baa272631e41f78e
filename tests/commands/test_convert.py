"""python -m trainer.convert: shards + manifest, videos + .mat labels, flat memory, clean failure."""

import io
import json
import os
import tracemalloc

import av
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer import config, convert, predict
from trainer.predict import command as predict_command
from trainer.data import images, load_splits, video
from trainer.errors import UserError

from conftest import blob_images, contact_frames, error_line, run_cli, run_job, write_npz, write_video


def _blob_splits(tmp_path, n=300):
    x, label, _ = blob_images(n, seed=4)
    names = np.where(label == 1, "right", "left")
    parts = {"train": slice(0, n - 80), "val": slice(n - 80, n - 40), "test": slice(n - 40, n)}
    for split, sl in parts.items():
        write_npz(tmp_path / "orig" / split, "a.npz", x[sl], names[sl])
    return x[parts["train"]]


def test_converted_shards_have_a_true_manifest_and_train_like_the_original(tmp_path):
    train_x = _blob_splits(tmp_path)
    sets = [f"data.{s}={tmp_path / 'orig' / s / '*.npz'}" for s in ("train", "val", "test")]
    proc = run_cli("--set", "data.format=npz", *[a for s in sets for a in ("--set", s)],
                   "--out", str(tmp_path / "tf"), "--to", "tfrecord", "--gzip", "--shard_size", "64",
                   module="trainer.convert")
    assert proc.returncode == 0, proc.stderr
    assert "train: 220 samples in 4 shards" in proc.stdout
    manifest = json.loads((tmp_path / "tf" / "manifest.json").read_text())
    assert manifest["class_names"] == ["left", "right"] and manifest["sample_shape"] == [16, 16, 1]
    assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [64, 64, 64, 28]
    assert manifest["splits"]["test"]["count"] == 40 and manifest["compression"] == "gzip"
    assert np.allclose(manifest["splits"]["train"]["mean"], [train_x.mean()], atol=1e-5)
    assert np.allclose(manifest["splits"]["train"]["std"], [train_x.std()], atol=1e-5)
    assert sorted(os.listdir(tmp_path / "tf"))[0] == "manifest.json"

    common = ["model.name=tiny_cnn", "train.epochs=6", "train.seed=2"]
    original, _ = run_job(tmp_path / "runs", "name=orig", "data.format=npz", *sets, *common)
    converted, _ = run_job(tmp_path / "runs", "name=conv", "data.format=tfrecord",
                           *[f"data.{s}={tmp_path / 'tf' / s}-*" for s in ("train", "val", "test")],
                           *common)
    acc_a, acc_b = original.metrics["test"]["accuracy"], converted.metrics["test"]["accuracy"]
    assert acc_a >= 0.9 and abs(acc_a - acc_b) <= 0.05, (acc_a, acc_b)


def test_videos_and_mat_labels_become_shards(tmp_path):
    touch = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0])
    frames = [np.full((32, 32, 3), 230 if t else 20, np.uint8) for t in touch]
    write_video(tmp_path / "a.mp4", frames[:7])
    write_video(tmp_path / "b.mp4", frames[7:])
    labels = touch.astype(float)
    labels[3] = np.nan  # an uncuratable frame is left out
    scipy.io.savemat(tmp_path / "labels.mat", {"contacts": labels[:, None]})
    manifest = convert.convert(
        convert.video_splits([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")],
                             str(tmp_path / "labels.mat"), None,
                             config.load(None, ["data.color=grey", "data.image_size=[16, 16]"])),
        str(tmp_path / "out"), "npz", shard_size=8)
    assert manifest["splits"]["train"]["count"] == 11 and manifest["sample_shape"] == [16, 16, 1]
    assert manifest["class_names"] == ["0", "1"]
    with np.load(tmp_path / "out" / "train-00000.npz") as a, np.load(tmp_path / "out" / "train-00001.npz") as b:
        x, y = np.concatenate([a["x"], b["x"]]), np.concatenate([a["y"], b["y"]])
    keep = np.delete(touch, 3)
    assert np.array_equal(y, keep) and y.dtype.kind == "i"
    assert np.all((x.reshape(11, -1).mean(axis=1) > 128) == (keep == 1))  # each frame kept its label


def test_frames_keep_their_video_as_group_through_every_conversion(tmp_path):
    videos = [str(tmp_path / f"{name}.mp4") for name in ("a", "b", "c")]
    for path in videos:  # touch, no touch, touch, no touch: both classes in every video
        write_video(path, [np.full((32, 32, 3), 230 - 210 * (t % 2), np.uint8) for t in range(4)])
    scipy.io.savemat(tmp_path / "l.mat", {"touch": np.tile([1, 0], 6).astype(float)})
    proc = run_cli(*[a for v in videos for a in ("--video", v)],
                   "--labels", str(tmp_path / "l.mat"), "--out", str(tmp_path / "tf"),
                   "--shard_size", "5", module="trainer.convert")
    assert proc.returncode == 0, proc.stderr
    assert "train: 12 samples in 3 shards from 3 groups" in proc.stdout
    cfg = config.load(None, ["data.format=tfrecord", f"data.train={tmp_path}/tf/train-*",
                             "data.split_by=group", "data.validation_split=0.34",
                             "data.test_split=0.34"])
    splits = load_splits(cfg)
    for part in (splits.train, splits.val, splits.test):  # one whole video each
        assert len(part) == 4 and len(set(part.view.groups)) == 1
    assert {part.view.groups[0] for part in (splits.train, splits.val, splits.test)} == set(videos)
    convert.convert(convert.config_splits(cfg)[0], str(tmp_path / "npz"), "npz", shard_size=100)
    with np.load(tmp_path / "npz" / "val-00000.npz") as shard:
        assert list(shard["group"]) == list(splits.val.view.groups)
        assert np.array_equal(shard["y"], splits.val.view.labels)


def test_video_with_fewer_labels_than_frames_leaves_nothing(tmp_path):
    write_video(tmp_path / "a.mp4", [np.zeros((32, 32, 3), np.uint8)] * 5)
    scipy.io.savemat(tmp_path / "l.mat", {"y": np.zeros(3)})
    _refused_leaving_nothing(
        tmp_path, ["--video", str(tmp_path / "a.mp4"), "--labels", str(tmp_path / "l.mat")],
        f"error: video has more frames than labels (3), {tmp_path / 'a.mp4'} frame 3, expected "
        f"one label per frame in {tmp_path / 'l.mat'}")


def _refused_leaving_nothing(tmp_path, args, expected):
    """The real command fails with `expected` as its one line, and no shard is left behind."""
    proc = run_cli(*args, "--out", str(tmp_path / "out"), "--shard_size", "1", "--to", "npz",
                   module="trainer.convert")
    assert proc.returncode == 2
    assert error_line(proc.stderr) == expected
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def _peak_converting(tmp_path, n):
    x = np.random.default_rng(0).normal(size=(n, 16, 16)).astype(np.float32)
    folder = tmp_path / f"in{n}"
    folder.mkdir()
    np.save(folder / "x0.npy", x)
    np.save(folder / "y0.npy", np.arange(n) % 2)
    del x
    cfg = config.load(None, ["data.format=npy", f"data.train={folder}/x0.npy",
                             "data.validation_split=0.1", "data.test_split=0.1"])
    tracemalloc.start()
    splits, _ = convert.config_splits(cfg)
    convert.convert(splits, str(tmp_path / f"out{n}"), "npz", shard_size=250)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_conversion_memory_stays_flat(tmp_path):
    """4x the input (4,000 -> 16,000 samples, 16 MB -> 64 MB) must not raise the peak."""
    small, large = _peak_converting(tmp_path, 4000), _peak_converting(tmp_path, 16000)
    input_bytes = 16000 * 16 * 16 * 4
    print(f"converter peak traced memory: {small} B for 16 MB in, {large} B for 64 MB in")
    assert large < 1.25 * small, (small, large)
    assert large < input_bytes / 4, (large, input_bytes)


def test_video_frames_are_sized_and_coloured_as_image_files_are(tmp_path):
    """A frame becomes the array its PNG would give to training (the one image decoder)."""
    rng = np.random.default_rng(8)
    write_video(tmp_path / "n.mp4", [rng.integers(0, 256, (32, 32, 3), np.uint8)] * 3)
    scipy.io.savemat(tmp_path / "l.mat", {"y": np.array([0.0, 1.0, 0.0])})
    cfg = config.load(None, ["data.color=grey", "data.image_size=[12, 10]"])
    [(x, _, _)] = convert.video_splits([str(tmp_path / "n.mp4")], str(tmp_path / "l.mat"), None,
                                       cfg)["train"]
    with av.open(str(tmp_path / "n.mp4")) as video:
        pngs = []
        for frame in video.decode(video=0):
            buf = io.BytesIO()
            frame.to_image().save(buf, format="PNG")
            pngs.append(buf.getvalue())
    spec = images.spec_from_config(cfg.data)
    expected = np.stack([images.decode(png, spec, "frame.png") for png in pngs])
    assert x.dtype == np.uint8 and x.shape == (3, 12, 10, 1)
    np.testing.assert_array_equal(x, expected)


# ----------------------------------------------------------------------------------------------
# Several videos, each with its own labels file.


def _videos_with_labels(tmp_path, counts=(5, 4)):
    """a.mp4 and b.avi with their own .mat files; returns (videos, mats, labels of each)."""
    videos, mats, labels = [], [], []
    for k, (name, n) in enumerate(zip(("a.mp4", "b.avi"), counts)):
        frames, y = contact_frames(n, seed=k)
        videos.append(write_video(tmp_path / name, frames))
        mats.append(str(tmp_path / f"{name[0]}.mat"))
        scipy.io.savemat(mats[-1], {"touch": y.astype(float)[:, None]})
        labels.append(y)
    return videos, mats, labels


def test_each_labels_file_goes_with_its_video_in_order(tmp_path):
    videos, mats, labels = _videos_with_labels(tmp_path)
    proc = run_cli("--video", videos[0], "--labels", mats[0], "--video", videos[1], "--labels",
                   mats[1], "--out", str(tmp_path / "out"), "--to", "npz", module="trainer.convert")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out" / "train-00000.npz") as shard:
        assert list(shard["y"]) == [*labels[0], *labels[1]]  # not b.mat's labels for both
        assert list(shard["group"]) == [videos[0]] * 5 + [videos[1]] * 4


def test_a_frame_count_mismatch_names_its_pair(tmp_path):
    videos, mats, _ = _videos_with_labels(tmp_path)
    scipy.io.savemat(mats[1], {"touch": np.zeros((6, 1))})  # b.avi has 4 frames
    _refused_leaving_nothing(
        tmp_path, ["--video", videos[0], "--labels", mats[0], "--video", videos[1], "--labels", mats[1]],
        f"error: 6 labels but 4 frames, {mats[1]}, expected one label per frame of {videos[1]}, in order")


def test_labels_given_neither_once_nor_once_per_video_is_refused(tmp_path, capsys):
    """absl keeps only the last of a repeated string flag: b.mat would label both videos."""
    videos, mats, _ = _videos_with_labels(tmp_path, counts=(3, 3))
    scipy.io.savemat(tmp_path / "c.mat", {"touch": np.zeros(3)})
    cases = [
        ([videos[0], videos[1], videos[0]], mats,
         "error: --labels given 2 times for 3 videos, command line, expected one --labels for all "
         "videos or one after each --video, in the same order"),
        (videos, [*mats, str(tmp_path / "c.mat")],
         "error: --labels given 3 times for 2 videos, command line, expected one --labels for all "
         "videos or one after each --video, in the same order"),
        ([], mats[:1], "error: --labels without --video, command line, expected a --video for the "
         "labels' frames (or --config without --labels)"),
    ]
    for given_videos, given_mats, expected in cases:
        argv = [*[a for v in given_videos for a in ("--video", v)],
                *[a for m in given_mats for a in ("--labels", m)], "--out", str(tmp_path / "out")]
        assert convert.main(argv) == 2
        assert error_line(capsys.readouterr().err) == expected
    given_videos, given_mats, expected = cases[0]  # and on the real command line
    _refused_leaving_nothing(tmp_path, [*[a for v in given_videos for a in ("--video", v)],
                                        *[a for m in given_mats for a in ("--labels", m)]], expected)


def _save_mat_v73(path, **variables):
    """A MATLAB v7.3 MAT-file as MATLAB writes it (`save -v7.3`): an HDF5 file behind a 512-byte
    header, each variable a dataset stored transposed (MATLAB is column-major) with its class."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=np.asarray(value).T)
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Dec  2 08:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


def test_labels_saved_by_matlab_as_v7_3_hdf5(tmp_path):
    videos, _, labels = _videos_with_labels(tmp_path)
    _save_mat_v73(tmp_path / "a73.mat", contacts=labels[0].astype(float)[:, None])
    _save_mat_v73(tmp_path / "b73.mat", contacts=labels[1].astype(float)[:, None],
                  notes=np.zeros((1, 1)))
    argv = ["--video", videos[0], "--labels", str(tmp_path / "a73.mat"), "--video", videos[1],
            "--labels", str(tmp_path / "b73.mat"), "--labels_key", "contacts",
            "--out", str(tmp_path / "out"), "--to", "npz"]
    assert convert.main(argv) == 0
    with np.load(tmp_path / "out" / "train-00000.npz") as shard:
        assert list(shard["y"]) == [*labels[0], *labels[1]]


def test_a_v7_3_mat_pointing_outside_itself_is_refused(tmp_path):
    """An HDF5 external link would make convert read whatever file it names as labels."""
    import h5py

    videos, _, _ = _videos_with_labels(tmp_path)
    _save_mat_v73(tmp_path / "elsewhere.mat", contacts=np.zeros((5, 1)))
    _save_mat_v73(tmp_path / "a73.mat")
    with h5py.File(tmp_path / "a73.mat", "a") as f:
        f["contacts"] = h5py.ExternalLink(str(tmp_path / "elsewhere.mat"), "contacts")
    _refused_leaving_nothing(
        tmp_path, ["--video", videos[0], "--labels", str(tmp_path / "a73.mat")],
        f"error: dataset 'contacts' is an external link ('contacts' points into another file), "
        f"{tmp_path / 'a73.mat'}, expected datasets stored inside the file")


# ----------------------------------------------------------------------------------------------
# Frames at their own size; MATLAB layouts; not MATLAB at all; NaN; the curation loop.


def test_frames_keep_their_own_size_unless_asked_and_a_resize_is_said(tmp_path, capsys):
    """No --config: not the demo's 32x32. A size asked for, or a second size among the videos,
    is resized and said in one line with the counts."""
    cases = [((64,), [], (64, 64), None),
             ((64, 48), [], (64, 64), "4 of 8 video frames were resized to 64x64 (data.image_size, "
                                      "or the first frame's size), from 48x48 (4)"),
             ((40,), ["--set", "data.image_size=[24, 32]"], (24, 32),
              "4 of 4 video frames were resized to 24x32 (data.image_size, or the first frame's "
              "size), from 40x40 (4)"),
             ((24, 24), ["--set", "data.image_size=[24, 24]"], (24, 24), None)]
    for k, (sizes, extra, shape, line) in enumerate(cases):
        argv = [*extra, "--out", str(tmp_path / f"out{k}"), "--to", "npz"]
        for v, size in enumerate(sizes):
            frames, touch = contact_frames(4, seed=v, size=size)
            argv += ["--video", write_video(tmp_path / f"{k}_{v}.mp4", frames)]
            scipy.io.savemat(tmp_path / f"{k}_{v}.mat", {"touch": touch.astype(float)})
            argv += ["--labels", str(tmp_path / f"{k}_{v}.mat")]
        assert convert.main(argv) == 0  # as the command line runs it, in this process
        manifest = json.loads((tmp_path / f"out{k}" / "manifest.json").read_text())
        assert manifest["sample_shape"] == [*shape, 3], (sizes, extra)
        said = [s for s in capsys.readouterr().out.splitlines() if "resized" in s]
        assert said == ([f"warning: {line}"] if line else []), (sizes, extra, said)


def _save_v5(path, **variables):
    """What MATLAB's `save` (v5) writes, through scipy: lists are cells, dicts structs, str text."""
    def as_matlab(value):
        if isinstance(value, list):
            cell = np.empty((1, len(value)), dtype=object)
            for i, item in enumerate(value):
                cell[0, i] = as_matlab(item)
            return cell
        if isinstance(value, dict):
            return {k: as_matlab(v) for k, v in value.items()}
        if isinstance(value, str) or np.asarray(value).dtype.kind == "U":
            return value
        return np.asarray(value, float)[:, None]
    scipy.io.savemat(path, {k: as_matlab(v) for k, v in variables.items()})


def _save_v73_layouts(path, **variables):
    """What MATLAB's `save -v7.3` writes, through h5py: cells are datasets of references into
    `#refs#`, structs groups, text uint16 character codes, each with its MATLAB_class."""
    import h5py

    def put(where, name, value, refs):
        if isinstance(value, dict):
            item = where.create_group(name)
            for field, v in value.items():
                put(item, field, v, refs)
            kind = "struct"
        elif isinstance(value, str):
            item = where.create_dataset(name, data=np.array([[ord(c)] for c in value], np.uint16))
            item.attrs["MATLAB_int_decode"] = np.int32(2)
            kind = "char"
        elif isinstance(value, list):
            parts = [put(refs, f"r{len(refs)}", v, refs) for v in value]
            item = where.create_dataset(name, data=np.array([[p.ref] for p in parts]),
                                        dtype=h5py.ref_dtype)
            kind = "cell"
        else:
            item = where.create_dataset(name, data=np.asarray(value, float)[:, None].T)
            kind = "double"
        item.attrs["MATLAB_class"] = np.bytes_(kind)
        return item

    _save_mat_v73(path)
    with h5py.File(path, "a") as f:
        refs = f.create_group("#refs#")
        for name, value in variables.items():
            put(f, name, value, refs)


# Each layout, given the labels of videos s1.mp4 and s2.avi: names in another order than the
# command line's where the layout names the videos, so only pairing by name gives the right ones.
MAT_LAYOUTS = {
    "cell of vectors, in video order": lambda a, b: {"labels": [a, b]},
    "struct with a field per video": lambda a, b: {"sessions": {"s2": b, "s1": a}},
    "cell beside a cell of names": lambda a, b: {"labels": [b, a], "names": ["s2.avi", "s1.mp4"]},
    "cell beside Windows paths and notes": lambda a, b: {
        "touch": [b, a], "files": ["C:\\rig\\s2.avi", "D:\\s1.mp4"], "notes": ["ok", "blurred"]},
    "a vector per video": lambda a, b: {"s1": a, "s2": b},
}


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_common_matlab_layouts_pair_each_vector_with_its_video(tmp_path, version):
    videos, labels = [], []
    for name, n, seed in (("s1.mp4", 5, 1), ("s2.avi", 4, 2)):
        frames, touch = contact_frames(n, seed=seed, size=24)
        videos.append(write_video(tmp_path / name, frames))
        labels.append(touch.astype(float))
    save = _save_v5 if version == "v5" else _save_v73_layouts
    layouts = dict(MAT_LAYOUTS)
    if version == "v5":  # a char matrix of names, one per row (MATLAB's char(...))
        layouts["cell beside a char matrix"] = lambda a, b: {
            "labels": [b, a], "names": np.array(["s2.avi", "s1.mp4"])}
    for k, (layout, make) in enumerate(layouts.items()):
        mat = str(tmp_path / f"{k}.mat")
        save(mat, **make(*labels))
        out = tmp_path / f"out{k}"
        assert convert.main([*[a for v in videos for a in ("--video", v)], "--labels", mat,
                             "--out", str(out), "--to", "npz"]) == 0, layout
        with np.load(out / "train-00000.npz") as shard:
            assert list(shard["y"]) == [*labels[0], *labels[1]], layout
            assert list(shard["group"]) == [videos[0]] * 5 + [videos[1]] * 4, layout


def test_an_unpaired_matlab_layout_says_which_layouts_are_read(tmp_path, capsys):
    videos = [write_video(tmp_path / f"{n}.mp4", contact_frames(3, seed=0, size=24)[0])
              for n in ("s1", "s2")]
    three = {"labels": [np.zeros(3)] * 3}
    _save_v5(tmp_path / "three.mat", **three)
    _save_v5(tmp_path / "two.mat", a=np.zeros(3), b=np.zeros(3))
    _save_v73_layouts(tmp_path / "other.mat", sessions={"s1": np.zeros(3), "s9": np.zeros(3)})
    _save_v5(tmp_path / "names.mat", labels=[np.zeros(3)] * 2, names=["s2", "s1"],
             files=["s1.mp4", "s2.mp4"])
    cases = {
        "names.mat": "error: 2 of the variables names, files name every video of cell "
                     f"'labels', {tmp_path / 'names.mat'}, expected one variable of the videos' "
                     "names beside the cell",
        "three.mat": "error: variable 'labels' is a cell of 3 but 2 videos are given, "
                     f"{tmp_path / 'three.mat'}, expected one vector per video, in the order of "
                     "--video (or a variable of the videos' names beside the cell)",
        "two.mat": "error: cannot tell the labels of 2 video(s) among 2 variables (a (float64 3x1), "
                   f"b (float64 3x1)), {tmp_path / 'two.mat'}, expected {video.LAYOUTS}; or "
                   "--labels_key NAME",
        "other.mat": f"error: no labels for video {videos[1]} (no field of struct 'sessions' is "
                     f"'s2'; there are s1, s9), {tmp_path / 'other.mat'}, expected a vector for "
                     "each video, named after its file",
    }
    for name, expected in cases.items():
        argv = [*[a for v in videos for a in ("--video", v)], "--labels", str(tmp_path / name),
                "--out", str(tmp_path / "out")]
        assert convert.main(argv) == 2
        assert error_line(capsys.readouterr().err) == expected
    assert "a struct with a field per video" in video.LAYOUTS and "cell" in video.LAYOUTS
    assert not (tmp_path / "out").exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_labels_file_that_is_not_matlab_is_one_error_line(tmp_path, capsys, data):
    """Text, random bytes, an empty file, or a real .mat cut short or with bytes changed."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"touch": np.arange(40.0)[:, None], "c": _cell_of(3)},
                     do_compression=data.draw(st.booleans()))
    real = bytearray(buf.getvalue())
    kind = data.draw(st.sampled_from(["text", "random", "empty", "cut", "changed"]))
    if kind == "text":
        content = data.draw(st.text(max_size=300)).encode()
    elif kind == "random":
        content = data.draw(st.binary(max_size=600))
    elif kind == "empty":
        content = b""
    elif kind == "cut":
        content = bytes(real[:data.draw(st.integers(0, len(real) - 1))])
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            real[data.draw(st.integers(128, len(real) - 1))] = data.draw(st.integers(0, 255))
        content = bytes(real)
    path = tmp_path / "labels.mat"
    path.write_bytes(content)
    if not (tmp_path / "v.mp4").exists():
        write_video(tmp_path / "v.mp4", contact_frames(40, seed=0, size=24)[0])
    code = convert.main(["--video", str(tmp_path / "v.mp4"), "--labels", str(path),
                         "--out", str(tmp_path / "out"), "--to", "npz"])
    err = capsys.readouterr().err
    if code == 0:  # a change that MATLAB's format survives (in a variable's padding, say)
        return
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and str(path) in err, err
    assert not (tmp_path / "out").exists()


def _cell_of(n):
    cell = np.empty((1, n), dtype=object)
    for i in range(n):
        cell[0, i] = np.zeros((2, 1))
    return cell


def test_a_non_matlab_file_on_the_real_command_line(tmp_path):
    write_video(tmp_path / "v.mp4", contact_frames(3, seed=0, size=24)[0])
    (tmp_path / "notes.mat").write_text("frame,touch\n0,1\n")
    _refused_leaving_nothing(
        tmp_path, ["--video", str(tmp_path / "v.mp4"), "--labels", str(tmp_path / "notes.mat")],
        f"error: cannot read MATLAB file (Mat file appears to be truncated), "
        f"{tmp_path / 'notes.mat'}, expected a MATLAB .mat file (v4 to v7.3) of labels")


def test_nan_is_refused_as_training_refuses_it_and_the_manifest_is_strict_json(tmp_path, capsys):
    """The same line as training (counts, split, first file and row); under nonfinite=zero the
    values become 0, a line says so, and manifest.json parses as strict JSON."""
    rng = np.random.default_rng(3)
    for k, (split, bad_rows) in enumerate([("train", [5, 7]), ("train", [0]), ("val", [2])]):
        x = rng.normal(size=(40, 8, 8)).astype(np.float32)
        val = rng.normal(size=(10, 8, 8)).astype(np.float32)
        target = x if split == "train" else val
        for r in bad_rows:
            target[r, r % 8, 1] = np.nan
        target[bad_rows[-1], 0, 0] = np.inf
        write_npz(tmp_path / f"d{k}", "train.npz", x, np.arange(40) % 2)
        write_npz(tmp_path / f"d{k}", "val.npz", val, np.arange(10) % 2)
        sets = ["data.format=npz", f"data.train={tmp_path}/d{k}/train.npz",
                f"data.val={tmp_path}/d{k}/val.npz", "data.test_split=0"]
        assert convert.main([*[a for s in sets for a in ("--set", s)], "--out",
                             str(tmp_path / f"o{k}"), "--to", "npz", "--shard_size", "8"]) == 2
        first = f"row {bad_rows[0]} of {tmp_path}/d{k}/{split}.npz"
        expected = (f"{len(bad_rows)} NaN and 1 Inf values in {len(bad_rows)} samples of the "
                    f"{split} split, first at {first}, data.nonfinite=error, expected finite "
                    "values (data.nonfinite=zero replaces them with 0)")
        assert error_line(capsys.readouterr().err) == f"error: {expected}"
        assert not (tmp_path / f"o{k}").exists() or not os.listdir(tmp_path / f"o{k}")
        if split == "train":  # training's own line, word for word
            with pytest.raises(UserError) as caught:
                run_job(tmp_path / "runs", *sets, "model.name=tiny_cnn", "train.epochs=1")
            assert str(caught.value) == expected
        assert convert.main([*[a for s in [*sets, "data.nonfinite=zero"] for a in ("--set", s)],
                             "--out", str(tmp_path / f"z{k}"), "--to", "npz"]) == 0
        said = capsys.readouterr().out
        assert f"data.nonfinite=zero: replaced {len(bad_rows)} NaN and 1 Inf values" in said
        manifest = json.loads((tmp_path / f"z{k}" / "manifest.json").read_text(),
                              parse_constant=lambda c: pytest.fail(f"{c} in manifest.json"))
        assert all(np.isfinite(manifest["splits"]["train"]["mean"] + manifest["splits"]["train"]["std"]))
        with np.load(tmp_path / f"z{k}" / f"{split}-00000.npz") as shard:
            assert np.all(np.isfinite(shard["x"])) and shard["x"][bad_rows[0], bad_rows[0] % 8, 1] == 0


def test_curated_videos_convert_back_into_shards_that_train_with_the_earlier_ones(tmp_path):
    """The loop of seed 001: convert (README's command: npz, grey, the videos' 40x40) -> train ->
    predict --mat -> convert back --like the earlier shards (or the run) -> train on both."""
    videos, mats = [], []
    for k in range(2):
        frames, touch = contact_frames(24, seed=20 + k, size=40)
        videos.append(write_video(tmp_path / f"day{k}.mp4", frames))
        mats.append(str(tmp_path / f"day{k}.mat"))
        scipy.io.savemat(mats[-1], {"contacts": touch.astype(float)[:, None]})
    first = tmp_path / "shards"
    assert convert.main(["--video", videos[0], "--labels", mats[0], "--video", videos[1],
                         "--labels", mats[1], "--out", str(first), "--to", "npz",
                         "--set", "data.color=grey"]) == 0
    result, _ = run_job(tmp_path / "runs", "name=contact", "data.format=npz",
                        f"data.train={first}/train-*.npz", "model.name=tiny_cnn", "train.epochs=1",
                        "output.plots=false", "output.report=false")
    new = write_video(tmp_path / "new.mp4", contact_frames(20, seed=30, size=40)[0])
    assert predict_command.main(["--model", result.run_dir, new, "--mat", str(tmp_path / "curated.mat")]) == 0
    earlier = json.loads((first / "manifest.json").read_text())
    for k, like in enumerate([str(first), str(first / "manifest.json"), result.run_dir]):
        again = tmp_path / f"curated{k}"
        assert convert.main(["--video", new, "--labels", str(tmp_path / "curated.mat"),
                             "--like", like, "--out", str(again)]) == 0
        manifest = json.loads((again / "manifest.json").read_text())
        assert (manifest["format"], manifest["sample_shape"]) == ("npz", [40, 40, 1]) == (
            earlier["format"], earlier["sample_shape"]), like
    both, _ = run_job(tmp_path / "runs", "name=both", "data.format=npz",
                      f"data.train=[{first}/train-*.npz, {tmp_path}/curated0/train-*.npz]",
                      "data.split_by=group", "model.name=tiny_cnn", "train.epochs=1",
                      "output.plots=false", "output.report=false")
    data = json.loads(open(os.path.join(both.run_dir, "metrics.json")).read())["data"]
    assert sum(data[s]["samples"] for s in ("train", "val", "test")) == 48 + 20
    # What --like fixes cannot be asked otherwise: the shards would not train together.
    proc = run_cli("--video", new, "--labels", str(tmp_path / "curated.mat"), "--like", str(first),
                   "--to", "tfrecord", "--out", str(tmp_path / "no"), module="trainer.convert")
    assert proc.returncode == 2 and error_line(proc.stderr) == (
        f"error: --to=tfrecord but the shards of --like={first} have npz, command line, expected "
        "--to left out with --like (or the same)")

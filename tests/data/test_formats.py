"""Each data.format on real files written here: PNG/JPEG/TIFF folders, CSV, HDF5, TFRecord, npz/npy."""

import csv
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from trainer import config
from trainer.data import formats, load_splits, tfrecords
from trainer.data.images import ImageSpec
from trainer.data.source import Source, View
from trainer.errors import UserError

from conftest import blob_images, run_job, write_npz


def _splits(**data):
    return load_splits(config.from_dict({"data": data, "train": {"seed": 1}}))


def _all(split):
    return split.view.array()


def _image_folder(root, n=12, ext="png", mode="RGB", sizes=((20, 16), (24, 24)), depth=8):
    """Classes 'dark' and 'light'; images of differing sizes."""
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 200)):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            value = level * (257 if depth == 16 else 1)
            arr = np.full((h, w) if mode != "RGB" else (h, w, 3), value) + rng.integers(0, 5, (h, w) if mode != "RGB" else (h, w, 3))
            img = Image.fromarray(arr.astype(np.uint16 if depth == 16 else np.uint8))
            img.save(root / cls / f"{i:03d}.{ext}")
    (root / "README.txt").write_text("not an image: ignored")


def test_png_folder_resized_and_greyscale(tmp_path):
    _image_folder(tmp_path / "shapes")
    s = _splits(format="image_folder", train=str(tmp_path / "shapes"), image_size=[16, 16],
                color="grey")
    assert s.class_names == ["dark", "light"]
    assert s.input_shape == (16, 16, 1)
    assert len(s.train) + len(s.val) + len(s.test) == 24
    x = _all(s.train)
    dark = x[s.train.y == 0]
    assert dark.max() < 60 and x[s.train.y == 1].min() > 150  # values survive the resize


def test_tiff_16_bit_and_jpeg_rgb(tmp_path):
    _image_folder(tmp_path / "tif", ext="tif", mode="I;16", depth=16)
    s = _splits(format="image_folder", train=str(tmp_path / "tif" / "*" / "*.tif"))
    assert s.input_shape == (16, 20, 1)  # the first image's size; 16-bit values kept
    assert _all(s.train).max() > 255 * 100
    _image_folder(tmp_path / "jpg", ext="jpg")
    s = _splits(format="image_folder", train=str(tmp_path / "jpg"), image_size=[8, 8], color="rgb")
    assert s.input_shape == (8, 8, 3)


def test_csv_manifest_relative_paths_and_two_targets(tmp_path):
    x, _, target = blob_images(30, size=12)
    os.makedirs(tmp_path / "imgs")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "tx", "ty"])
        for i in range(30):
            np.save(tmp_path / "imgs" / f"{i}.npy", x[i])  # seed 000 keeps one array per image
            w.writerow([f"imgs/{i}.npy", target[i, 0], target[i, 1]])
    cfg = config.from_dict({"task": "regression", "data": {
        "format": "csv", "train": str(tmp_path / "labels.csv"), "path_column": "file",
        "label_columns": ["tx", "ty"], "validation_split": 0.1, "test_split": 0.1}})
    s = load_splits(cfg)
    assert s.num_outputs == 2 and s.input_shape == (12, 12, 1)
    rows = s.train.view.rows
    assert np.allclose(_all(s.train)[..., 0], x[rows]) and np.allclose(s.train.y, target[rows])


def test_hdf5_index_ranges_like_train_seeds(tmp_path):
    x, label, _ = blob_images(50, size=16)
    with h5py.File(tmp_path / "cubes.h5", "w") as f:
        f["slices"] = x
        f["kind"] = label
    s = _splits(format="hdf5", train=str(tmp_path / "cubes.h5"), x_key="slices", y_key="kind",
                train_rows=[0, 30], test_rows=[30, 50], validation_split=0.2)
    assert list(s.test.view.rows) == list(range(30, 50))
    assert len(s.train) == 24 and len(s.val) == 6 and set(s.train.view.rows) < set(range(30))
    assert np.array_equal(_all(s.test)[..., 0], x[30:50])


@pytest.mark.parametrize("gzip", [False, True])
def test_tfrecord_written_by_tensorflow_raw_and_png(tmp_path, gzip):
    """Shards written by TensorFlow's own writer (GZIP too) read back exactly."""
    from trainer.kerasflavor import tf

    x, label, _ = blob_images(40, size=8)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tf.io.TFRecordWriter(str(tmp_path / "raw.tfrecord"), options) as w:
        for img, lab in zip(x, label):
            w.write(tfrecords.example(img[..., None], lab))
    pngs = (np.clip(x, 0, 1) * 255).astype(np.uint8)
    with tf.io.TFRecordWriter(str(tmp_path / "png.tfrecord"), options) as w:
        for img, lab in zip(pngs, label):
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[tf.io.encode_png(img[..., None]).numpy()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[lab]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    data = config.DataConfig(format="tfrecord")
    spec = ImageSpec()
    for name, expect in (("raw", x), ("png", pngs.astype(np.float32))):
        (shard,) = formats.reader("tfrecord")([str(tmp_path / f"{name}.tfrecord")], data, spec)
        assert shard.seekable is not gzip and shard.count == 40
        view = View(Source([shard]))
        assert np.array_equal(view.array()[..., 0], expect) and np.array_equal(view.labels, label)
        rows = np.array([3, 4, 17])
        assert np.array_equal(View(Source([shard]), rows).array()[..., 0], expect[rows])


def test_npz_stored_compressed_and_npy_read_alike(tmp_path):
    x, label, _ = blob_images(20, size=8)
    write_npz(tmp_path, "plain.npz", x, label)
    np.savez_compressed(tmp_path / "small.npz", x=x, y=label)
    np.save(tmp_path / "x0.npy", x)
    np.save(tmp_path / "y0.npy", label)
    data = config.DataConfig(format="npz")
    spec = ImageSpec()
    plain, small = formats.reader("npz")([str(tmp_path / "plain.npz"), str(tmp_path / "small.npz")], data, spec)
    (pair,) = formats.reader("npy")([str(tmp_path / "x0.npy")], data, spec)
    assert plain.seekable and not small.seekable  # compressed members are read whole
    # A stored member is read a piece at a time, from the file, when asked: rows changed on disk
    # after the shard was opened show up, and what comes back holds those rows only.
    changed = x.copy()
    changed[2:5] += 7.0
    write_npz(tmp_path, "plain.npz", changed, label)
    piece = plain.read(2, 5)
    assert np.array_equal(piece, changed[2:5])
    assert piece.base is None or piece.base.nbytes == piece.nbytes
    write_npz(tmp_path, "plain.npz", x, label)
    for shard in (plain, small, pair):
        assert np.array_equal(shard.read(2, 5), x[2:5]) and np.array_equal(shard.labels, label)


def test_image_folder_trains_end_to_end(tmp_path):
    _image_folder(tmp_path / "imgs", n=20)
    result, _ = run_job(tmp_path / "out", "name=f", "data.format=image_folder",
                        f"data.train={tmp_path / 'imgs'}", "data.image_size=[12, 12]",
                        "data.augment=[rot90, flip_left_right]", "model.name=tiny_cnn",
                        "train.epochs=3", "train.batch_size=8")
    assert result.metrics["test"]["accuracy"] >= 0.75


def test_a_new_format_is_one_registry_entry(tmp_path):
    """An entry added to the registry, and nothing else, is accepted by the config and read."""
    x, label, _ = blob_images(30, size=8)
    path = write_npz(tmp_path, "a.npz", x, label)
    code = ("from trainer.data import formats\n"
            "formats.FORMATS['shards'] = formats.Format('trainer.data.readers:read_npz', 'npz again')\n"
            "from trainer import config\n"
            "from trainer.data import load_splits\n"
            f"s = load_splits(config.load(None, ['data.format=shards', 'data.train={path}']))\n"
            "print(len(s.train) + len(s.val) + len(s.test), s.input_shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "30 (8, 8, 1)"


# ----------------------------------------------------------------------------------------------
# npz: data.x_key / data.y_key, and Keras's own layout (mnist.npz, seed 003).


def _keras_npz(path, n_train, n_test, seed, **extra):
    """A file as `keras.datasets.mnist` downloads it: x_train, y_train, x_test, y_test."""
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 12, 12), dtype=np.uint8),
              "y_train": np.arange(n_train) % 3,
              "x_test": rng.integers(0, 256, (n_test, 12, 12), dtype=np.uint8),
              "y_test": (np.arange(n_test) + 1) % 3, **extra}
    np.savez(path, **arrays)
    return arrays


def test_keras_mnist_layout_trains_on_its_train_arrays_and_tests_on_its_test_arrays(tmp_path):
    for k, (n_train, n_test, extra) in enumerate([(60, 20, []), (90, 33, ["data.validation_split=0.3"]),
                                                  (45, 9, ["data.split_by=sample"])]):
        arrays = _keras_npz(tmp_path / f"mnist{k}.npz", n_train, n_test, seed=k)
        s = load_splits(config.load(None, ["data.format=npz", f"data.train={tmp_path}/mnist{k}.npz",
                                           *extra]))
        assert len(s.train) + len(s.val) == n_train  # validation carved from x_train only
        np.testing.assert_array_equal(_all(s.test)[..., 0], arrays["x_test"])
        assert list(s.test.view.labels) == list(arrays["y_test"])
        train = np.concatenate([_all(s.train), _all(s.val)])[..., 0]
        assert sorted(map(bytes, train)) == sorted(map(bytes, arrays["x_train"]))
        assert s.test.source.endswith("[x_test, y_test]")
    # data.test given: that is the test split, and x_test is not read
    write_npz(tmp_path / "own", "test.npz", np.zeros((12, 12, 12), np.uint8), np.arange(12) % 3)
    s = load_splits(config.load(None, ["data.format=npz", f"data.train={tmp_path}/mnist0.npz",
                                       f"data.test={tmp_path}/own/test.npz"]))
    assert len(s.test) == 12 and _all(s.test).max() == 0 and len(s.train) + len(s.val) == 60


def test_npz_arrays_are_named_by_x_key_and_y_key(tmp_path):
    rng = np.random.default_rng(0)
    for x_key, y_key in [("images", "labels"), ("X", "Y"), ("frames", "touch")]:
        x, y = rng.normal(size=(30, 8, 8)).astype(np.float32), np.arange(30) % 2
        np.savez(tmp_path / f"{x_key}.npz", **{x_key: x, y_key: y, "x": x[:, :4], "y": 1 - y})
        s = load_splits(config.load(None, ["data.format=npz", f"data.train={tmp_path}/{x_key}.npz",
                                           f"data.x_key={x_key}", f"data.y_key={y_key}"]))
        assert s.input_shape == (8, 8, 1)  # not the decoy arrays x, y
        rows = s.train.view.rows
        np.testing.assert_array_equal(_all(s.train)[..., 0], x[rows])
        assert list(s.train.view.labels) == list(y[rows])
    with pytest.raises(UserError, match=r"^array 'pixels' missing, .*, expected arrays 'pixels' "
                       r"and 'y' \(or 'pixels_train' and 'y_train'\) \(found: "):
        load_splits(config.load(None, ["data.format=npz", f"data.train={tmp_path}/X.npz",
                                       "data.x_key=pixels"]))


@pytest.mark.parametrize("color", ["grey", "rgb", "auto"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_config_s_channel_count_is_what_the_data_has(tmp_path, color, mode):
    """`DataConfig.channel_count` is the one channel count the config gives (the memory check
    before any image is decoded and the decoder both take it): images read with `color: grey`
    or `rgb` have that many channels whatever the files hold, `auto` leaves it to the first
    image, and the generated `shapes` follow `color` too, RGB for `auto`."""
    _image_folder(tmp_path / "img", n=2, mode=mode, sizes=((12, 10),))
    splits = _splits(format="image_folder", train=str(tmp_path / "img"), color=color,
                     validation_split=0, test_split=0)
    asked = config.from_dict({"data": {"format": "image_folder", "train": "x", "color": color}})
    own = {"L": 1, "RGB": 3}[mode]
    assert splits.input_shape[-1] == (asked.data.channel_count() or own)
    shapes = config.from_dict({"data": {"color": color}})
    drawn = _splits(format="shapes", color=color, samples_per_class=4, image_size=[8, 8])
    assert drawn.input_shape[-1] == shapes.data.channel_count() == {"grey": 1}.get(color, 3)

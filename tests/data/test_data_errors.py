"""Bad data in each format: one `error:` line naming the file (and record), exit 2, no output."""

import gzip
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from trainer import task
from trainer.data import tfrecords

from conftest import blob_images, error_line, write_npz


def _run(capsys, tmp_path, *overrides):
    code = task.train(None, ["name=bad", "model.name=tiny_cnn", "train.epochs=1", *overrides],
                      str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 2, captured
    line = error_line(captured.err)
    assert not (tmp_path / "out" / "bad").exists()  # nothing half-written
    return line


def _tfrecord(path, n=30, drop_label_at=None, compress=False):
    x, label, _ = blob_images(n, size=8)
    writer = tfrecords.Writer(str(path), compress=compress)
    for i in range(n):
        data = tfrecords.example(x[i][..., None], label[i])
        if i == drop_label_at:
            from trainer.kerasflavor import tf
            ex = tf.train.Example.FromString(data)
            del ex.features.feature["label"]
            data = ex.SerializeToString()
        writer.write(data)
    writer.close()
    return str(path)


def test_truncated_npz_shard(capsys, tmp_path):
    x, label, _ = blob_images(40)
    path = write_npz(tmp_path / "d", "cut.npz", x, label)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert line.startswith("error: cannot read npz") and "cut.npz" in line


def test_truncated_npy(capsys, tmp_path):
    np.save(tmp_path / "x0.npy", np.zeros((40, 8, 8), np.float32))
    np.save(tmp_path / "y0.npy", np.zeros(40))
    with open(tmp_path / "x0.npy", "r+b") as f:
        f.truncate(2000)
    line = _run(capsys, tmp_path, "data.format=npy", f"data.train={tmp_path}/x0.npy")
    assert "file is truncated (2000 of 10368 bytes)" in line and "x0.npy" in line


def test_pickled_npz_member_is_refused(capsys, tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={tmp_path}/p.npz")
    assert "pickled objects are refused" in line and "p.npz[x]" in line


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_tfrecord_names_the_record(capsys, tmp_path, compress):
    path = _tfrecord(tmp_path / "t.tfrecord", compress=compress)
    if compress:
        raw = gzip.decompress(open(path, "rb").read())
        open(path, "wb").write(gzip.compress(raw[:-100]))
    else:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 100)
    line = _run(capsys, tmp_path, "data.format=tfrecord", f"data.train={path}")
    assert line.startswith("error: truncated TFRecord") and f"{path} record 29" in line


def test_corrupt_tfrecord_fails_its_checksum(capsys, tmp_path):
    path = _tfrecord(tmp_path / "t.tfrecord")
    data = bytearray(open(path, "rb").read())
    record = len(data) // 30
    data[5 * record + 200] ^= 0xFF  # inside record 5's image bytes
    open(path, "wb").write(bytes(data))
    line = _run(capsys, tmp_path, "data.format=tfrecord", f"data.train={path}")
    assert "corrupt TFRecord (data checksum mismatch)" in line and f"{path} record 5" in line


def test_tfrecord_without_the_expected_features(capsys, tmp_path):
    path = _tfrecord(tmp_path / "t.tfrecord", drop_label_at=7)
    line = _run(capsys, tmp_path, "data.format=tfrecord", f"data.train={path}")
    assert "TFRecord without the expected features" in line and f"{path} record 7" in line
    path = _tfrecord(tmp_path / "u.tfrecord", drop_label_at=0)
    line = _run(capsys, tmp_path, "data.format=tfrecord", f"data.train={path}")
    assert f"TFRecord lacks feature 'label', {path} record 0" in line


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_undecodable_image(capsys, tmp_path, standardize):
    """Found by the statistics pass, or mid-training by the pipeline: either way one line."""
    for cls in ("a", "b"):
        os.makedirs(tmp_path / "imgs" / cls)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 50 if cls == "a" else 200, np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "b" / "7.png").write_bytes(b"\x89PNG not really")
    line = _run(capsys, tmp_path, "data.format=image_folder", f"data.train={tmp_path}/imgs",
                f"data.standardize={standardize}", "data.validation_split=0.1",
                "data.test_split=0.1")
    assert line.startswith("error: cannot decode image") and f"{tmp_path}/imgs/b/7.png" in line


def test_label_column_that_does_not_exist(capsys, tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.png,1\n")
    line = _run(capsys, tmp_path, "data.format=csv", f"data.train={tmp_path}/m.csv",
                "data.label_columns=[contact]")
    assert line == (f"error: column 'contact' not found (data.label_columns), {tmp_path}/m.csv, "
                    "expected one of: path, label")


@pytest.mark.parametrize("fmt", ["tfrecord", "image_folder", "hdf5", "csv"])
def test_glob_that_matches_nothing(capsys, tmp_path, fmt):
    line = _run(capsys, tmp_path, f"data.format={fmt}", f"data.train={tmp_path}/none/*")
    assert line.startswith(f"error: no files found, data.train={tmp_path}/none/*")


def test_hdf5_without_the_named_dataset(capsys, tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["images"] = np.zeros((10, 8, 8))
    line = _run(capsys, tmp_path, "data.format=hdf5", f"data.train={tmp_path}/c.h5")
    assert f"dataset 'x' missing, {tmp_path}/c.h5" in line and "found: images" in line


def test_split_by_group_without_groups(capsys, tmp_path):
    x, label, _ = blob_images(40)
    write_npz(tmp_path / "d", "a.npz", x[:20], label[:20], group=np.repeat(["v1", "v2"], 10))
    path = write_npz(tmp_path / "d", "b.npz", x[20:], label[20:])  # this one has none
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={tmp_path}/d/*.npz",
                "data.split_by=group")
    assert line == (f"error: no group per sample (data.split_by=group), {path}, expected an array "
                    "'group' in every .npz shard beside 'x' and 'y' (data.group_key)")
    for cls in ("a", "b"):
        os.makedirs(tmp_path / "imgs" / cls)
        for i in range(5):
            img = Image.fromarray(np.full((8, 8), 40 * i, np.uint8))
            img.save(tmp_path / "imgs" / cls / f"{i}.png")
    line = _run(capsys, tmp_path, "data.format=image_folder", f"data.train={tmp_path}/imgs",
                "data.split_by=group")
    # a format without groups is refused by the config, before any image is read
    assert line.startswith("error: no group per sample (data.split_by=group), "
                           "data.format=image_folder, --set, expected a format that carries groups (npz, "
                           "npy, tfrecord, csv, hdf5)")


def test_too_few_groups_for_the_splits(capsys, tmp_path):
    x, label, _ = blob_images(40)
    path = write_npz(tmp_path / "d", "a.npz", x, label, group=np.repeat([3, 7], 20))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}", "data.split_by=group")
    assert line == (f"error: 2 groups cannot be carved into validation_split=0.2 and "
                    f"test_split=0.1 (data.split_by=group), data.train={path}, expected at least 3 "
                    "groups: one for training and one for each carved split")


def test_groups_that_are_fractions(capsys, tmp_path):
    x, label, _ = blob_images(40)
    path = write_npz(tmp_path / "d", "a.npz", x, label, group=np.linspace(0, 1, 40))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert line.startswith("error: groups of dtype float64 with fractions or NaN, ")
    assert f"{path}, expected integer or string group names" in line


# ----------------------------------------------------------------------------------------------
# Readers that never crash: what a file can hold that its reader does not read.


def _npz_with_method(path, method: int) -> str:
    """An npz whose members are compressed with zip `method`; one zipfile cannot write (any
    number not 0, 8, 12 or 14) is written as deflate, then its method fields are patched."""
    import io
    import zipfile

    x, label, _ = blob_images(20, size=8)
    writable = method if method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                    zipfile.ZIP_LZMA) else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression=writable) as archive:
        for key, array in (("x", x), ("y", label)):
            buf = io.BytesIO()
            np.save(buf, array)
            archive.writestr(f"{key}.npy", buf.getvalue())
    if writable != method:
        data = bytearray(open(path, "rb").read())
        for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central headers
            i = data.find(signature)
            while i >= 0:
                data[i + at:i + at + 2] = method.to_bytes(2, "little")
                i = data.find(signature, i + 4)
        open(path, "wb").write(bytes(data))
    return str(path)


@pytest.mark.parametrize("method, name", [(12, "bzip2"), (14, "lzma"), (99, "method 99"),
                                          (9, "deflate64")])
def test_npz_members_compressed_with_a_method_numpy_does_not_write(capsys, tmp_path, method, name):
    path = _npz_with_method(tmp_path / "m.npz", method)
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert line == (f"error: npz member 'x.npy' is compressed with {name}, {path}[x], expected "
                    "stored or deflate members (as np.savez and np.savez_compressed write them)")


def test_an_encrypted_npz_member(capsys, tmp_path):
    path = _npz_with_method(tmp_path / "e.npz", 0)
    data = bytearray(open(path, "rb").read())
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag bits: encrypted
        i = data.find(signature)
        while i >= 0:
            data[i + at] |= 1
            i = data.find(signature, i + 4)
    open(path, "wb").write(bytes(data))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert line.startswith(f"error: npz member 'x.npy' is encrypted, {path}[x], expected ")


@pytest.mark.parametrize("fmt", ["hdf5-fixed", "hdf5-vlen", "npz"])
def test_string_labels_that_are_not_utf8(capsys, tmp_path, fmt):
    x, _, _ = blob_images(20, size=8)
    labels = [b"cat", b"caf\xe9"] * 10  # Latin-1, not UTF-8
    if fmt == "npz":
        path = write_npz(tmp_path / "d", "s.npz", x, np.array(labels))
        where = path
    else:
        path = str(tmp_path / "s.h5")
        with h5py.File(path, "w") as f:
            f["x"] = x
            if fmt == "hdf5-vlen":
                f.create_dataset("y", data=labels, dtype=h5py.string_dtype("utf-8"))
            else:
                f["y"] = np.array(labels)
        where = f"{path}[y]"
    line = _run(capsys, tmp_path, f"data.format={fmt.split('-')[0]}", f"data.train={path}")
    assert line.startswith("error: labels that are not UTF-8 text (b'caf\\xe9'), ")
    assert where in line and line.endswith("expected text")


def test_utf8_labels_that_are_not_ascii_are_read(tmp_path):
    from trainer.config import DataConfig
    from trainer.data import images, labels, readers

    x, _, _ = blob_images(4, size=8)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["x"] = x
        f["y"] = np.array(["café".encode(), b"tea"] * 2)
    shard, = readers.read_hdf5([str(tmp_path / "s.h5")], DataConfig(format="hdf5"),
                               images.ImageSpec())
    assert list(shard.labels) == ["café", "tea"] * 2
    _, names = labels.encode_classes(np.array(["café".encode(), b"tea"]), "s.npz")
    assert names == ["café", "tea"]


def _csv_images(folder, n=4):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")


def test_a_manifest_with_a_utf8_byte_order_mark_is_read(tmp_path):
    from trainer.config import DataConfig
    from trainer.data import images, readers

    _csv_images(tmp_path)
    (tmp_path / "m.csv").write_text("path,label\n0.png,a\n1.png,b\n", encoding="utf-8-sig")
    shard, = readers.read_csv([str(tmp_path / "m.csv")], DataConfig(format="csv"),
                              images.ImageSpec())
    assert list(shard.labels) == ["a", "b"] and shard.count == 2


@pytest.mark.parametrize("text, overrides, message", [
    ("path,label\n0.png,a\n", ["data.label_columns=[]"],
     "no label columns (data.label_columns is empty), {m}, expected the name of at least one "
     "column of labels or targets"),
    ("path,a,b\n0.png,1,2\n1.png,3,oops\n", ["data.label_columns=[a, b]", "task=regression"],
     "cell 'oops' in column 'b' is not a number, {m} row 2, expected numbers in every target "
     "column (data.label_columns names several)"),
    ("path,t\n" + "0.png,1\n1.png,2.5\n" * 6 + "2.png,x\n", ["data.label_columns=[t]",
                                                          "task=regression"],
     "regression targets of dtype <U3 (such as 'x'), data.train={m}, expected numbers"),
    ("path,label\n0.png,a\n1.png,b,extra\n", [],
     "row has 3 cells, {m} row 2, expected 2 cells like the header"),
    ("path,label\n0.png,a\n1.png,\n", [],
     "empty 'label' cell, {m} row 2, expected a label in every row"),
    ("path,label,label\n0.png,a,b\n", [],
     "column 'label' appears twice in the header, {m}, expected distinct column names"),
])
def test_manifests_that_do_not_match_their_header(capsys, tmp_path, text, overrides, message):
    _csv_images(tmp_path)
    (tmp_path / "m.csv").write_text(text)
    line = _run(capsys, tmp_path, "data.format=csv", f"data.train={tmp_path}/m.csv", *overrides)
    assert line == "error: " + message.format(m=f"{tmp_path}/m.csv")


# ----------------------------------------------------------------------------------------------
# An empty text label is refused by every reader, by one rule: the file and the first index


def _empty_label_files(tmp_path, fmt: str, labels: list) -> str:
    """A file of `fmt` holding 8x8 images labelled `labels` (text); returns data.train."""
    n = len(labels)
    x = np.random.default_rng(0).random((n, 8, 8), np.float32)
    y = np.array(labels)
    if fmt == "npz":
        return write_npz(tmp_path / "d", "s.npz", x, y)
    if fmt == "npy":
        os.makedirs(tmp_path / "d", exist_ok=True)
        np.save(tmp_path / "d" / "x0.npy", x)
        np.save(tmp_path / "d" / "y0.npy", y)
        return str(tmp_path / "d" / "x0.npy")
    if fmt == "hdf5":
        with h5py.File(tmp_path / "s.h5", "w") as f:
            f["x"] = x
            f["y"] = np.array([v.encode() for v in labels], dtype=h5py.string_dtype())
        return str(tmp_path / "s.h5")
    if fmt == "tfrecord":
        writer = tfrecords.Writer(str(tmp_path / "s.tfrecord"))
        for image, label in zip(x, labels):
            writer.write(tfrecords.example(image[..., None], np.array([label])))
        writer.close()
        return str(tmp_path / "s.tfrecord")
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["npz", "npy", "hdf5", "tfrecord"])
@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_an_empty_text_label_is_refused_in_every_format(tmp_path, fmt, blank):
    """Each format's reader, each kind of blank, at a different index each time."""
    from trainer.config import DataConfig
    from trainer.data import formats, images
    from trainer.errors import UserError

    at = {"npz": 3, "npy": 0, "hdf5": 11, "tfrecord": 7}[fmt] + len(blank)
    labels = ["cat" if i % 2 else "dog" for i in range(16)]
    labels[at] = blank
    labels[at + 2] = ""  # a second one is counted, not named
    path = _empty_label_files(tmp_path, fmt, labels)
    with pytest.raises(UserError) as exc:
        formats.reader(fmt)([path], DataConfig(format=fmt), images.ImageSpec())
    assert str(exc.value) == (f"empty label at index {at} (and 1 more), {path}, expected a label "
                              "for every sample")


def test_an_empty_label_ends_the_run_with_one_line(capsys, tmp_path):
    x, label, _ = blob_images(40)
    y = np.where(label == 1, "right", "left")
    y[17] = ""
    path = write_npz(tmp_path / "d", "s.npz", x, y)
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert line == f"error: empty label at index 17, {path}, expected a label for every sample"


# ----------------------------------------------------------------------------------------------
# What operating systems leave in data folders is skipped; files that really do not decode are
# all named in the one line

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00" * 58  # its header
LITTER = {  # each OS's (and tool's) files, as they lie beside the images of a class folder
    "macos": {"._0.png": APPLEDOUBLE, ".DS_Store": b"\x00\x00\x00\x01Bud1",
              "__MACOSX/cls/._1.png": APPLEDOUBLE, ".Trashes/501/x.png": b"gone",
              ".fseventsd/fseventsd-uuid": b"x"},
    "windows": {"Thumbs.db": b"\xd0\xcf\x11\xe0", "desktop.ini": b"[.ShellClassInfo]",
                "~$notes.png": b"lock", "ehthumbs.db": b"\xd0\xcf"},
    "linux": {".directory": b"[Desktop Entry]", ".hidden.png": b"not an image",
              ".Trash-1000/files/2.png": b"gone"},
    "tools": {".ipynb_checkpoints/0-checkpoint.png": b"stale", ".git/objects/ab/cd": b"x"},
}


def _class_folders(root, litter: dict, classes=("a", "b"), n=6) -> None:
    for k, cls in enumerate(classes):
        for i in range(n):
            os.makedirs(root / cls, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 + 70 * k + i, np.uint8)).save(root / cls / f"{i}.png")
        for rel, data in litter.items():  # in every class folder, and at the top
            for folder in (root / cls, root):
                os.makedirs((folder / rel).parent, exist_ok=True)
                (folder / rel).write_bytes(data)


@pytest.mark.parametrize("system", [*LITTER, "all"])
def test_os_litter_in_data_folders_is_skipped(tmp_path, system):
    from trainer import config, storage
    from trainer.data import dataset, images, litter

    files = {k: v for name, kinds in LITTER.items() if system in (name, "all")
             for k, v in kinds.items()}
    _class_folders(tmp_path / "imgs", files)
    cfg = config.from_dict({"data": {"format": "image_folder", "train": str(tmp_path / "imgs")}})
    src = dataset.open_source(cfg, cfg.data.train, "train", images.ImageSpec())
    assert len(src) == 12 and sorted(set(src.labels)) == ["a", "b"]
    assert all(not litter.is_litter(os.path.relpath(f, tmp_path / "imgs"))
               for f in src.shards[0].files)
    # a glob skips them too; a file named on its own is read whatever its name
    found = storage.expand(f"{tmp_path}/imgs/*/*", "data.train", skip=litter.is_litter)
    assert len(found) == 12
    hidden = str(tmp_path / "imgs" / "a" / ".named.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(hidden)
    assert storage.expand(hidden, "data.train", skip=litter.is_litter) == [hidden]


def test_a_mac_copied_image_folder_trains(capsys, tmp_path):
    """Seed 004's shapes folders after a trip through a Mac: an AppleDouble file beside each."""
    from trainer import task

    _class_folders(tmp_path / "shapes", {**LITTER["macos"], **LITTER["windows"]},
                   classes=("circle", "square", "triangle"), n=8)
    for png in list((tmp_path / "shapes").glob("*/[0-9].png")):
        (png.parent / f"._{png.name}").write_bytes(APPLEDOUBLE)
    code = task.train(None, ["name=mac", "model.name=tiny_cnn", "train.epochs=1",
                             "data.format=image_folder", f"data.train={tmp_path}/shapes",
                             "output.saved_model=false", "output.report=false"],
                      str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert (tmp_path / "out" / "mac" / "model.h5").exists()
    assert "classes: circle, square, triangle" in captured.err + captured.out


@pytest.mark.parametrize("bad", [2, 5, 7])
def test_every_undecodable_file_is_named_or_counted(capsys, tmp_path, bad):
    _class_folders(tmp_path / "imgs", {}, n=10)
    broken = [tmp_path / "imgs" / "ab"[i % 2] / f"{i}.png" for i in range(bad)]
    for path in broken:
        path.write_bytes(b"\x89PNG not really")
    line = _run(capsys, tmp_path, "data.format=image_folder", f"data.train={tmp_path}/imgs",
                "data.validation_split=0.1", "data.test_split=0.1")
    names = sorted(str(p) for p in broken)
    assert line.startswith(f"error: {bad} of 20 files cannot be read (at ")
    shown = ", ".join(names[:5]) + (f" and {bad - 5} more" if bad > 5 else "")
    assert f"), {shown}, expected every file to decode" in line

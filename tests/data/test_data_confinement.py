"""Data comes from the data and only from it: regular files only, links confined to the data
folder, HDF5 datasets stored inside their file, compressed npz members bounded by their shape.

Whatever could read without end (`/dev/zero`) or wait without end (a named pipe) runs in a
child process under an address-space limit and a timeout, so a regression fails the test
instead of taking the machine.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
import zlib

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from trainer import storage
from trainer.config import DataConfig
from trainer.data import images, npyfile, readers
from trainer.errors import UserError

from conftest import ROOT, error_line, run_cli


def _limited(code: str, timeout: int = 60) -> str:
    """Run `code` in a fresh interpreter whose address space may grow by 512 MiB at most once
    the package is imported; returns its last line (`error: ...` for a UserError)."""
    modules = [m for m in ("images", "npyfile", "readers") if f"{m}." in code]  # readers: TF
    script = "\n".join([
        "import resource, sys",
        "from trainer import predict, storage",
        "from trainer.config import DataConfig",
        f"from trainer.data import {', '.join(modules)}" if modules else "",
        "from trainer.errors import UserError",
        "with open('/proc/self/status') as f:",
        "    size = next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize:'))",
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2**29, size + 2**29))",
        "try:",
        f"    {code}",
        "    print('read')",
        "except UserError as exc:",
        "    print(f'error: {exc}')",
    ])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _png(path, value=0):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(str(path))


# ----------------------------------------------------------------------------------------------
# Regular files only


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.symlink("/dev/zero", p), "a character device"),
    (lambda p: os.mkfifo(p), "a named pipe"),
    (lambda p: (os.mkfifo(p + ".fifo"), os.symlink(p + ".fifo", p)), "a named pipe"),
])
@pytest.mark.parametrize("read", [
    "storage.read_bytes(PATH)",
    "storage.open_read(PATH).read()",
    "predict.read_image(PATH, (8, 8, 1))",
    "npyfile.open_npz(PATH, ('x',))",
])
def test_only_regular_files_are_read(tmp_path, make, kind, read):
    path = str(tmp_path / ("x.npz" if "npz" in read else "x.png"))
    make(path)
    line = _limited(read.replace("PATH", repr(path)), timeout=30)
    assert line == (f"error: path is {kind}, {path}, expected a regular file (links to devices, "
                    "pipes and sockets are never read)")


def test_a_pipe_named_h5_is_not_opened_by_h5py(tmp_path):
    path = str(tmp_path / "data.h5")
    os.mkfifo(path)
    line = _limited(f"readers.read_hdf5([{path!r}], DataConfig(), None)", timeout=60)
    assert line == (f"error: path is a named pipe, {path}, expected a regular file (links to "
                    "devices, pipes and sockets are never read)")


def test_a_folder_named_like_a_file_is_not_read(tmp_path):
    os.makedirs(tmp_path / "x.png")
    with pytest.raises(UserError) as exc:
        storage.read_bytes(str(tmp_path / "x.png"))
    assert str(exc.value) == f"path is a directory, {tmp_path}/x.png, expected a file"


def test_rows_are_read_from_regular_files_only(tmp_path):
    path = str(tmp_path / "x.npy")
    os.symlink("/dev/zero", path)
    dest = np.empty(64, np.uint8)
    with pytest.raises(UserError, match="path is a character device"):
        storage.read_rows_into(path, np.array([0]), 64, dest, np.array([0]))


def test_a_pipe_named_png_in_an_image_folder_on_the_command_line(tmp_path):
    for i in range(12):
        _png(tmp_path / "data" / ("a" if i % 2 else "b") / f"{i}.png", 20 * i)
    os.mkfifo(tmp_path / "data" / "a" / "stuck.png")
    out = tmp_path / "runs"
    proc = run_cli("--set", "name=bad", "--set", "model.name=tiny_cnn", "--set", "train.epochs=1",
                   "--set", "data.format=image_folder", "--set", f"data.train={tmp_path}/data",
                   "--output_dir", str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_line(proc.stderr) == (
        f"error: path is a named pipe, {tmp_path}/data/a/stuck.png, expected a regular file "
        "(links to devices, pipes and sockets are never read)")
    assert not (out / "bad").exists()


# ----------------------------------------------------------------------------------------------
# Links: followed inside the data folder, refused when they leave it


def test_a_link_to_dev_zero_in_an_image_folder_is_refused_by_name(tmp_path):
    _png(tmp_path / "data" / "a" / "0.png")
    os.symlink("/dev/zero", tmp_path / "data" / "a" / "zero.png")
    line = _limited(f"storage.expand({str(tmp_path / 'data')!r}, 'data.train')")
    assert line == (f"error: link leads out of the data folder, {tmp_path}/data/a/zero.png -> "
                    f"/dev/zero, expected files and links inside {tmp_path}/data "
                    f"(data.train={tmp_path}/data)")


@pytest.mark.parametrize("link, target, inside", [
    ("a/same.png", "0.png", True),                 # a file beside it
    ("b/other.png", "../a/0.png", True),           # a file in another class folder
    ("c", "a", True),                              # a folder link inside the data folder
    ("a/loop", "..", True),                        # a link to an ancestor: no endless walk
    ("a/out.png", "{outside}/1.png", False),       # a file outside
    ("etc", "/etc", False),                        # a folder outside
    ("a/up", "../..", False),                      # the data folder's parent
    ("a/dangling.png", "{outside}/none.png", False),
])
@pytest.mark.parametrize("pattern", ["{data}", "{data}/*/*", "{data}/**"])
def test_links_in_a_data_folder(tmp_path, link, target, inside, pattern):
    data, outside = tmp_path / "data", tmp_path / "outside"
    _png(data / "a" / "0.png")
    _png(outside / "1.png")
    os.makedirs(os.path.dirname(str(data / link)), exist_ok=True)
    os.symlink(target.format(outside=outside), data / link)
    pattern = pattern.format(data=data)
    if inside:
        files = storage.expand(pattern, "data.train")
        assert all(storage.within(f, data) for f in files)
        assert f"{data}/a/0.png" in files
    else:
        try:
            files = storage.expand(pattern, "data.train")
        except UserError as exc:
            assert str(exc).startswith(f"link leads out of the data folder, {data}/"), exc
        else:  # a glob matches files only: what it matched must still be inside
            assert "*" in pattern and all(storage.within(f, data) for f in files), files


@pytest.mark.parametrize("sibling", ["y0.npy", "g0.npy"])
def test_npy_labels_found_beside_x_stay_in_its_folder(tmp_path, sibling):
    data, outside = tmp_path / "data", tmp_path / "outside"
    os.makedirs(data)
    os.makedirs(outside)
    np.save(data / "x0.npy", np.zeros((4, 8, 8), np.float32))
    np.save(data / "y0.npy", np.arange(4))
    np.save(outside / sibling, np.arange(4))
    if (data / sibling).exists():
        os.remove(data / sibling)
    os.symlink(outside / sibling, data / sibling)
    with pytest.raises(UserError) as exc:
        readers.read_npy([str(data / "x0.npy")], DataConfig(), images.ImageSpec((8, 8), 1))
    assert str(exc.value) == (f"link leads out of the data folder, {data}/{sibling} -> "
                              f"{outside}/{sibling}, expected files and links inside {data} "
                              f"(beside {data}/x0.npy)")


def test_a_linked_data_folder_is_read_through_its_link(tmp_path):
    _png(tmp_path / "real" / "a" / "0.png")
    os.symlink(tmp_path / "real", tmp_path / "data")
    assert storage.expand(str(tmp_path / "data"), "data.train") == [f"{tmp_path}/data/a/0.png"]


def test_a_manifest_row_through_a_link_to_root(tmp_path):
    data = tmp_path / "data"
    _png(data / "0.png")
    os.symlink("/", data / "rootlink")
    text = "path,label\n0.png,0\nrootlink/etc/passwd,1\n"
    with pytest.raises(UserError) as exc:
        readers.manifest_rows(str(data / "m.csv"), text, DataConfig())
    assert str(exc.value) == (
        f"path 'rootlink/etc/passwd' leads out of the manifest's folder through a link (to "
        f"/etc/passwd), {data}/m.csv row 2, expected a file inside {data} (links are followed "
        "only within it)")


def test_a_manifest_row_linking_to_dev_zero_on_the_command_line(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        _png(data / f"{i}.png", 40 * i)
    os.symlink("/dev/zero", data / "zero.png")
    manifest = data / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(4))
                        + "zero.png,1\n")
    out = tmp_path / "runs"
    proc = run_cli("--set", "name=bad", "--set", "model.name=tiny_cnn", "--set", "train.epochs=1",
                   "--set", "data.format=csv", "--set", f"data.train={manifest}",
                   "--output_dir", str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_line(proc.stderr) == (
        f"error: path 'zero.png' leads out of the manifest's folder through a link (to "
        f"/dev/zero), {manifest} row 5, expected a file inside {data} (links are followed only "
        "within it)")
    assert not (out / "bad").exists()


@settings(deadline=None, max_examples=25)
@given(st.lists(st.sampled_from(["a", "b", "..", ".", "la", "lb", "lroot", "lup"]),
                min_size=1, max_size=5))
def test_manifest_rows_resolve_inside_the_folder_or_are_refused(tmp_path_factory, parts):
    base = tmp_path_factory.mktemp("m")
    data = base / "data"
    if not data.exists():
        os.makedirs(data / "a" / "b")
        os.symlink("a", data / "la")                # inside
        os.symlink(str(data / "a" / "b"), data / "lb")  # inside, absolute
        os.symlink("/", data / "lroot")             # out
        os.symlink("..", data / "lup")              # out
    value = "/".join(parts) + "/x.png"
    text = f"path,label\n{value},1\n"
    try:
        _, _, files = readers.manifest_rows(str(data / "m.csv"), text, DataConfig())
    except UserError as exc:
        assert f"{data}/m.csv row 1" in str(exc)
        real = os.path.realpath(os.path.join(data, value))
        assert not real.startswith(f"{os.path.realpath(data)}/") or ".." in parts
    else:
        assert os.path.realpath(files[0]).startswith(f"{os.path.realpath(data)}/")


# ----------------------------------------------------------------------------------------------
# data.root: a manifest kept apart from its files (seed 000); paths resolve against the root and
# stay inside it, wherever the CSV lies

ROOTED = [  # (path cell, the file it names below the root, or None: refused)
    ("0.png", "0.png"), ("a/1.png", "a/1.png"), ("./a/../a/1.png", "a/1.png"),
    ("{root}/a/1.png", "a/1.png"), ("{root}/0.png", "0.png"),
    ("../meta/m.csv", None), ("a/../../x.png", None), ("{root}/../x.png", None),
    ("/etc/passwd", None), ("{root}2/x.png", None), ("gs://bucket/data/0.png", None),
]


@pytest.mark.parametrize("csv_at", ["meta", "data", "data/a"])
def test_manifest_paths_resolve_against_data_root(tmp_path, csv_at):
    """The same cells give the same files whether the CSV lies outside the root, at its top or
    below it: the root, not the CSV, decides."""
    root = tmp_path / "data"
    manifest = str(tmp_path / csv_at / "m.csv")
    for value, expected in ROOTED:
        text = f"path,label\n{value.format(root=root)},1\n"
        cfg = DataConfig(format="csv", root=str(root))
        if expected is None:
            with pytest.raises(UserError) as exc:
                readers.manifest_rows(manifest, text, cfg)
            assert str(exc.value) == (
                f"path {value.format(root=root)!r} leaves data.root, {manifest} row 1, expected "
                f"a file inside {root} (paths are relative to data.root)"), value
        else:
            _, _, files = readers.manifest_rows(manifest, text, cfg)
            assert files == [str(root / expected)], value


def test_a_link_out_of_data_root_is_refused(tmp_path):
    root = tmp_path / "data"
    _png(root / "0.png")
    os.symlink("/", root / "up")
    with pytest.raises(UserError, match="leads out of data.root through a link"):
        readers.manifest_rows(str(tmp_path / "m.csv"), "path,label\nup/etc/passwd,1\n",
                              DataConfig(format="csv", root=str(root)))


def test_seed_000_trains_from_a_csv_kept_outside_its_data_folder(tmp_path):
    """One .npy array per sample under data/, the CSV of paths and two targets in notebooks/."""
    data, rng = tmp_path / "data" / "train", np.random.default_rng(0)
    os.makedirs(data)
    rows = ["path,bond,angle"]
    for i in range(30):
        np.save(data / f"s{i}.npy", rng.random((8, 8), np.float32))
        rows.append(f"{'train/' if i % 2 else str(data) + '/'}s{i}.npy,{i / 30},{1 - i / 30}")
    os.makedirs(tmp_path / "notebooks")
    (tmp_path / "notebooks" / "df.csv").write_text("\n".join(rows) + "\n")
    from trainer import task

    overrides = ["name=hex", "task=regression", "model.name=tiny_cnn", "train.epochs=1",
                 "data.format=csv", f"data.train={tmp_path}/notebooks/df.csv",
                 "data.label_columns=[bond, angle]", "output.saved_model=false",
                 "output.report=false"]
    assert task.train(None, overrides, str(tmp_path / "runs")) == 2  # the CSV's folder: left
    assert not (tmp_path / "runs" / "hex").exists()
    assert task.train(None, [*overrides, f"data.root={tmp_path}/data"],
                      str(tmp_path / "runs")) == 0
    assert (tmp_path / "runs" / "hex" / "model.h5").exists()


def test_data_root_on_a_bucket(tmp_path, gcs):
    """A root on the bucket: bare, relative and gs:// cells; CSVs inside and outside the root,
    on the bucket and on this machine."""
    bucket = gcs.client().bucket(gcs.bucket)
    for name in ("0.png", "a/1.png"):
        _png(tmp_path / "imgs" / name, 60)
        bucket.blob(f"data/{name}").upload_from_filename(str(tmp_path / "imgs" / name))
    cells = ["0.png", "a/1.png", gcs.url("data", "a", "1.png"), "./a/../0.png"]
    text = "path,label\n" + "".join(f"{c},{i % 2}\n" for i, c in enumerate(cells))
    (tmp_path / "m.csv").write_text(text)
    for at in ("meta/m.csv", "data/m.csv"):
        bucket.blob(at).upload_from_string(text)
    cfg = DataConfig(format="csv", root=gcs.url("data"))
    for manifest in (gcs.url("meta", "m.csv"), gcs.url("data", "m.csv"), str(tmp_path / "m.csv")):
        shard = readers.read_csv([manifest], cfg, images.ImageSpec())[0]
        assert shard.files == [gcs.url("data", "0.png"), gcs.url("data", "a", "1.png"),
                               gcs.url("data", "a", "1.png"), gcs.url("data", "0.png")]
        assert shard.read(0, 4).shape == (4, 8, 8, 1)
    for cell in ("../x.png", gcs.url("other", "x.png"), "gs://elsewhere/data/0.png",
                 str(tmp_path / "imgs" / "0.png")):
        with pytest.raises(UserError) as exc:
            readers.manifest_rows(gcs.url("meta", "m.csv"), f"path,label\n{cell},1\n", cfg)
        assert str(exc.value).startswith(f"path {cell!r} leaves data.root, ")


# ----------------------------------------------------------------------------------------------
# HDF5: the bytes of a dataset must be in the file


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, make in datasets.items():
            make(f, name)
    return str(path)


def _other(tmp_path) -> str:
    path = str(tmp_path / "other.h5")
    with h5py.File(path, "w") as f:
        f["x"] = np.ones((4, 8, 8), np.float32)
        f["y"] = np.arange(4)
    return path


def _plain_y(f, name):
    f[name] = np.arange(4)


def _plain_x(f, name):
    f[name] = np.ones((4, 8, 8), np.float32)


@pytest.mark.parametrize("key, make, message", [
    ("x", lambda f, n, o: f.create_dataset(n, (4, 8, 8), "u1", external=[("/etc/passwd", 0, 256)]),
     "dataset 'x' has external storage (its bytes are in '/etc/passwd'), {path}, expected "
     "datasets stored inside the file"),
    ("y", lambda f, n, o: f.create_dataset(n, (4,), "u1", external=[("/etc/hostname", 0, 4)]),
     "dataset 'y' has external storage (its bytes are in '/etc/hostname'), {path}, expected "
     "datasets stored inside the file"),
    ("x", lambda f, n, o: f.__setitem__(n, h5py.ExternalLink(o, "/x")),
     "dataset 'x' is an external link ('x' points into another file), {path}, expected datasets "
     "stored inside the file"),
    ("x", lambda f, n, o: (f.__setitem__("ext", h5py.ExternalLink(o, "/")),
                           f.__setitem__(n, h5py.SoftLink("/ext/x"))),
     "dataset 'x' lies in another file, {path}, expected datasets stored inside the file"),
    ("x", lambda f, n, o: _virtual(f, n, o),
     "dataset 'x' is virtual (mapped from other files), {path}, expected datasets stored inside "
     "the file"),
])
def test_hdf5_datasets_stored_elsewhere_are_refused(tmp_path, key, make, message):
    other = _other(tmp_path)
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        make(f, key, other)
        for name, plain in (("x", _plain_x), ("y", _plain_y)):
            if name != key:
                plain(f, name)
    with pytest.raises(UserError) as exc:
        readers.read_hdf5([path], DataConfig(), images.ImageSpec((8, 8), 1))
    assert str(exc.value) == message.format(path=path)


def _virtual(f, name, other):
    layout = h5py.VirtualLayout((4, 8, 8), np.float32)
    layout[:] = h5py.VirtualSource(other, "x", (4, 8, 8))
    f.create_virtual_dataset(name, layout)


def test_an_hdf5_group_dataset_in_another_file_is_refused(tmp_path):
    other = _other(tmp_path)
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        _plain_x(f, "x")
        _plain_y(f, "y")
        f["groups"] = h5py.ExternalLink(other, "/y")
    with pytest.raises(UserError, match="dataset 'groups' is an external link"):
        readers.read_hdf5([path], DataConfig(group_key="groups"), images.ImageSpec((8, 8), 1))


def test_an_hdf5_file_stored_whole_is_read(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        _plain_x(f, "x")
        f["y"] = h5py.SoftLink("/labels")  # a link inside the file is fine
        _plain_y(f, "labels")
    (shard,) = readers.read_hdf5([path], DataConfig(), images.ImageSpec((8, 8), 1))
    assert shard.count == 4


def test_hdf5_external_storage_on_the_command_line(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (8, 8, 8), "u1", external=[("/etc/passwd", 0, 512)])
        f["y"] = np.arange(8) % 2
    out = tmp_path / "runs"
    proc = run_cli("--set", "name=bad", "--set", "model.name=tiny_cnn", "--set", "train.epochs=1",
                   "--set", "data.format=hdf5", "--set", f"data.train={path}",
                   "--output_dir", str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_line(proc.stderr) == (
        f"error: dataset 'x' has external storage (its bytes are in '/etc/passwd'), {path}, "
        "expected datasets stored inside the file")
    assert not (out / "bad").exists()


# ----------------------------------------------------------------------------------------------
# A compressed npz member is never decompressed past its declared size


def _bomb_npz(path, shape, dtype="<f4", zeros: int = 0) -> str:
    """An npz whose deflated member `x.npy` has a header declaring `shape`, followed by `zeros`
    bytes of zeros (16 MiB blocks compressed once and repeated: a full flush resets the
    compressor, so each block compresses alike), and an array `y`. Written by hand: the zip
    module would compress every byte again."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    block, blocks = 1 << 24, zeros >> 24
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    first = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = first + chunk * blocks + compressor.flush()
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(bytes(block), crc)
    size = len(header) + blocks * block
    assert size < zipfile.ZIP64_LIMIT  # no zip64 records needed
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(4))
    with zipfile.ZipFile(path) as archive:
        y = archive.infolist()[0]
    raw = open(path, "rb").read()
    y_end = y.header_offset + 30 + len(y.filename) + len(y.extra) + y.compress_size
    name = b"x.npy"
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(data),
                        size, len(name), 0) + name
    central = [
        struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, y.CRC,
                    y.compress_size, y.file_size, 5, 0, 0, 0, 0, 0o600 << 16, 0) + b"y.npy",
        struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 0x21, crc, len(data),
                    size, len(name), 0, 0, 0, 0, 0o600 << 16, y_end) + name,
    ]
    with open(path, "wb") as f:
        f.write(raw[:y_end] + local + data)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, f.tell() - start, start, 0))
    return path


def test_a_small_array_over_a_gigabyte_of_zeros_is_refused_unread(tmp_path):
    path = _bomb_npz(str(tmp_path / "bomb.npz"), (4, 8, 8), zeros=3 << 29)
    assert os.path.getsize(path) < 20 << 20
    line = _limited(f"npyfile.open_npz({path!r}, ('x', 'y'))")
    assert line == (f"error: member holds more than its declared shape (4, 8, 8) of float32, "
                    f"{path}[x], expected a .npy array of exactly that size")


def test_a_declared_shape_larger_than_memory_is_refused_before_decompressing(tmp_path):
    path = _bomb_npz(str(tmp_path / "big.npz"), (1 << 20, 64, 64), zeros=1 << 24)
    line = _limited(f"npyfile.open_npz({path!r}, ('x', 'y'))")
    assert line.startswith("error: array of shape (1048576, 64, 64) and float32 needs "
                           f"17179869184 bytes (16 GiB), {path}[x], expected at most the "), line


def test_predict_reads_a_bomb_shard_no_further(tmp_path):
    path = _bomb_npz(str(tmp_path / "bomb.npz"), (4, 8, 8, 1), zeros=3 << 29)
    line = _limited(f"list(predict.read_shard({path!r}, (8, 8, 1)))")
    assert line.startswith("error: member holds more than its declared shape"), line


@pytest.mark.parametrize("stored, declared", [((4, 8, 8), (4, 8, 8)), ((3, 8, 8), (4, 8, 8))])
def test_compressed_members_of_the_declared_size_only(tmp_path, stored, declared):
    path = str(tmp_path / "c.npz")
    np.savez_compressed(path, x=np.ones(stored, np.float32), y=np.arange(4))
    if stored == declared:
        arrays = npyfile.open_npz(path, ("x", "y"))
        assert arrays["x"].load().shape == declared
        return
    # a header claiming more rows than the member holds
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("x.npy")
    raw = raw.replace(b"(3, 8, 8)", b"(4, 8, 8)")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", raw)
        archive.writestr("y.npy", b"")
    with pytest.raises(UserError, match=r"array is truncated \(768 of 1024 bytes\)"):
        npyfile.open_npz(path, ("x",))

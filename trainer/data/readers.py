"""One reader per `data.format`: files in, `Shard`s out (counts, labels, and lazy image reads).

Each reader checks what only it can see (missing arrays or columns, x/y length mismatch, an
undecodable file) and names the offending file. Where a format can carry a per-sample group
(`data.group_key`), the reader takes it with the labels when the file has one. Images are never
loaded here: a shard reads its rows when the pipeline asks, so a data set larger than memory is
fine. Each reader is named by its entry in `formats.FORMATS`, so adding a format is one function
here and one entry there.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import posixpath
from typing import Optional

import h5py
import numpy as np

from trainer import storage
from trainer.storage import hdf5
from trainer.config import DataConfig
from trainer.data import images, tfrecords
from trainer.data.labels import is_number
from trainer.data.npyfile import NpyArray, array_from_bytes, npz_names, open_npy, open_npz
from trainer.data.source import Shard, group_names, texts
from trainer.errors import UserError
from trainer.runtime import memory

def _pair(x: NpyArray, y: NpyArray, where: str, group: Optional[NpyArray] = None) -> Shard:
    if not x.shape:
        raise UserError(f"x is a single value, {where}, expected an array of samples "
                        "(N, H, W[, C])")
    if x.shape[0] != (y.shape[0] if y.shape else 1):
        raise UserError(f"x has {x.shape[0]} samples but y has {y.shape[0] if y.shape else 1}, "
                        f"{where}, expected the same number")
    groups = None if group is None else group_names(group.load(), x.shape[0], group.path)
    return Shard(where, x.shape[0], x.shape[1:], x.dtype, y.load(), x.reader(),
                 seekable=x.whole is None, groups=groups)


def read_npz(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """Arrays `data.x_key` and `data.y_key` (`x`, `y`), or, in Keras's layout (`mnist.npz`),
    `x_train` and `y_train` (`npz_test_split` gives `x_test` and `y_test`)."""
    keys, train = (data.x_key, data.y_key), keras_keys(data, "train")
    shards = []
    for path in paths:
        arrays = open_npz(path, keys, optional=(data.group_key,), instead=train)
        x, y = keys if all(k in arrays for k in keys) else train
        shards.append(_pair(arrays[x], arrays[y], path, arrays.get(data.group_key)))
    return shards


def keras_keys(data: DataConfig, split: str) -> tuple[str, str]:
    """The arrays of `split` in Keras's npz layout: `x_train`, `y_train` (`data.x_key`_train)."""
    return f"{data.x_key}_{split}", f"{data.y_key}_{split}"


def npz_test_split(paths: list[str], data: DataConfig, spec: images.ImageSpec
                   ) -> Optional[list[Shard]]:
    """The test arrays of npz files in Keras's layout (`x_train`, `y_train`, `x_test`, `y_test`
    and no `x`, `y`), as shards; None when the files are not all in that layout."""
    wanted = {*keras_keys(data, "train"), *keras_keys(data, "test")}
    for path in paths:
        names = npz_names(path)
        if not wanted <= names or {data.x_key, data.y_key} <= names:
            return None
    x, y = keras_keys(data, "test")
    return read_npz(paths, dataclasses.replace(data, x_key=x, y_key=y), spec)


def _sibling(path: str, name: str) -> str:
    join, split = (posixpath.join, posixpath.split) if "://" in path else (os.path.join, os.path.split)
    return join(split(path)[0], name)


def read_npy(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """Paired `x*.npy` / `y*.npy` files: each x file's partner has the same name with `y` first.

    A `g*.npy` file of the same name, when present, holds the samples' groups.
    """
    x_paths = [p for p in paths if posixpath.basename(p).startswith("x") and p.endswith(".npy")]
    if not x_paths:
        raise UserError(f"no x*.npy file among {len(paths)} matched, {paths[0]}, "
                        "expected paired x*.npy and y*.npy files")
    shards = []
    for x_path in x_paths:
        y_path = _sibling(x_path, "y" + posixpath.basename(x_path)[1:])
        if not storage.exists(y_path):
            raise UserError(f"no labels for {x_path}, {y_path} is missing, expected a y*.npy "
                            "file beside each x*.npy file")
        g_path = _sibling(x_path, "g" + posixpath.basename(x_path)[1:])
        for sibling in (y_path, g_path):  # found beside x, not listed: confined to x's folder
            if storage.exists(sibling):
                storage.confine(sibling, _sibling(x_path, ""), f" (beside {x_path})")
        group = open_npy(g_path) if storage.exists(g_path) else None
        shards.append(_pair(open_npy(x_path), open_npy(y_path), x_path, group))
    return shards


def read_hdf5(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """Named datasets `data.x_key` / `data.y_key`; images are sliced lazily from the file."""
    shards = []
    for path in paths:
        storage.check_regular(path)
        try:
            handle = h5py.File(path if storage.is_local(path) else storage.open_read(path), "r")
        except OSError as exc:
            raise UserError(f"cannot open HDF5 file ({str(exc).splitlines()[0]}), {path}, expected "
                            "an HDF5 file") from None
        hdf5.check_inside(handle, path, (data.x_key, data.y_key, data.group_key))
        for key in (data.x_key, data.y_key):
            if not isinstance(handle.get(key), h5py.Dataset):
                raise UserError(f"dataset {key!r} missing, {path}, expected datasets "
                                f"{data.x_key!r} and {data.y_key!r} (found: "
                                f"{', '.join(handle.keys()) or 'none'}; see data.x_key, data.y_key)")
        x, y = handle[data.x_key], handle[data.y_key]
        if x.dtype.kind not in "iufb":
            raise UserError(f"dataset {data.x_key!r} of dtype {x.dtype}, {path}, expected numbers")
        if not x.shape:
            raise UserError(f"dataset {data.x_key!r} is a single value, {path}, expected an array "
                            "of samples (N, H, W[, C])")
        if x.shape[0] != (y.shape[0] if y.shape else 1):  # before y is read: sizes are declared
            raise UserError(f"x has {x.shape[0]} samples but y has {y.shape[0] if y.shape else 1}, "
                            f"{path}, expected the same number")
        memory.check_fits(y.size * y.dtype.itemsize,
                          f"dataset {data.y_key!r} of shape {y.shape} and {y.dtype}", path)
        try:
            labels = y[()]
        except OSError as exc:
            raise UserError(f"cannot read dataset {data.y_key!r} ({exc}), {path}, expected an intact "
                            "HDF5 file") from None
        if labels.dtype.kind in "SO":  # bytes, as UTF-8: h5py's own conversion is ASCII
            labels = texts(labels.reshape(-1), f"{path}[{data.y_key}]",
                           "labels").reshape(labels.shape)

        def read(a: int, b: int, x=x, path=path) -> np.ndarray:
            try:
                return x[a:b]
            except OSError as exc:
                raise UserError(f"cannot read rows {a}..{b} of {data.x_key!r} ({exc}), {path}, "
                                "expected an intact HDF5 file") from None
        group = handle.get(data.group_key)
        groups = (group_names(group[()], len(x), f"{path}[{data.group_key}]")
                  if isinstance(group, h5py.Dataset) else None)
        shards.append(Shard(path, len(x), tuple(x.shape[1:]), x.dtype, labels, read, groups=groups))
    return shards


def _file_shard(files: list[str], labels: np.ndarray, spec: images.ImageSpec, where: str) -> Shard:
    """Samples stored one per file (images, or single `.npy` arrays as in seed 000).

    Images of another size than the first (or than `data.image_size`) are resized; each such
    file is noted in the shard's `resized` as it is read, so the log and datacheck can say how
    many were resized and from what sizes.
    """
    resized: dict[int, tuple[int, int]] = {}

    def load(i: int, spec: images.ImageSpec) -> np.ndarray:
        path = files[i]
        if path.lower().endswith(".npy"):
            a = array_from_bytes(storage.read_bytes(path, what="an array"), path)
            if a.dtype.kind not in "biuf":
                raise UserError(f"array of dtype {a.dtype}, {path}, expected a numeric .npy array")
            return (a[..., np.newaxis] if a.ndim == 2 else a).astype(np.float32)
        img = images.open_image(storage.read_bytes(path, what="an image"), path)
        size = (img.height, img.width)
        if spec.size is not None and size != tuple(spec.size):
            resized[i] = size  # one entry per file: re-reads in later epochs do not add
        return images.to_array(img, spec, path)

    def checked(i: int, spec: images.ImageSpec) -> np.ndarray:
        try:
            return load(i, spec)
        except UserError as exc:  # name every file that fails, not only the first met
            _all_unreadable(files, i, exc, lambda j: load(j, spec))

    first = checked(0, spec)
    spec = spec.settle(first)

    def read(a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, *first.shape), np.float32)
        for i in range(a, b):
            img = checked(i, spec)
            if img.shape != first.shape:
                raise UserError(f"array of shape {img.shape}, {files[i]}, expected {first.shape} "
                                f"like {files[0]}")
            out[i - a] = img
        return out
    images_only = not any(p.lower().endswith(".npy") for p in files)
    return Shard(where, len(files), first.shape, np.dtype(np.float32), labels, read,
                 channels="last" if images_only else None, resized=resized if images_only else None,
                 files=list(files))


SHOWN = 5  # files named in one error line; the rest are counted


def _all_unreadable(files: list[str], bad: int, exc: UserError, load) -> None:
    """Raise `exc` for file `bad`, or, when other files of the list cannot be read either (each
    is tried now, on this failure only), one line naming the first few and counting them all, so
    one run finds every file to fix."""
    failed = [bad]
    for j in range(len(files)):
        if j != bad:
            try:
                load(j)
            except UserError:
                failed.append(j)
    if len(failed) == 1:
        raise exc
    failed.sort()
    names = ", ".join(files[j] for j in failed[:SHOWN])
    more = f" and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
    first = str(exc).split(f", {files[bad]}")[0][:300]  # what went wrong, without the path
    raise UserError(f"{len(failed)} of {len(files)} files cannot be read (at {files[bad]}: "
                    f"{first}), {names}{more}, expected every file to decode as a PNG, JPEG or "
                    "TIFF image (or a numeric .npy array)") from None


def read_image_folder(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """One sub-directory per class (seeds 001 and 004); the class is the file's folder name."""
    files = [p for p in paths if images.is_image(p)]
    if not files:
        raise UserError(f"no PNG, JPEG or TIFF files among {len(paths)} matched, {paths[0]}, "
                        "expected one sub-directory per class holding images")
    labels = np.array([posixpath.basename(posixpath.dirname(p.replace(os.sep, "/"))) for p in files])
    return [_file_shard(files, labels, spec, posixpath.dirname(posixpath.dirname(files[0])))]


def _column_values(values: list[str]) -> np.ndarray:
    """CSV cells as integers, else numbers, else strings (so '10' sorts after '9')."""
    for kind in (int, float):
        try:
            return np.array([kind(v) for v in values])
        except ValueError:
            continue
    return np.array(values)


def _inside(manifest: str, row: int, value: str, root: Optional[str] = None) -> str:
    """The file a manifest row names, resolved against `root` (`data.root`) when given, else the
    manifest's folder, and refused when it leaves that folder (`../../etc/passwd`, an absolute
    path or a URL elsewhere): the folder paths resolve against is the folder they stay in."""
    where = f"{manifest} row {row}"
    if root:
        base, shown, rule, place = root, root, "data.root", "data.root"
    else:
        base, rule, place = manifest, "the manifest", "the manifest's folder"
        shown = os.path.dirname(manifest) or "."
    if not value.strip() or "\x00" in value:
        raise UserError(f"empty or malformed path {value[:100]!r}, {where}, expected a file path "
                        f"relative to {place}")
    if "://" in base:  # gs://bucket/folder: compare the paths after the scheme
        scheme, _, rest = base.partition("://")
        folder = posixpath.normpath(rest) if root else posixpath.dirname(posixpath.normpath(rest))
        kind, sep, target = value.partition("://")
        if sep:
            resolved = posixpath.normpath(target) if kind == scheme else None
        else:
            resolved = posixpath.normpath(posixpath.join(folder, value))
        file = f"{scheme}://{resolved}"
    else:
        folder = os.path.abspath(base) if root else os.path.dirname(os.path.abspath(base))
        resolved = None if "://" in value else os.path.normpath(os.path.join(folder, value))
        file = resolved
    if resolved is None or not resolved.startswith(folder.rstrip("/") + "/"):
        raise UserError(f"path {value[:200]!r} leaves {place}, {where}, expected a file inside "
                        f"{shown} (paths are relative to {rule})")
    if not storage.within(file, folder):  # through a link: the text alone is no confinement
        raise UserError(f"path {value[:200]!r} leads out of {place} through a link "
                        f"(to {os.path.realpath(file)}), {where}, expected a file inside "
                        f"{os.path.realpath(folder)} (links are followed only within it)")
    return file


def manifest_rows(path: str, text: str,
                  data: DataConfig) -> tuple[list[dict], list[str], list[str]]:
    """A CSV manifest's rows, its columns and the file of each row, confined to its folder (or
    to `data.root`, when set).

    Every row has exactly the header's cells, and every label cell a value: a spreadsheet's
    stray cell or gap is refused, not read as a shifted or empty label.
    """
    if not data.label_columns:
        raise UserError(f"no label columns (data.label_columns is empty), {path}, expected the "
                        "name of at least one column of labels or targets")
    try:  # a spreadsheet's UTF-8 byte order mark is not part of the first column's name
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
        rows, columns = list(reader), reader.fieldnames or []
    except csv.Error as exc:
        raise UserError(f"malformed CSV ({exc}), {path} line {reader.line_num + 1}, expected a "
                        "manifest of paths and labels") from None
    twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if twice is not None:
        raise UserError(f"column {twice[:100]!r} appears twice in the header, {path}, expected "
                        "distinct column names")
    for col in (data.path_column, *data.label_columns):
        if col not in columns:
            key = "data.path_column" if col == data.path_column else "data.label_columns"
            raise UserError(f"column {col!r} not found ({key}), {path}, expected one of: "
                            f"{', '.join(map(str, columns)) or 'no columns'}")
    if not rows:
        raise UserError(f"no rows, {path}, expected one row per sample")
    for i, r in enumerate(rows, 1):
        missing = [c for c in columns if r.get(c) is None]
        if missing:
            raise UserError(f"row has no {missing[0][:100]!r} cell, {path} row {i}, expected "
                            f"{len(columns)} cells like the header")
        if None in r:  # csv.DictReader's key for the cells past the header's
            raise UserError(f"row has {len(columns) + len(r[None])} cells, {path} row {i}, "
                            f"expected {len(columns)} cells like the header")
        empty = next((c for c in data.label_columns if not r[c].strip()), None)
        if empty is not None:
            raise UserError(f"empty {empty[:100]!r} cell, {path} row {i}, expected a label in "
                            "every row")
    files = [_inside(path, i, r[data.path_column], data.root) for i, r in enumerate(rows, 1)]
    return rows, columns, files


def read_csv(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """A manifest of file paths (relative to the CSV, inside its folder, or to `data.root`) and
    label columns."""
    shards = []
    for path in paths:
        rows, columns, files = manifest_rows(path, storage.read_text(path), data)
        cols = [_column_values([r[c] for r in rows]) for c in data.label_columns]
        for c, values in zip(data.label_columns, cols):
            if len(cols) > 1 and values.dtype.kind not in "iuf":
                i, cell = next((i, r[c]) for i, r in enumerate(rows, 1) if not is_number(r[c]))
                raise UserError(f"cell {cell[:100]!r} in column {c[:100]!r} is not a number, "
                                f"{path} row {i}, expected numbers in every target column "
                                "(data.label_columns names several)")
        labels = cols[0] if len(cols) == 1 else np.stack(cols, axis=1).astype(np.float64)
        shards.append(_file_shard(files, labels, spec, path))
        if data.group_key in columns:  # raw cells: group "007" stays "007"
            shards[-1].groups = group_names(np.array([r.get(data.group_key) or "" for r in rows]),
                                            len(rows), f"{path} column {data.group_key!r}")
        spec = images.ImageSpec(shards[0].sample_shape[:2], shards[0].sample_shape[2])
    return shards


def read_tfrecord(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    shards = []
    for path in paths:
        shards.append(tfrecords.open_shard(path, spec, data.group_key))
        if len(shards[0].sample_shape) == 3:  # PNG records after the first match its size
            spec = images.ImageSpec(shards[0].sample_shape[:2], shards[0].sample_shape[2])
    return shards

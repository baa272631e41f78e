"""One reader per `data.format`: files in, `Shard`s out (counts, labels, and lazy image reads).

Each reader checks what only it can see (missing arrays or columns, x/y length mismatch, an
undecodable file) and names the offending file. Images are never loaded here: a shard reads its
rows when the pipeline asks, so a data set larger than memory is fine. Readers are registered in
`READERS`, so adding a format is one function here.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from typing import Callable

import h5py
import numpy as np

from trainer import storage
from trainer.config import DataConfig
from trainer.data import images, tfrecords
from trainer.data.npyfile import NpyArray, open_npy, open_npz
from trainer.data.source import Shard
from trainer.errors import UserError

Reader = Callable[[list[str], DataConfig, images.ImageSpec], list[Shard]]


def _pair(x: NpyArray, y: NpyArray, where: str) -> Shard:
    if x.shape[0] != (y.shape[0] if y.shape else 1):
        raise UserError(f"x has {x.shape[0]} samples but y has {y.shape[0] if y.shape else 1}, "
                        f"{where}, expected the same number")
    return Shard(where, x.shape[0], x.shape[1:], x.dtype, y.load(), x.reader(),
                 seekable=x.whole is None)


def read_npz(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    shards = []
    for path in paths:
        arrays = open_npz(path, ("x", "y"))
        shards.append(_pair(arrays["x"], arrays["y"], path))
    return shards


def _sibling(path: str, name: str) -> str:
    join, split = (posixpath.join, posixpath.split) if "://" in path else (os.path.join, os.path.split)
    return join(split(path)[0], name)


def read_npy(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """Paired `x*.npy` / `y*.npy` files: each x file's partner has the same name with `y` first."""
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
        shards.append(_pair(open_npy(x_path), open_npy(y_path), x_path))
    return shards


def read_hdf5(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """Named datasets `data.x_key` / `data.y_key`; images are sliced lazily from the file."""
    shards = []
    for path in paths:
        try:
            handle = h5py.File(path if storage.is_local(path) else storage.open_read(path), "r")
        except OSError as exc:
            raise UserError(f"cannot open HDF5 file ({str(exc).splitlines()[0]}), {path}, expected "
                            "an HDF5 file") from None
        for key in (data.x_key, data.y_key):
            if not isinstance(handle.get(key), h5py.Dataset):
                raise UserError(f"dataset {key!r} missing, {path}, expected datasets "
                                f"{data.x_key!r} and {data.y_key!r} (found: "
                                f"{', '.join(handle.keys()) or 'none'}; see data.x_key, data.y_key)")
        x, y = handle[data.x_key], handle[data.y_key]
        if x.dtype.kind not in "iufb":
            raise UserError(f"dataset {data.x_key!r} of dtype {x.dtype}, {path}, expected numbers")
        try:
            labels = y[()]
        except OSError as exc:
            raise UserError(f"cannot read dataset {data.y_key!r} ({exc}), {path}, expected an intact "
                            "HDF5 file") from None
        if labels.dtype.kind in "SO":
            labels = labels.astype(str)
        if len(x) != len(labels):
            raise UserError(f"x has {len(x)} samples but y has {len(labels)}, {path}, expected the "
                            "same number")

        def read(a: int, b: int, x=x, path=path) -> np.ndarray:
            try:
                return x[a:b]
            except OSError as exc:
                raise UserError(f"cannot read rows {a}..{b} of {data.x_key!r} ({exc}), {path}, "
                                "expected an intact HDF5 file") from None
        shards.append(Shard(path, len(x), tuple(x.shape[1:]), x.dtype, labels, read))
    return shards


def _file_shard(files: list[str], labels: np.ndarray, spec: images.ImageSpec, where: str) -> Shard:
    """Samples stored one per file (images, or single `.npy` arrays as in seed 000)."""

    def load(path: str, spec: images.ImageSpec) -> np.ndarray:
        if path.lower().endswith(".npy"):
            try:
                a = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
            except ValueError as exc:
                raise UserError(f"cannot read array ({exc}), {path}, expected a numeric .npy array "
                                "(pickled objects are refused)") from None
            return (a[..., np.newaxis] if a.ndim == 2 else a).astype(np.float32)
        return images.decode(storage.read_bytes(path), spec, path)

    first = load(files[0], spec)
    spec = spec.settle(first)

    def read(a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, *first.shape), np.float32)
        for i, path in enumerate(files[a:b]):
            img = load(path, spec)
            if img.shape != first.shape:
                raise UserError(f"array of shape {img.shape}, {path}, expected {first.shape} like "
                                f"{files[0]}")
            out[i] = img
        return out
    return Shard(where, len(files), first.shape, np.dtype(np.float32), labels, read)


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


def read_csv(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    """A manifest of file paths (relative to the CSV) and one or more label columns."""
    shards = []
    for path in paths:
        reader = csv.DictReader(io.StringIO(storage.read_text(path)))
        rows, columns = list(reader), reader.fieldnames or []
        for col in (data.path_column, *data.label_columns):
            if col not in columns:
                key = "data.path_column" if col == data.path_column else "data.label_columns"
                raise UserError(f"column {col!r} not found ({key}), {path}, expected one of: "
                                f"{', '.join(columns) or 'no columns'}")
        if not rows:
            raise UserError(f"no rows, {path}, expected one row per sample")
        files = [v if "://" in v or os.path.isabs(v) else _sibling(path, v)
                 for v in (r[data.path_column] for r in rows)]
        cols = [_column_values([r[c] for r in rows]) for c in data.label_columns]
        labels = cols[0] if len(cols) == 1 else np.stack(cols, axis=1).astype(np.float64)
        shards.append(_file_shard(files, labels, spec, path))
        spec = images.ImageSpec(shards[0].sample_shape[:2], shards[0].sample_shape[2])
    return shards


def read_tfrecord(paths: list[str], data: DataConfig, spec: images.ImageSpec) -> list[Shard]:
    shards = []
    for path in paths:
        shards.append(tfrecords.open_shard(path, spec))
        if len(shards[0].sample_shape) == 3:  # PNG records after the first match its size
            spec = images.ImageSpec(shards[0].sample_shape[:2], shards[0].sample_shape[2])
    return shards


READERS: dict[str, Reader] = {"npz": read_npz, "npy": read_npy, "hdf5": read_hdf5,
                              "image_folder": read_image_folder, "csv": read_csv,
                              "tfrecord": read_tfrecord}

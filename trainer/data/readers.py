"""One reader per `data.format`: paths in, (images, labels) arrays out.

Each reader checks what only it can see (missing arrays, x/y length mismatch, a shard whose image
shape differs from the first) and names the offending file. Readers are registered in `READERS`,
so adding a format is one function here.
"""

from __future__ import annotations

import io
import os
import posixpath
from typing import Callable

import numpy as np

from trainer import storage
from trainer.errors import UserError

Reader = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def _load_npy(path: str) -> np.ndarray:
    try:
        if storage.is_local(path):
            return np.load(path, allow_pickle=False)
        return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    except ValueError as exc:
        raise UserError(f"cannot read array ({exc}), {path}, expected a numeric .npy array "
                        "(pickled objects are refused)") from None


def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        source = path if storage.is_local(path) else io.BytesIO(storage.read_bytes(path))
        with np.load(source, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise UserError(f"array {missing[0]!r} missing, {path}, expected arrays 'x' and 'y' "
                                f"(found: {', '.join(archive.files) or 'none'})")
            return archive["x"], archive["y"]
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"cannot read npz ({exc}), {path}, expected a .npz archive of arrays "
                        "'x' and 'y'") from None


def _concat(parts: list[tuple[np.ndarray, np.ndarray, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Join shards after checking each against the first."""
    first_x, first_y, first_path = parts[0]
    for x, y, path in parts:
        if len(x) != len(y):
            raise UserError(f"x has {len(x)} samples but y has {len(y)}, {path}, "
                            "expected the same number")
        if x.ndim not in (3, 4):
            raise UserError(f"x has shape {x.shape}, {path}, expected images (N, H, W) or (N, H, W, C)")
        if x.shape[1:] != first_x.shape[1:]:
            raise UserError(f"images of shape {x.shape[1:]}, {path}, expected {first_x.shape[1:]} "
                            f"as in {first_path}")
        if y.shape[1:] != first_y.shape[1:]:
            raise UserError(f"labels of shape {y.shape[1:]}, {path}, expected {first_y.shape[1:]} "
                            f"as in {first_path}")
    if len(parts) == 1:
        return first_x, first_y
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def read_npz(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _concat([(*_load_npz(p), p) for p in paths])


def _y_partner(x_path: str) -> str:
    head, name = posixpath.split(x_path) if "://" in x_path else os.path.split(x_path)
    return (posixpath.join if "://" in x_path else os.path.join)(head, "y" + name[1:])


def read_npy(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Paired `x*.npy` / `y*.npy` files: each x file's partner has the same name with `y` first."""
    x_paths = [p for p in paths if os.path.basename(p).startswith("x") and p.endswith(".npy")]
    if not x_paths:
        raise UserError(f"no x*.npy file among {len(paths)} matched, {paths[0]}, "
                        "expected paired x*.npy and y*.npy files")
    parts = []
    for x_path in x_paths:
        y_path = _y_partner(x_path)
        if not storage.exists(y_path):
            raise UserError(f"no labels for {x_path}, {y_path} is missing, expected a y*.npy "
                            "file beside each x*.npy file")
        parts.append((_load_npy(x_path), _load_npy(y_path), x_path))
    return _concat(parts)


READERS: dict[str, Reader] = {"npz": read_npz, "npy": read_npy}

"""The one file layer: local paths, `gs://` URLs and Vertex AI's `/gcs/` mount through fsspec.

Nothing else in the package touches fsspec or checks for `gs://`. Writes are never streamed into
their final name: a file is finished locally, then copied whole (`put_file`), so an interruption
leaves either the old object or the new one, never a truncated one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterable, Union

import fsspec

from trainer import environment
from trainer.errors import UserError

GCS_MOUNT = "/gcs/"


def normalize(path: str) -> str:
    """Map `/gcs/BUCKET/...` to `gs://BUCKET/...` where the Cloud Storage FUSE mount is absent."""
    path = os.fspath(path)
    if path.startswith(GCS_MOUNT) and not os.path.isdir(GCS_MOUNT):
        return "gs://" + path[len(GCS_MOUNT):]
    return path


def is_local(path: str) -> bool:
    return "://" not in normalize(path) or normalize(path).startswith("file://")


def _fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    path = normalize(path)
    protocol = path.split("://", 1)[0] if "://" in path else "file"
    return fsspec.core.url_to_fs(path, **environment.storage_options(protocol))


def join(base: str, *parts: str) -> str:
    base = normalize(base)
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return fs.exists(p)


def read_bytes(path: str) -> bytes:
    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"file not found, {path}, expected an existing file") from None
    except IsADirectoryError:
        raise UserError(f"path is a directory, {path}, expected a file") from None


def read_text(path: str) -> str:
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"file is not UTF-8 text, {path}, expected a text file") from None


def open_read(path: str):
    """A readable binary file object; local files are opened directly (no copy)."""
    fs, p = _fs(path)
    try:
        return fs.open(p, "rb")
    except FileNotFoundError:
        raise UserError(f"file not found, {path}, expected an existing file") from None


def expand(patterns: Union[str, Iterable[str]], what: str) -> list[str]:
    """Resolve paths and globs to a sorted list of files; each pattern must match something."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        fs, p = _fs(pattern)
        if any(ch in p for ch in "*?["):
            matches = sorted(m for m in fs.glob(p) if fs.isfile(m))
        elif fs.isdir(p):
            matches = sorted(m for m in fs.find(p))
        elif fs.exists(p):
            matches = [p]
        else:
            matches = []
        if not matches:
            raise UserError(f"no files found, {what}={pattern}, expected an existing path or glob")
        found.extend(_unstrip(pattern, m) for m in matches)
    return found


def _unstrip(pattern: str, match: str) -> str:
    """fsspec drops the protocol from matches; put it back so the path opens anywhere."""
    norm = normalize(pattern)
    if "://" in norm and not norm.startswith("file://"):
        return norm.split("://", 1)[0] + "://" + match
    return match


def makedirs(path: str) -> None:
    fs, p = _fs(path)
    fs.makedirs(p, exist_ok=True)


def put_file(local_path: str, dest: str) -> None:
    """Copy a finished local file to `dest` whole; readers never see a partial file."""
    dest = normalize(dest)
    if is_local(dest):
        dest = dest.removeprefix("file://")
        if os.path.abspath(local_path) == os.path.abspath(dest):
            return
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(os.path.abspath(dest)))
        os.close(fd)
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, p = _fs(dest)
    fs.put_file(local_path, p)


def get_file(src: str, local_path: str) -> None:
    fs, p = _fs(src)
    try:
        fs.get_file(p, local_path)
    except FileNotFoundError:
        raise UserError(f"file not found, {src}, expected an existing file") from None


def remove(path: str) -> None:
    """Delete a file; a file that is already gone is fine."""
    fs, p = _fs(path)
    try:
        fs.rm_file(p)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it; a folder that is already gone is fine."""
    fs, p = _fs(path)
    try:
        fs.rm(p, recursive=True)
    except FileNotFoundError:
        pass

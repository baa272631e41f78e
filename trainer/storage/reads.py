"""Reads: a whole file within its bound, an open file whose remote reads end in one clear error,
a download, and rows copied from a file straight into a buffer (`read_rows_into`)."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

import numpy as np

from trainer.errors import UserError
from trainer.storage.faults import fetching, unavailable
from trainer.storage.guards import (READ_LIMIT, TEXT_LIMIT, check_size, open_regular, read_bound,
                                    size_text)
from trainer.storage.paths import call_options, filesystem, is_local


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    with unavailable("looking up", path):
        return fs.exists(p, **call_options(fs))


def read_bytes(path: str, limit: int = READ_LIMIT, what: str = "a file read whole") -> bytes:
    """A whole file, refused when over `limit` (or the memory there is): a local file by its
    size before a byte is read, a remote one after at most one byte more than the bound."""
    if is_local(path):
        with os.fdopen(open_regular(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            check_size(path, size, limit, what)
            data = f.read(size)  # no more than was checked, should the file grow meanwhile
            if f.read(1):
                raise UserError(f"file grew while it was read, {path}, expected a finished file")
            return data
    fs, p = filesystem(path)
    bound, why = read_bound(limit, what)
    try:
        with fetching("reading", path):
            try:
                data = fs.cat_file(p, start=0, end=bound + 1, **call_options(fs))
            except Exception as exc:  # noqa: BLE001 - one answer is handled, others re-raised
                if getattr(exc, "code", None) != 416:
                    raise
                data = b""  # an empty object has no byte 0 to range over (HTTP 416)
    except IsADirectoryError:
        raise UserError(f"path is a directory, {path}, expected a file") from None
    if len(data) > bound:
        raise UserError(f"file too large (more than {size_text(bound)}), {path}, expected at "
                        f"most {size_text(bound)} for {why}")
    return data


def read_text(path: str, limit: int = TEXT_LIMIT, what: str = "a text file") -> str:
    try:
        return read_bytes(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"file is not UTF-8 text, {path}, expected a text file") from None


def open_read(path: str):
    """A readable binary file object; local files are opened directly (no copy), and only
    when they are regular files."""
    if is_local(path):
        return os.fdopen(open_regular(path), "rb")
    fs, p = filesystem(path)
    with fetching("opening", path):
        f = fs.open(p, "rb")
    return _RemoteFile(f, path)


class _RemoteFile:
    """A remote file whose reads end in `StorageUnavailable` once the library's retries are spent
    (the readers that hold files open, h5py and PyAV among them, see only a file object)."""

    def __init__(self, f, path: str):
        self._f, self._path = f, path

    def read(self, *args):
        with unavailable("reading", self._path):
            return self._f.read(*args)

    def readinto(self, buffer):
        with unavailable("reading", self._path):
            return self._f.readinto(buffer)

    def seek(self, *args):
        with unavailable("reading", self._path):
            return self._f.seek(*args)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._f.close()


def get_file(src: str, local_path: str, limit: Optional[int] = None, what: str = "") -> None:
    """Download `src` to `local_path`; with `limit`, refused first when larger (`check_size`)."""
    fs, p = filesystem(src)
    with fetching("downloading", src):
        if limit is not None:
            check_size(src, int(fs.size(p, **call_options(fs)) or 0), limit, what)
        fs.get_file(p, local_path, **call_options(fs))


_IOV_MAX = 1024  # iovecs per preadv call (Linux's IOV_MAX; os.sysconf may say more, never less)
_GAP_READ = 1 << 16  # gaps up to this many bytes are read and dropped; longer ones are skipped


def _libc_preadv():
    """libc's preadv through ctypes, on Linux (glibc and musl have it); None elsewhere.

    The one preadv here, and libc's rather than `os.preadv`: `os.preadv` takes a Python list of
    buffers, a memoryview per row (512 a call), and those objects feed Python's garbage
    collector, whose full collections cost about 0.3 s each once TensorFlow is loaded. libc's
    takes the iovec array NumPy builds, and releases the GIL as `os.preadv` does. Where there is
    none, local files are read in spans, as remote ones are (`_copy_rows`).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.preadv
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    fn.restype = ctypes.c_ssize_t
    return fn


_PREADV = _libc_preadv() if sys.platform.startswith("linux") else None


def read_rows_into(path: str, offsets: np.ndarray, size: int, dest: np.ndarray,
                   dest_offsets: np.ndarray) -> int:
    """Copy the `size` bytes at each file offset in `offsets` (ascending) into the C-contiguous
    array `dest`, at byte `dest_offsets[i]`; returns the rows copied, fewer only when the file
    ends early.

    The one copy out of the file. A local file is read by `preadv` straight into `dest`, up to
    512 rows a system call, its list of buffers built by NumPy (no Python object per row);
    short gaps between rows are read into a scratch buffer, long ones skipped. A remote file is
    read in spans through fsspec and its rows copied out.
    """
    offsets = np.asarray(offsets, np.int64)
    dest_offsets = np.asarray(dest_offsets, np.int64)
    if not len(offsets):
        return 0
    if not dest.flags.c_contiguous or dest_offsets.min() < 0 or dest_offsets.max() + size > dest.nbytes:
        raise ValueError("rows do not fit in the destination")
    gaps = np.zeros(len(offsets), np.int64)
    gaps[1:] = offsets[1:] - offsets[:-1] - size
    if np.any(gaps < 0):
        raise ValueError("rows overlap or are not in ascending order")
    by_preadv = is_local(path) and _PREADV is not None
    # A new call (or span) where a gap is too long to read through, and with preadv every so
    # many rows (a call takes so many buffers); a span is one request whatever its rows, as each
    # request waits out the bucket's latency (docs/performance.md, remote data).
    first = (gaps > _GAP_READ) | (np.arange(len(offsets)) % (_IOV_MAX // 2) == 0
                                  if by_preadv else np.arange(len(offsets)) == 0)
    gaps[first] = 0  # the first row of a call is sought, not read up to
    starts = [*np.flatnonzero(first).tolist(), len(offsets)]
    if not by_preadv:
        if is_local(path):
            os.close(open_regular(path))  # a device or a pipe is refused, as below
        return _copy_rows(path, starts, offsets.tolist(), size, memoryview(dest).cast("B"),
                          dest_offsets.tolist())
    fd = open_regular(path)
    try:
        return _preadv_iovecs(fd, starts, offsets, gaps, size, dest, dest_offsets)
    finally:
        os.close(fd)


def _preadv(fd: int, iov: np.ndarray, offset: int) -> int:
    """One preadv of the (address, length) rows of the uint64 array `iov`: the bytes read."""
    got = _PREADV(fd, iov.ctypes.data, len(iov), offset)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return got


def _preadv_iovecs(fd, starts, offsets, gaps, size, dest, dest_offsets) -> int:
    """preadv calls whose iovec arrays NumPy builds: (address, length) per row and per gap."""
    scratch = np.empty(max(int(gaps.max()), 1), np.uint8)
    gapped = gaps > 0
    at = np.arange(len(offsets)) + np.cumsum(gapped)  # each row's iovec; a gap's comes before it
    iov = np.empty((len(offsets) + int(gapped.sum()), 2), np.uint64)
    iov[at, 0] = dest.ctypes.data + dest_offsets
    iov[at, 1] = size
    iov[at[gapped] - 1, 0] = scratch.ctypes.data
    iov[at[gapped] - 1, 1] = gaps[gapped]
    done = 0
    for a, b in zip(starts[:-1], starts[1:]):
        first, last = int(at[a]), (int(at[b]) if b < len(at) else len(iov))
        want = int(offsets[b - 1] + size - offsets[a])
        if _preadv(fd, iov[first:last], int(offsets[a])) < want:
            # the file ended, or (rarely) the kernel stopped early: row by row
            return done + _row_by_row(fd, range(a, b), offsets, size, dest, dest_offsets)
        done += b - a
    return done


def _row_by_row(fd, rows, offsets, size, dest, dest_offsets) -> int:
    """Rows read one at a time until one comes short (the end of the file)."""
    iov = np.array([[0, size]], np.uint64)
    for n, i in enumerate(rows):
        iov[0, 0] = dest.ctypes.data + int(dest_offsets[i])
        if _preadv(fd, iov, int(offsets[i])) < size:
            return n
    return len(rows)


def _copy_rows(path, starts, offsets, size, dest, dest_offsets) -> int:
    """Each span one ranged read (one request on a bucket), its rows copied out."""
    fs, p = filesystem(path)
    done = 0
    for a, b in zip(starts[:-1], starts[1:]):
        with fetching("reading", path):
            span = memoryview(fs.cat_file(p, start=offsets[a], end=offsets[b - 1] + size,
                                          **call_options(fs)))
        for i in range(a, b):
            at = offsets[i] - offsets[a]
            if at + size > len(span):
                return done
            dest[dest_offsets[i]:dest_offsets[i] + size] = span[at:at + size]
            done += 1
    return done

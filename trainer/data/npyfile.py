""".npy arrays read in pieces, by byte range, locally and remotely alike.

An `.npy` file is a header and then the rows back to back, so rows [a, b) are one byte range.
The same holds for an array stored uncompressed inside an `.npz` (a zip), once the member's
offset is known: `np.savez` shards are read the same way, never loaded whole. Compressed members
(`np.savez_compressed`) cannot be sliced and are read whole, one shard at a time. Pickled object
arrays are refused (`allow_pickle` stays off).
"""

from __future__ import annotations

import io
import math
import struct
import tokenize
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

import numpy as np

from trainer import storage
from trainer.data.source import ByteRows
from trainer.errors import UserError
from trainer.runtime import memory

_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip's local file header, 30 bytes
_MAX_BYTES = 2**62  # numpy's limit on one array's size is about this (intp)
# What numpy writes (np.savez, np.savez_compressed); other methods differ by interpreter build
# (bzip2, lzma) or are not implemented at all, and lzma's dictionary size is the file's to choose.
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_ZIP_METHOD_NAMES = {9: "deflate64", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


@dataclass
class NpyArray:
    """Where an array's rows lie: `path`, byte `offset` of row 0, shape and dtype."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    whole: Optional[np.ndarray] = None  # set when the array had to be read whole

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize  # Python ints: no overflow

    def reader(self) -> Callable[[int, int], np.ndarray]:
        """`read(a, b)` for rows [a, b): one ranged read, local or remote.

        Not a memory map: mapped pages of a file read once per epoch count as the process's
        resident memory and grow with the data set, while a read into a fresh buffer is freed
        with the block. The reader's `raw` says where the rows lie, so that the pipeline can
        read them straight into its own buffer instead (`source.View.read_into`).
        """
        if self.whole is not None:
            whole = self.whole
            return lambda a, b: whole[a:b]
        return _RowReader(self)

    def load(self) -> np.ndarray:
        memory.check_fits(math.prod(self.shape) * self.dtype.itemsize,
                          f"array of shape {self.shape} and {self.dtype}", self.path)
        if not self.shape:  # a 0-d array: one value
            return self.reader()(0, 1).reshape(())
        return self.reader()(0, self.shape[0])


class _RowReader:
    """Rows [a, b) of an array by one ranged read; `raw` tells the pipeline where they lie."""

    def __init__(self, arr: NpyArray):
        self.arr = arr
        self.raw = ByteRows(arr.path, arr.offset, arr.row_bytes)

    def __call__(self, a: int, b: int) -> np.ndarray:
        arr = self.arr
        out = np.empty((b - a, *arr.shape[1:]), arr.dtype)
        with storage.open_read(arr.path) as f:
            f.seek(arr.offset + a * arr.row_bytes)
            got = f.readinto(memoryview(out).cast("B")) if out.nbytes else 0
        return out[: got // max(arr.row_bytes, 1)]


def _header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of the .npy stream at the file's current position."""
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        # numpy parses the header as a Python literal: any of these says it is not one
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read array ({reason}), {where}, expected a numeric .npy array"
                        ) from None
    if dtype.kind not in "biufcSU" and not dtype.hasobject:  # datetimes, records, raw bytes
        raise UserError(f"cannot read array (dtype {dtype}), {where}, expected numbers or, for "
                        "labels, strings")
    if any(d < 0 for d in shape) or dtype.itemsize == 0:
        raise UserError(f"cannot read array (shape {tuple(shape)} of {dtype}), {where}, expected "
                        "a numeric .npy array")
    if math.prod(max(d, 1) for d in shape) * dtype.itemsize > _MAX_BYTES:
        raise UserError(f"array of shape {tuple(shape)} is too large for any machine, {where}, "
                        "expected a numeric .npy array")
    if dtype.hasobject:
        raise UserError(f"cannot read array (object dtype), {where}, expected a numeric .npy array "
                        "(pickled objects are refused)")
    if fortran and len(shape) > 1:
        raise UserError(f"array is in Fortran order, {where}, expected C order (np.save of a "
                        "C-contiguous array)")
    return tuple(shape), dtype, f.tell() - start


def _check_size(arr: NpyArray, size: int, where: str) -> None:
    need = arr.offset + (arr.shape[0] if arr.shape else 1) * arr.row_bytes
    if size < need:
        raise UserError(f"file is truncated ({size} of {need} bytes), {where}, expected a complete "
                        "array")


def array_from_bytes(data: bytes, where: str) -> np.ndarray:
    """A whole `.npy` file's bytes as an array, its header checked against the bytes present
    (never `np.load`, which allocates whatever shape the header claims before reading)."""
    f = io.BytesIO(data)
    shape, dtype, length = _header(f, where)
    arr = NpyArray(where, length, shape, dtype)
    _check_size(arr, len(data), where)
    count = math.prod(shape)
    return np.frombuffer(data, dtype, count=count, offset=length).reshape(shape)


def open_npy(path: str) -> NpyArray:
    with storage.open_read(path) as f:
        shape, dtype, length = _header(f, path)
        f.seek(0, 2)
        size = f.tell()
    arr = NpyArray(path, length, shape, dtype)
    _check_size(arr, size, path)
    return arr


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a member this reader cannot read, before zipfile tries (it raises a bare
    NotImplementedError or RuntimeError for these)."""
    expected = "expected stored or deflate members (as np.savez and np.savez_compressed write them)"
    if info.flag_bits & 0x1:
        raise UserError(f"npz member {info.filename[:100]!r} is encrypted, {where}, {expected}")
    if info.compress_type not in _ZIP_METHODS:
        method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise UserError(f"npz member {info.filename[:100]!r} is compressed with {method}, {where}, "
                        f"{expected}")


def _decompress(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str,
                where: str) -> NpyArray:
    """A compressed member read whole, but never more than its header declares: the declared
    size is checked against the memory there is before anything is decompressed, and a member
    that holds more than it declares (a small array over gigabytes of zeros) is refused after
    reading the declared bytes only."""
    with archive.open(info) as member:
        shape, dtype, _ = _header(member, where)
        need = math.prod(shape) * dtype.itemsize
        memory.check_fits(need, f"array of shape {shape} and {dtype}", where)
        data = bytearray(need)
        got = member.readinto(data) if need else 0
        while 0 < got < need:
            more = member.readinto(memoryview(data)[got:])
            if not more:
                break
            got += more
        if got < need:
            raise UserError(f"array is truncated ({got} of {need} bytes), {where}, expected a "
                            "complete array")
        if member.read(1):
            raise UserError(f"member holds more than its declared shape {shape} of {dtype}, "
                            f"{where}, expected a .npy array of exactly that size")
    whole = np.frombuffer(data, dtype).reshape(shape)
    return NpyArray(path, 0, shape, dtype, whole=whole)


def npz_names(path: str) -> set[str]:
    """The names of the arrays in an `.npz` (its members' names), nothing read but its index."""
    try:
        with storage.open_read(path) as f, zipfile.ZipFile(f) as archive:
            return {n.removesuffix(".npy") for n in archive.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read npz ({exc}), {path}, expected a .npz archive of arrays"
                        ) from None


def open_npz(path: str, keys: tuple[str, ...], optional: tuple[str, ...] = (),
             instead: tuple[str, ...] = ()) -> dict[str, NpyArray]:
    """The arrays `keys` (and of `optional`, those present) of an `.npz`, located, not read;
    where one of `keys` is missing and all of `instead` are there, those."""
    out = {}
    try:
        with storage.open_read(path) as f:
            with zipfile.ZipFile(f) as archive:
                names = {n.removesuffix(".npy"): n for n in archive.namelist()}
                missing = [k for k in keys if k not in names]
                if missing and instead and all(k in names for k in instead):
                    keys, missing = instead, []
                if missing:
                    alternative = (f" (or {' and '.join(repr(k) for k in instead)})"
                                   if instead else "")
                    raise UserError(f"array {missing[0]!r} missing, {path}, expected arrays "
                                    f"{' and '.join(repr(k) for k in keys)}{alternative} (found: "
                                    f"{', '.join(names) or 'none'})")
                for key in keys + tuple(k for k in optional if k in names):
                    info = archive.getinfo(names[key])
                    where = f"{path}[{key}]"
                    _check_member(info, where)
                    if info.compress_type == zipfile.ZIP_STORED:
                        f.seek(info.header_offset)
                        fields = _ZIP_LOCAL_HEADER.unpack(f.read(_ZIP_LOCAL_HEADER.size))
                        f.seek(info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1])
                        start = f.tell()
                        shape, dtype, length = _header(f, where)
                        out[key] = NpyArray(path, start + length, shape, dtype)
                        _check_size(out[key], start + info.compress_size, where)
                    else:
                        out[key] = _decompress(archive, info, path, where)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read npz ({exc}), {path}, expected a .npz archive of arrays "
                        f"{' and '.join(repr(k) for k in keys)}") from None
    return out

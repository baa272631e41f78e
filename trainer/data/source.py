"""Random-access rows over many files: the one shape every reader hands to the pipeline.

A reader turns each file (or file list) into a `Shard`: its sample count, sample shape and dtype,
its labels and, where the format carries them, its groups (both small, read at once), and a
`read(start, stop)` for a contiguous range of images. Where the images lie in the file as raw
bytes at known offsets (`.npy`, stored `.npz` members, uncompressed TFRecord with raw images), the
shard also says where (`ByteRows`), and the pipeline copies rows from the file straight into their
places in its buffer (`View.read_into`). A `Source` chains shards; a `View` picks rows of a source
(a split carved out of it, or an index range). Nothing here holds more than the rows asked for,
so a data set larger than memory is read one block at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from trainer import storage
from trainer.errors import UserError


MAX_SAMPLE_BYTES = 2**31 - 1  # one sample (image, volume) of at most 2 GiB, as a TFRecord holds


@dataclass(frozen=True)
class ByteRows:
    """Where a shard's images lie in `path` as raw bytes, `size` bytes a row: row i starts at
    `start + i * size` (rows back to back, as in `.npy`), or at `start + offsets[i]`."""

    path: str
    start: int
    size: int
    offsets: Optional[np.ndarray] = None

    def at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        return self.start + (rows * self.size if self.offsets is None else self.offsets[rows])


@dataclass
class Shard:
    path: str
    count: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    labels: np.ndarray
    read: Callable[[int, int], np.ndarray]  # images of rows [start, stop), shaped (n, *sample_shape)
    # Formats that cannot seek (GZIP, compressed npz) are read whole: one block per shard.
    seekable: bool = True
    # Per-sample group (the video, session or seed a sample came from), as strings; None when
    # the file carries none. Splits by group keep each group on one side.
    groups: Optional[np.ndarray] = None
    # Where the images lie as raw bytes of `dtype`, if they do: read without `read`'s copy. A
    # reader may also say so through its `read` (an object with a `raw` attribute).
    raw: Optional[ByteRows] = None
    # "last" where the reader knows the layout (decoded image files are (H, W, C)); None: the
    # arrays' layout is decided by `data.channels` (`channel_axis`).
    channels: Optional[str] = None
    # Image files decoded at another size than the shard's and resized: file index -> (h, w)
    # as stored. Filled as the files are read (no extra read), so it grows with each pass.
    resized: Optional[dict] = None
    # The file of each row, for a shard of one image per file (a class folder, a CSV manifest).
    files: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if self.raw is None:
            self.raw = getattr(self.read, "raw", None)
        size = math.prod(int(d) for d in self.sample_shape) * np.dtype(self.dtype).itemsize
        if size > MAX_SAMPLE_BYTES:  # a declared shape no block of rows could ever hold
            raise UserError(f"samples of shape {tuple(self.sample_shape)} and "
                            f"{np.dtype(self.dtype)} are {size} bytes each, {self.path}, expected at most "
                            f"{MAX_SAMPLE_BYTES} bytes per sample")
        check_labels(self.labels, self.path)


def group_names(values: np.ndarray, count: int, where: str) -> np.ndarray:
    """A file's group column as strings (ints and bytes alike), one per sample."""
    values = np.asarray(values).reshape(-1)
    if len(values) != count:
        raise UserError(f"{len(values)} groups for {count} samples, {where}, expected one group "
                        "per sample")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise UserError(f"groups of dtype {values.dtype} with fractions or NaN, {where}, "
                            "expected integer or string group names (a video, session or seed)")
        values = values.astype(np.int64)  # a seed stored as 3.0 is group "3", as in an int file
    if values.dtype.kind in "SO":
        return texts(values, where, "group names")
    return values.astype(str)


def check_labels(labels: np.ndarray, where: str) -> None:
    """Refuse a text label that is empty (or only spaces): the one rule of every reader (a CSV
    cell, an npz/npy/HDF5 string array, a TFRecord feature), so an empty string never becomes a
    class, or a target, of its own."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "USO" or labels.size == 0:
        return
    rows = labels.reshape(len(labels) if labels.ndim else 1, -1)
    if labels.dtype.kind in "US":
        empty = np.char.strip(rows) == ("" if labels.dtype.kind == "U" else b"")
    else:  # objects: text or bytes among them is checked, anything else is the encoder's to refuse
        empty = np.array([[isinstance(v, (str, bytes)) and not v.strip() for v in row]
                          for row in rows], bool)
    hits = np.flatnonzero(empty.any(axis=1))
    if len(hits):
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        raise UserError(f"empty label at index {hits[0]}{more}, {where}, expected a label for "
                        "every sample")


def texts(values: np.ndarray, where: str, what: str) -> np.ndarray:
    """Names stored as bytes (TFRecord, HDF5, npy) as strings, read as UTF-8."""
    try:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values])
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} that are not UTF-8 text ({exc.object[:20]!r}), {where}, expected "
                        "text") from None


def array_shard(x: np.ndarray, y: np.ndarray, path: str) -> Shard:
    """In-memory arrays as a shard; reads are views, so the small-data case copies nothing."""
    if len(x) != len(y):
        raise UserError(f"x has {len(x)} samples but y has {len(y)}, {path}, expected the same number")
    return Shard(path, len(x), tuple(x.shape[1:]), x.dtype, y, lambda a, b: x[a:b])


CHANNEL_SIZES = (1, 3, 4)  # grey, RGB, RGBA (or a few stacked bands)


def channel_axis(shape: tuple[int, ...], channels: str, where: str) -> str:
    """Where the channel axis of samples of `shape` lies: "last" (H, W, C) or "first" (C, H, W).

    `channels` is `data.channels`; `auto` takes an axis of size 1, 3 or 4 beside two larger
    ones, so PyTorch's (C, H, W) never trains as C-high images of H "channels", and asks for the
    key where neither or both ends could be the channel axis (a 64x64x64 cube, 32x32x2 masks).
    """
    if len(shape) == 2 or channels != "auto":
        return "last" if len(shape) == 2 else channels
    first = shape[0] in CHANNEL_SIZES and shape[0] < min(shape[1:])
    last = shape[2] in CHANNEL_SIZES and shape[2] < min(shape[:2])
    if first != last:
        return "first" if first else "last"
    raise UserError(f"cannot tell the channel axis of samples of shape {tuple(shape)}, {where}, "
                    "expected data.channels: last (N, H, W, C) or data.channels: first "
                    "(N, C, H, W) in the config")


class Source:
    """Shards in order, checked against the first, addressed by one global row number.

    Samples are stored as `stored_shape` ((H, W, 1) for 2-D images, (C, H, W) channel-first)
    and seen by the model as `sample_shape` (H, W, C): `View.read` moves the channel axis
    (a view, no copy), and the pipeline moves it per batch in TensorFlow.
    """

    def __init__(self, shards: list[Shard], channels: str = "last"):
        first = shards[0]
        for s in shards:
            if len(s.sample_shape) not in (2, 3):
                raise UserError(f"x has shape {(s.count, *s.sample_shape)}, {s.path}, expected images "
                                "(N, H, W) or (N, H, W, C)")
            if s.dtype.kind not in "iufb":
                raise UserError(f"images of dtype {s.dtype}, {s.path}, expected numbers")
            if s.sample_shape != first.sample_shape:
                raise UserError(f"images of shape {s.sample_shape}, {s.path}, expected "
                                f"{first.sample_shape} as in {first.path}")
            if s.labels.shape[1:] != first.labels.shape[1:]:
                raise UserError(f"labels of shape {s.labels.shape[1:]}, {s.path}, expected "
                                f"{first.labels.shape[1:]} as in {first.path}")
        self.shards = shards
        self.offsets = np.cumsum([0] + [s.count for s in shards])
        self.labels = first.labels if len(shards) == 1 else np.concatenate([s.labels for s in shards])
        # Groups only when every shard has them; otherwise the first shard without (for errors).
        self.ungrouped = next((s.path for s in shards if s.groups is None), None)
        self.groups = (None if self.ungrouped else first.groups if len(shards) == 1
                       else np.concatenate([s.groups for s in shards]))
        # 2-D images get a channel axis; reads are reshaped to it (a view, no copy).
        shape = first.sample_shape
        self.layout = first.channels or channel_axis(shape, channels, first.path)
        self.stored_shape = shape if len(shape) == 3 else (*shape, 1)
        self.channels_first = self.layout == "first"
        self.sample_shape = ((*self.stored_shape[1:], self.stored_shape[0]) if self.channels_first
                             else self.stored_shape)
        self.dtype = first.dtype

    def resized(self) -> dict[tuple[int, int], int]:
        """Image files read so far whose size differed from the shard's: {(h, w) stored: count}."""
        sizes: dict[tuple[int, int], int] = {}
        for shard in self.shards:
            for size in (shard.resized or {}).values():
                sizes[size] = sizes.get(size, 0) + 1
        return sizes

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def description(self) -> str:
        first = self.shards[0].path
        return first if len(self.shards) == 1 else f"{first} (+{len(self.shards) - 1} more)"


@dataclass(frozen=True)
class Block:
    """Rows of one shard that are read together: `rows` are shard-local, sorted."""

    shard: int
    rows: np.ndarray
    positions: np.ndarray  # where these rows sit in the view (for its labels)


class View:
    """Some rows of a source, in a fixed order (all of them, a carved split or an index range)."""

    def __init__(self, source: Source, rows: Optional[np.ndarray] = None, name: str = ""):
        self.source = source
        self.rows = np.arange(len(source)) if rows is None else np.sort(np.asarray(rows, np.int64))
        self.name = name or source.description
        self.labels = source.labels[self.rows]
        self.groups = None if source.groups is None else source.groups[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(H, W, C), as the model takes it."""
        return self.source.sample_shape

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """As the files hold a sample: (H, W, C), or (C, H, W) channel-first (see `Source`)."""
        return self.source.stored_shape

    def locate(self, position: int) -> str:
        """The file and row of the view's sample at `position`, as messages name a sample."""
        row = int(self.rows[position])
        shard = int(np.searchsorted(self.source.offsets, row, side="right")) - 1
        return f"row {row - int(self.source.offsets[shard])} of {self.source.shards[shard].path}"

    def origin(self, position: int) -> str:
        """Where the view's sample at `position` came from, as people look it up: its own file
        when it has one (an image folder, a CSV manifest), else its shard and row."""
        row = int(self.rows[position])
        shard = int(np.searchsorted(self.source.offsets, row, side="right")) - 1
        files = self.source.shards[shard].files
        if files is not None:
            return files[row - int(self.source.offsets[shard])]
        return self.locate(position)

    def blocks(self, block_rows: int) -> list[Block]:
        """Consecutive runs of at most `block_rows` rows, never across a shard boundary."""
        out = []
        bounds = np.searchsorted(self.rows, self.source.offsets)
        for i, shard in enumerate(self.source.shards):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            step = block_rows if shard.seekable else max(hi - lo, 1)
            for start in range(lo, hi, step):
                pos = np.arange(start, min(start + step, hi))
                out.append(Block(i, self.rows[pos] - self.source.offsets[i], pos))
        return out

    def read(self, block: Block) -> np.ndarray:
        """The block's images, (n, H, W, C) (for channel-first files a view of `read_stored`)."""
        x = self.read_stored(block)
        return np.moveaxis(x, 1, -1) if self.source.channels_first else x

    def read_stored(self, block: Block) -> np.ndarray:
        """The block's images as stored: contiguous reads of the shard covering them.

        Rows of a carved split are scattered; each read covers at most 4x the rows it keeps, so
        memory stays a multiple of the block size however sparse the split is.
        """
        shard = self.source.shards[block.shard]
        rows, span = block.rows, max(4 * len(block.rows), 1)
        cuts = [0]
        while cuts[-1] < len(rows):  # pieces whose first-to-last distance stays under `span`
            cuts.append(int(np.searchsorted(rows, rows[cuts[-1]] + span)))
        pieces = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            first, last = int(rows[a]), int(rows[b - 1]) + 1
            x = shard.read(first, last)
            if len(x) != last - first:
                _short_read(shard, len(x), last - first, first, last)
            pieces.append(x if last - first == b - a else x[rows[a:b] - first])
        x = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return x.reshape(len(rows), *self.stored_shape)

    def read_into(self, block: Block, out: np.ndarray, slots: np.ndarray) -> int:
        """The block's images into `out[slots]` (`out` C-contiguous, (N, *stored_shape)); returns
        the rows read (the pipeline counts them).

        Raw rows of `out`'s dtype are copied from the file straight into their slots, one copy
        (gaps of a carved split are skipped or read through, never kept); other shards are read
        (`read`) and their images cast into the slots.
        """
        shard, slots = self.source.shards[block.shard], np.asarray(slots, np.int64)
        if len(slots) != len(block.rows) or (len(slots) and not 0 <= slots.min() <= slots.max() < len(out)):
            raise IndexError(f"{len(block.rows)} rows, {len(slots)} slots in a buffer of {len(out)}")
        raw, row_bytes = shard.raw, out[:1].nbytes
        if raw is None or shard.dtype != out.dtype or raw.size != row_bytes or not out.flags.c_contiguous:
            out[slots] = self.read_stored(block)
            return len(slots)
        got = storage.read_rows_into(raw.path, raw.at(block.rows), row_bytes, out, slots * row_bytes)
        if got < len(block.rows):
            _short_read(shard, got, len(block.rows), int(block.rows[0]), int(block.rows[-1]) + 1)
        return got

    def iter_chunks(self, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, labels) block by block, in order: the streaming pass of stats and checks."""
        for x, y, _ in self.iter_grouped(block_rows):
            yield x, y

    def iter_grouped(self, block_rows: int
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
        """(images, labels, groups or None) block by block, in order: what converters copy."""
        for block in self.blocks(block_rows):
            groups = None if self.groups is None else self.groups[block.positions]
            yield self.read(block), self.labels[block.positions], groups

    def take(self, positions) -> np.ndarray:
        """Images at these positions of the view, in the order given, reading only those rows."""
        positions = np.asarray(positions, np.int64)
        if len(positions) == 0:
            return np.empty((0, *self.sample_shape), self.source.dtype)
        wanted = self.rows[positions]
        x = View(self.source, wanted).array()  # in sorted row order
        return x[np.searchsorted(np.sort(wanted), wanted)]

    def array(self) -> np.ndarray:
        """All images at once, for small data and tests."""
        parts = [x for x, _ in self.iter_chunks(1 << 16)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _short_read(shard: Shard, got: int, want: int, first: int, last: int):
    raise UserError(f"read {got} samples of rows {first}..{last}, {shard.path}, expected {want} "
                    "(is the file truncated?)")

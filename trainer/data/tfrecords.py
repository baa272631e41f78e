"""TFRecord shards of `tf.train.Example`, read and written through the project's file layer.

A record holds `image` (raw bytes, or an encoded PNG), `shape` (H, W, C), `dtype` (for raw
bytes), `encoding` (`raw` or `png`), `label` (int64, float or bytes) and optionally `group`
(the video, session or seed of the sample, read with the labels). The bytes come through
`storage` like every other format, so `gs://` and `/gcs/` read alike; the framing (length, masked
CRC-32C, data, masked CRC-32C) is checked here, so a corrupt or truncated shard is named with
its record index. Opening a shard is one pass that verifies it and keeps each record's offset,
label and, for raw images, where the image's bytes lie inside it. An uncompressed shard of raw
images is then read like an `.npy` file: only the image bytes, straight into the pipeline's
buffer (`source.ByteRows`), with no parsing after the first pass. A GZIP shard is read whole
and its images cut out of the records; PNG records are parsed and decoded.
"""

from __future__ import annotations

import gzip
import math
import struct
from typing import BinaryIO, Iterator, Optional

import google_crc32c
import numpy as np

from trainer import storage
from trainer.data import images
from trainer.data.source import ByteRows, Shard, group_names, texts
from trainer.errors import UserError
from trainer.kerasflavor import tf

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_PNG_MAGIC = b"\x89PNG"
_PARSE_BATCH = 4096
_MAX_RECORD = 2**31 - 1  # protobuf cannot parse a larger message
_CHUNK = 1 << 20
_ENCODINGS = ("raw", "png", "jpeg", "tiff")  # raw bytes, or a file `images` decodes


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as TFRecord writes it."""
    length = _U64.pack(len(data))
    return b"".join((length, _U32.pack(_masked_crc(length)), data, _U32.pack(_masked_crc(data))))


def _records(f: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of each record, checking both CRCs; a short read means truncation."""
    offset, index = 0, 0
    while True:
        head = f.read(12)
        if not head:
            return
        where = f"{path} record {index}"
        if len(head) < 12:
            raise UserError(f"truncated TFRecord (a partial record header), {where}, expected a "
                            "complete shard")
        length = _U64.unpack_from(head)[0]
        if _U32.unpack_from(head, 8)[0] != _masked_crc(head[:8]):
            raise UserError(f"corrupt TFRecord (length checksum mismatch), {where}, expected a "
                            "TFRecord file (is it compressed? GZIP is detected by its header)")
        if length > _MAX_RECORD:
            raise UserError(f"TFRecord record of {length} bytes, {where}, expected a serialized "
                            f"tf.train.Example of at most {_MAX_RECORD} bytes (protobuf's limit)")
        data = _read_up_to(f, length)
        foot = f.read(4)
        if len(data) < length or len(foot) < 4:
            raise UserError(f"truncated TFRecord (record ends early), {where}, expected a complete "
                            "shard")
        if _U32.unpack(foot)[0] != _masked_crc(data):
            raise UserError(f"corrupt TFRecord (data checksum mismatch), {where}, expected an "
                            "intact shard")
        yield offset, data
        offset += 16 + length
        index += 1


def _read_up_to(f: BinaryIO, length: int) -> bytes:
    """`length` bytes, or fewer at the end of the file, read in pieces: a forged length costs
    only the bytes really there, never an allocation of the size it claims."""
    parts = []
    while length > 0:
        part = f.read(min(length, _CHUNK))
        if not part:
            break
        parts.append(part)
        length -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _is_gzip(path: str) -> bool:
    with storage.open_read(path) as f:
        return f.read(2) == b"\x1f\x8b"


def _stream(path: str, gz: bool) -> BinaryIO:
    raw = storage.open_read(path)
    return gzip.GzipFile(fileobj=raw) if gz else raw


def _values(feats, key: str, kind: str, where: str) -> list:
    """The values of feature `key`, which must be a `kind` (`bytes_list`, `int64_list`, ...)."""
    found = feats[key].WhichOneof("kind")
    if found != kind:
        raise UserError(f"TFRecord feature {key!r} is a {found or 'empty feature'}, {where}, "
                        f"expected a {kind}")
    return list(getattr(feats[key], kind).value)


def _text(feats, key: str, where: str, default: str) -> str:
    if key not in feats:
        return default
    values = _values(feats, key, "bytes_list", where)
    try:
        return values[0].decode("ascii") if len(values) == 1 else ""
    except UnicodeDecodeError:
        return ""


def _layout(first: bytes, path: str, group_key: str) -> dict:
    """What the first record holds: label kind and width, encoding, dtype, shape.

    Nothing in the record is trusted: a raw image's declared shape and dtype must describe
    exactly the bytes it holds (a shape of 10^12 elements is refused here, before anything of
    that size exists), and encoded images are sized by their decoder's checks (`images`).
    """
    where = f"{path} record 0"
    try:
        example = tf.train.Example.FromString(first)
    except Exception:  # protobuf's DecodeError has no stable import path
        raise UserError(f"record is not a tf.train.Example, {where}, expected serialized "
                        "tf.train.Example records") from None
    feats = example.features.feature
    missing = [k for k in ("image", "label") if k not in feats]
    if missing:
        raise UserError(f"TFRecord lacks feature {missing[0]!r}, {where}, expected features "
                        f"'image', 'label' and 'shape' (found: {', '.join(sorted(feats)) or 'none'})")
    kind = feats["label"].WhichOneof("kind")
    width = len(getattr(feats["label"], kind).value) if kind else 0
    image = _values(feats, "image", "bytes_list", where)
    if len(image) != 1:
        raise UserError(f"TFRecord feature 'image' holds {len(image)} values, {where}, expected "
                        "one image per record")
    encoding = _text(feats, "encoding", where, "png" if image[0][:4] == _PNG_MAGIC else "raw")
    if encoding not in _ENCODINGS:
        raise UserError(f"TFRecord encoding {encoding!r}, {where}, expected one of "
                        f"{', '.join(_ENCODINGS)}")
    shape = tuple(_values(feats, "shape", "int64_list", where)) if "shape" in feats else ()
    if encoding == "raw" and not shape:
        raise UserError(f"TFRecord lacks feature 'shape', {where}, expected the image's "
                        "(H, W[, C]) beside raw bytes")
    if any(d <= 0 for d in shape):
        raise UserError(f"TFRecord image shape {shape}, {where}, expected positive sizes")
    name = _text(feats, "dtype", where, "float32")
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise UserError(f"TFRecord dtype {name!r}, {where}, expected a numeric dtype such as "
                        "float32 or uint8")
    if encoding == "raw" and math.prod(shape) * dtype.itemsize != len(image[0]):
        raise UserError(f"TFRecord image shape {shape} of {dtype} declares "
                        f"{math.prod(shape) * dtype.itemsize} bytes but the image holds "
                        f"{len(image[0])}, {where}, expected the shape of the bytes stored")
    label_dtype = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}.get(kind)
    if label_dtype is None or width == 0:
        raise UserError(f"TFRecord feature 'label' is empty, {where}, expected an int64, "
                        "float or bytes label")
    group_kind = feats[group_key].WhichOneof("kind") if group_key in feats else None
    group_dtype = {"int64_list": tf.int64, "bytes_list": tf.string,
                   "float_list": tf.float32}.get(group_kind)
    return {"label_dtype": label_dtype, "width": width, "encoding": encoding,
            "dtype": dtype, "shape": shape, "group": group_dtype}


def _parse(serialized: list[bytes], spec: dict, path: str, first_index: int) -> dict:
    try:
        return tf.io.parse_example(tf.constant(serialized), spec)
    except (tf.errors.InvalidArgumentError, ValueError):
        for i, data in enumerate(serialized):  # find the record to name
            try:
                tf.io.parse_example(tf.constant([data]), spec)
            except (tf.errors.InvalidArgumentError, ValueError) as exc:
                reason = str(exc).splitlines()[0][:160]
                raise UserError(f"TFRecord without the expected features ({reason}), {path} record "
                                f"{first_index + i}, expected 'image', 'shape' and 'label' like "
                                "record 0") from None
        raise


def open_shard(path: str, spec: images.ImageSpec, group_key: str = "group") -> Shard:
    """Verify a shard in one pass and return it with its labels (and groups) and record offsets."""
    gz = _is_gzip(path)
    layout: Optional[dict] = None
    offsets: list[int] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    payload: list[int] = []  # raw images: where each image's bytes start inside its record
    batch: list[bytes] = []
    end = 0

    def flush() -> None:
        first = len(offsets) - len(batch)
        group = ({group_key: tf.io.FixedLenFeature([], layout["group"])} if layout["group"] else {})
        parsed = _parse(batch, {"label": tf.io.FixedLenFeature([layout["width"]], layout["label_dtype"]),
                                **_image_spec(layout), **group}, path, first)
        if "shape" in parsed and len(batch):
            bad = np.where(np.any(parsed["shape"].numpy() != np.array(layout["shape"]), axis=1))[0]
            if len(bad):
                raise UserError(f"image of shape {tuple(parsed['shape'].numpy()[bad[0]])}, {path} "
                                f"record {first + int(bad[0])}, expected {layout['shape']} like record 0")
        if layout["encoding"] == "raw":
            payload.extend(_find_images(batch, parsed["image"].numpy(), layout, path, first,
                                        payload[-1] if payload else 0))
        labels.append(parsed["label"].numpy())
        if group:
            groups.append(parsed[group_key].numpy())
        batch.clear()

    try:
        with _stream(path, gz) as f:
            for offset, data in _records(f, path):
                if layout is None:
                    layout = _layout(data, path, group_key)
                offsets.append(offset)
                end = offset + 16 + len(data)
                batch.append(data)
                if len(batch) == _PARSE_BATCH:
                    flush()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"corrupt or truncated TFRecord ({exc}), {path} record {len(offsets)}, "
                        "expected an intact (optionally GZIP) shard") from None
    if layout is None:
        raise UserError(f"no records, {path}, expected at least one tf.train.Example")
    if batch:
        flush()
    y = np.concatenate(labels)
    y = y[:, 0] if layout["width"] == 1 else y
    if y.dtype == object:
        y = texts(y.reshape(-1), path, "labels").reshape(y.shape)
    offsets.append(end)
    bounds = np.asarray(offsets, np.int64)
    sample_shape = _sample_shape(path, gz, layout, bounds, spec)
    raw = None
    if layout["encoding"] == "raw":
        # Each image's bytes: in the file (after the 12-byte record header), and its size.
        raw = ByteRows(path, 0, _image_bytes(layout), bounds[:-1] + 12 + np.asarray(payload, np.int64))

    def read(a: int, b: int) -> np.ndarray:
        if raw is not None:
            return _read_raw(path, gz, bounds, raw, layout, a, b)
        return _decode_images(_read_records(path, gz, bounds, a, b), layout, sample_shape, spec, path, a)

    return Shard(path, len(y), sample_shape, np.dtype(np.float32) if layout["encoding"] == "png"
                 else layout["dtype"], y, read, seekable=not gz, raw=None if gz else raw,
                 groups=group_names(np.concatenate(groups), len(y), path) if groups else None)


def _image_bytes(layout: dict) -> int:
    return math.prod(layout["shape"]) * layout["dtype"].itemsize


def _find_images(records: list[bytes], found: np.ndarray, layout: dict, path: str, first: int,
                 guess: int) -> list[int]:
    """Where each record's image bytes (as `parse_example` found them) start inside it.

    Records written alike put them at the same place, so each is checked there first.
    """
    size = _image_bytes(layout)
    out = []
    for i, (data, image) in enumerate(zip(records, found)):
        if len(image) != size:
            raise UserError(f"image of {len(image)} bytes, {path} record {first + i}, expected "
                            f"{size} ({layout['shape']} of {layout['dtype']}) like record 0")
        if not data.startswith(image, guess):
            guess = data.find(image)
        out.append(guess)
    return out


def _read_raw(path: str, gz: bool, bounds: np.ndarray, raw: ByteRows, layout: dict, a: int,
              b: int) -> np.ndarray:
    """Raw images of records [a, b): their bytes only, without parsing the records again."""
    out = np.empty((b - a, *layout["shape"]), layout["dtype"])
    size = raw.size
    if gz:  # read whole (GZIP cannot seek), then cut the images out
        data = np.frombuffer(_read_span(path, gz, bounds, a, b), np.uint8)
        starts = raw.offsets[a:b] - bounds[a]
        rows = out.reshape(b - a, -1).view(np.uint8)
        step = np.diff(starts)
        if len(starts) > 1 and np.all(step == step[0]):  # records of one size: one strided copy
            rows[...] = np.lib.stride_tricks.as_strided(data[starts[0]:], (b - a, size), (int(step[0]), 1))
        else:
            for i, s in enumerate(starts.tolist()):
                rows[i] = data[s:s + size]
        return out
    got = storage.read_rows_into(path, raw.offsets[a:b], size, out, np.arange(b - a) * size)
    if got < b - a:
        raise UserError(f"TFRecord shrank since it was opened (record {a + got} is cut), {path}, "
                        "expected an unchanged shard")
    return out


def _image_spec(layout: dict) -> dict:
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    if layout["shape"]:
        spec["shape"] = tf.io.FixedLenFeature([len(layout["shape"])], tf.int64)
    return spec


def _sample_shape(path, gz, layout, bounds, spec) -> tuple[int, ...]:
    """Raw images carry their shape; PNGs take the configured size, else the first image's."""
    if layout["encoding"] == "raw":
        return tuple(layout["shape"])
    first = _decode_images(_read_records(path, gz, bounds, 0, 1), layout, None, spec, path, 0)
    return tuple(first.shape[1:])


def _read_span(path: str, gz: bool, bounds: np.ndarray, a: int, b: int) -> bytes:
    """The bytes of records [a, b), framing included."""
    with _stream(path, gz) as f:
        if gz:
            raw = f.read(int(bounds[b]))[int(bounds[a]):]
        else:
            f.seek(int(bounds[a]))
            raw = f.read(int(bounds[b] - bounds[a]))
    if len(raw) < bounds[b] - bounds[a]:
        raise UserError(f"TFRecord shrank since it was opened ({len(raw)} bytes), {path}, expected "
                        "an unchanged shard")
    return raw


def _read_records(path: str, gz: bool, bounds: np.ndarray, a: int, b: int) -> list[bytes]:
    raw = _read_span(path, gz, bounds, a, b)
    rel = bounds[a:b + 1] - bounds[a]
    return [raw[int(s) + 12:int(e) - 4] for s, e in zip(rel[:-1], rel[1:])]


def _decode_images(serialized: list[bytes], layout: dict, sample_shape, spec: images.ImageSpec,
                   path: str, first_index: int) -> np.ndarray:
    """Encoded (PNG) images of records, decoded to the shard's size; raw ones use `_read_raw`."""
    parsed = _parse(serialized, {"image": tf.io.FixedLenFeature([], tf.string)}, path, first_index)
    if sample_shape is not None:
        spec = images.ImageSpec((sample_shape[0], sample_shape[1]), sample_shape[2])
    out = [images.decode(data, spec, f"{path} record {first_index + i}")
           for i, data in enumerate(parsed["image"].numpy())]
    return np.stack(out)


def example(image: np.ndarray, label, group=None) -> bytes:
    """A serialized tf.train.Example with raw image bytes, its shape, dtype, label (and group)."""
    feature = tf.train.Feature
    label = np.asarray(label).reshape(-1)
    if label.dtype.kind in "iub":
        lab = feature(int64_list=tf.train.Int64List(value=label.astype(np.int64)))
    elif label.dtype.kind == "f":
        lab = feature(float_list=tf.train.FloatList(value=label.astype(np.float32)))
    else:
        lab = feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in label]))
    image = np.ascontiguousarray(image)
    feats = {
        "image": feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "shape": feature(int64_list=tf.train.Int64List(value=list(image.shape))),
        "dtype": feature(bytes_list=tf.train.BytesList(value=[image.dtype.name.encode()])),
        "encoding": feature(bytes_list=tf.train.BytesList(value=[b"raw"])),
        "label": lab,
    }
    if group is not None:
        feats["group"] = feature(bytes_list=tf.train.BytesList(value=[str(group).encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class Writer:
    """Appends framed records to a local file, optionally GZIP-compressed."""

    def __init__(self, local_path: str, compress: bool = False):
        self._file = gzip.open(local_path, "wb") if compress else open(local_path, "wb")

    def write(self, serialized: bytes) -> None:
        self._file.write(frame(serialized))

    def close(self) -> None:
        self._file.close()


"""Seed 001's raw material: video files plus a MATLAB vector with one label per frame.

Frames are decoded with PyAV (FFmpeg bindings whose wheels ship their own decoder), then sized
and coloured as image files are (`trainer.data.images`); `decode_frames` is the one way a frame
becomes an array, for `trainer.convert --video` (training data) and `trainer.predict` (new
videos) alike. Labels are read with `scipy.io.loadmat` (v7.3 files, which are HDF5, with h5py)
and written back with `scipy.io.savemat`
in the same layout, so predicted labels can be corrected in MATLAB and converted again. Both
stream through `storage`, so `gs://` works. Frames whose label is NaN are left out (seed 001's
"uncuratable" frames). Each frame's group is its video (the path as given), so a split by group
never puts frames of one video on both sides.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from typing import Iterator, Mapping, Optional, Sequence, Union

import av
import numpy as np
import scipy.io

from trainer import storage
from trainer.data.images import ImageSpec, to_array
from trainer.errors import UserError

# Containers FFmpeg reads that seed 001's cameras and tools write.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_video(path: str) -> bool:
    """Whether the file's name says it is a video this module decodes."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


def decode_frames(path: str, spec: ImageSpec, sizes: Optional[dict] = None
                  ) -> Iterator[np.ndarray]:
    """Every frame of the video, in order, as uint8 (H, W, C) sized and coloured by `spec`.

    One frame is decoded at a time, so a video of any length costs one frame of memory here.
    8-bit frames decode to whole numbers up to 255, so uint8 holds them losslessly; a model
    receives the same values as float32, whether it reads them from shards or from the video.
    `sizes`, when given, counts the frames by their own (height, width).
    """
    index = 0
    try:
        with storage.open_read(path) as f, av.open(f) as container:
            if not container.streams.video:
                raise UserError(f"no video stream, {path}, expected a video file FFmpeg reads")
            for frame in container.decode(video=0):
                if sizes is not None:
                    sizes[(frame.height, frame.width)] = sizes.get((frame.height, frame.width), 0) + 1
                yield to_array(frame.to_image(), spec, f"{path} frame {index}").astype(np.uint8)
                index += 1
    except av.error.FFmpegError as exc:
        raise UserError(f"cannot decode video ({exc}), {path}, expected a video file FFmpeg "
                        "reads") from None


def frame_count(path: str) -> Optional[int]:
    """The frame count the container declares (None where it declares none): for progress only."""
    try:
        with storage.open_read(path) as f, av.open(f) as container:
            return int(container.streams.video[0].frames) or None
    except (av.error.FFmpegError, IndexError):
        return None


# ----------------------------------------------------------------------------------------------
# Labels: .mat files, one vector per video.


def variable_name(video_path: str) -> str:
    """The MATLAB variable that holds a video's labels: its file name without extension, made a
    valid MATLAB name (a letter first, letters, digits and `_`, at most 63 characters)."""
    stem = os.path.splitext(os.path.basename(video_path.rstrip("/")))[0]
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if not name[:1].isalpha():
        name = "v_" + name
    return name[:63]


def variable_names(videos: Sequence[str]) -> list[str]:
    """`variable_name` of each video, numbered (`_2`, `_3`) where two videos share a name."""
    names: list[str] = []
    for path in videos:
        base = name = variable_name(path)
        k = 1
        while name in names:
            k += 1
            name = f"{base[:63 - len(str(k)) - 1]}_{k}"
        names.append(name)
    return names


class MatText(list):
    """A MATLAB char array, or a cell of them: one string per row (a single name is a list of
    one)."""


# What a .mat variable is read as: a numeric array, a cell (a list of values, in MATLAB's order),
# a struct (a dict of its fields) or text.
MatValue = Union[np.ndarray, list, dict, MatText]


def _cell(items: list) -> Union[list, MatText]:
    """A cell's items; a cell of single names (`{'a.mp4', 'b.mp4'}`) is text, one per item."""
    if items and all(isinstance(i, MatText) and len(i) == 1 for i in items):
        return MatText(i[0] for i in items)
    return items


_MAT_ERRORS = (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, IndexError,
               KeyError, EOFError, struct.error, zlib.error, UnicodeDecodeError, OverflowError,
               MemoryError)
NOT_MAT = "expected a MATLAB .mat file (v4 to v7.3) of labels"


def _load_mat(path: str) -> dict[str, MatValue]:
    """The variables of a .mat file: v4 to v7.2 through scipy, v7.3 (HDF5) through h5py."""
    data = storage.read_bytes(path)
    try:
        contents = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:  # scipy's answer to a v7.3 file
        return _load_mat_hdf5(data, path)
    except _MAT_ERRORS as exc:  # scipy's parser fails in many ways on bytes that are no .mat
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read MATLAB file ({reason or type(exc).__name__}), {path}, "
                        f"{NOT_MAT}") from None
    return {k: _from_scipy(v) for k, v in contents.items() if not k.startswith("__")}


def _from_scipy(value: np.ndarray) -> MatValue:
    """scipy's form of a variable as `MatValue`: cells and structs are object arrays."""
    value = np.asarray(value)
    if value.dtype.names:  # a struct; a struct array is a cell of structs
        items = [{name: _from_scipy(item[name]) for name in value.dtype.names}
                 for item in value.reshape(-1, order="F")]
        return items[0] if len(items) == 1 else items
    if value.dtype.kind == "O":  # a cell, in MATLAB's (column-major) order
        return _cell([_from_scipy(item) for item in value.reshape(-1, order="F")])
    if value.dtype.kind == "U":
        return MatText(str(row).rstrip() for row in value.reshape(-1))
    return value


def _load_mat_hdf5(data: bytes, path: str) -> dict[str, MatValue]:
    """A v7.3 MAT-file's top-level variables. MATLAB stores arrays column-major, so h5py sees
    each one transposed; a cell is a dataset of references into `#refs#`, a struct a group of
    its fields, text uint16 character codes. Bytes outside the file (links, external storage)
    are refused as for HDF5 data (`trainer.storage.hdf5`)."""
    import h5py

    from trainer.storage.hdf5 import check_inside

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            check_inside(f, path)  # every object, cells' `#refs#` too, before a byte is read
            return {key: _from_hdf5(f, key, path, 0) for key in f if not key.startswith("#")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read MATLAB v7.3 file ({reason}), {path}, {NOT_MAT}") from None


def _from_hdf5(f, name: str, path: str, depth: int) -> MatValue:
    import h5py

    if depth > 8:
        raise UserError(f"variable {name!r} nests cells or structs more than 8 deep, {path}, "
                        "expected label vectors")
    item = f[name]
    kind = item.attrs.get("MATLAB_class", b"")
    kind = kind.decode(errors="replace") if isinstance(kind, bytes) else str(kind)
    if isinstance(item, h5py.Group):
        return {key: _from_hdf5(f, f"{item.name}/{key}", path, depth + 1) for key in item
                if not key.startswith("#")}
    if "MATLAB_empty" in item.attrs and item.attrs["MATLAB_empty"]:
        return MatText() if kind == "char" else [] if kind == "cell" else np.zeros(0)
    values = item[()]
    if h5py.check_ref_dtype(item.dtype):  # a cell: C order of the transposed = MATLAB's order
        return _cell([_from_hdf5(f, f[ref].name, path, depth + 1)
                      for ref in np.asarray(values).reshape(-1)])
    values = np.asarray(values).T
    if kind == "char":
        rows = values.reshape(1, -1) if values.ndim < 2 else values
        return MatText("".join(map(chr, row)).rstrip() for row in rows)
    return values


def _describe(value: MatValue) -> str:
    if isinstance(value, MatText):
        return "text"
    if isinstance(value, dict):
        return f"a struct of {len(value)} fields"
    if isinstance(value, list):
        return f"a cell of {len(value)}"
    return f"{value.dtype} {'x'.join(map(str, value.shape))}"


def _as_vector(value: MatValue, what: str, path: str) -> np.ndarray:
    """A label vector (NaN marks a frame to leave out; whole numbers become ints later)."""
    labels = value
    if (not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iufb"
            or (labels.ndim == 2 and min(labels.shape) != 1) or labels.ndim > 2):
        raise UserError(f"{what} is {_describe(value)}, {path}, expected a numeric vector with "
                        "one label per frame")
    return labels.reshape(-1)


def _vector(contents: Mapping[str, MatValue], key: str, path: str) -> np.ndarray:
    if key not in contents:
        raise UserError(f"variable {key!r} missing, {path}, expected one of "
                        f"{', '.join(contents) or 'none'}")
    return _as_vector(contents[key], f"variable {key!r}", path)


Segment = tuple[list[str], np.ndarray, str]  # videos, their labels in order, the labels' file

LAYOUTS = ("one numeric vector for all frames in video order, a vector per video named after its "
           "file (as trainer.predict --mat writes), a struct with a field per video, or a cell "
           "of one vector per video (in video order, or beside a variable of the videos' names)")


def label_segments(videos: Sequence[str], label_files: Sequence[str], key: Optional[str]
                   ) -> list[Segment]:
    """Which labels go with which frames: one .mat per video (paired in order), or one for all
    videos, in any layout of `LAYOUTS` (`_pair`)."""
    videos, label_files = list(videos), list(label_files)
    if len(label_files) == len(videos):
        return [seg for v, f in zip(videos, label_files) for seg in _pair([v], f, key)]
    if len(label_files) != 1:
        raise UserError(f"--labels given {len(label_files)} times for {len(videos)} videos, "
                        "command line, expected one --labels for all videos or one after each "
                        "--video, in the same order")
    return _pair(videos, label_files[0], key)


def _pair(videos: list[str], path: str, key: Optional[str]) -> list[Segment]:
    """The segments of one .mat file for `videos`. By name where the file names the videos
    (variables, struct fields or a names variable beside a cell: a video's name is its path as
    given, its file name, or `variable_names`'s), by order for a cell without names, and one
    vector for all frames where the file holds one numeric vector (or `--labels_key` picks it)."""
    contents = _load_mat(path)
    names = variable_names(videos)
    if key is None:
        if (len(videos) > 1 or len(contents) > 1) and set(names) <= set(contents):
            return [([v], _vector(contents, n, path), path) for v, n in zip(videos, names)]
        candidates = [k for k, v in contents.items() if not isinstance(v, MatText)]
        if len(candidates) != 1:
            found = ", ".join(f"{k} ({_describe(v)})" for k, v in contents.items()) or "none"
            raise UserError(f"cannot tell the labels of {len(videos)} video(s) among {len(contents)} "
                            f"variables ({found}), {path}, expected {LAYOUTS}; or --labels_key "
                            "NAME")
        key = candidates[0]
    if key not in contents:
        _vector(contents, key, path)  # says it is missing
    value, what = contents[key], f"variable {key!r}"
    if isinstance(value, dict):
        return _by_name(videos, value, f"field of struct {key!r}", path)
    if isinstance(value, list) and not isinstance(value, MatText):
        text = [k for k, v in contents.items() if isinstance(v, MatText) and len(v) == len(value)]
        paired = {}
        for names_key in text:  # several text variables: those that name every video
            try:
                paired[names_key] = _by_name(videos, dict(zip(contents[names_key], value)),
                                             f"name in {names_key!r} beside cell {key!r}", path,
                                             len(value))
            except UserError:
                if len(text) == 1:
                    raise
        if len(paired) == 1:
            return next(iter(paired.values()))
        if text:
            raise UserError(f"{len(paired) or 'none'} of the variables {', '.join(text)} name "
                            f"every video of cell {key!r}, {path}, expected one variable of the "
                            "videos' names beside the cell")
        if len(value) != len(videos):
            raise UserError(f"{what} is a cell of {len(value)} but {len(videos)} videos are given, "
                            f"{path}, expected one vector per video, in the order of --video (or "
                            "a variable of the videos' names beside the cell)")
        return [([v], _as_vector(item, f"cell {i + 1} of {what}", path), path)
                for i, (v, item) in enumerate(zip(videos, value))]
    return [(videos, _as_vector(value, what, path), path)]


def _by_name(videos: list[str], named: Mapping[str, MatValue], what: str, path: str,
             expected: Optional[int] = None) -> list[Segment]:
    """Each video's vector from `named`, looked up by its path as given, then by its file's
    name with and without extension (a Windows path's too), then by `variable_names`."""
    lookup: dict[str, MatValue] = {}
    for name, value in named.items():
        base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        for k in (name, base, os.path.splitext(base)[0], variable_name(base)):
            lookup.setdefault(k, value)
    if expected is not None and len(named) != expected:
        raise UserError(f"names are not distinct ({len(named)} of {expected}), {path}, expected "
                        "one name per vector of the cell")
    out = []
    for video, own in zip(videos, variable_names(videos)):
        base = os.path.basename(video.rstrip("/"))
        k = next((k for k in (video, base, os.path.splitext(base)[0], own) if k in lookup), None)
        if k is None:
            raise UserError(f"no labels for video {video} (no {what} is {own!r}; there are "
                            f"{', '.join(list(named)[:20])}), {path}, expected a vector for each "
                            "video, named after its file")
        out.append(([video], _as_vector(lookup[k], f"the labels of {video} ({what} {k!r})", path),
                    path))
    return out


def write_mat(local_path: str, labels: Mapping[str, np.ndarray]) -> None:
    """Save {video: labels} as a MATLAB file, one double column vector per video, named by
    `variable_names`: `S = load('curated.mat'); S.video1` in MATLAB, and the layout `mat_labels`
    and `label_segments` read back. 2-D values (one row per frame) are saved as they are."""
    names = variable_names(list(labels))
    arrays = {}
    for name, values in zip(names, labels.values()):
        values = np.asarray(values, dtype=np.float64)
        arrays[name] = values.reshape(-1, 1) if values.ndim == 1 else values
    scipy.io.savemat(local_path, arrays, do_compression=True)


def settled(segments: Sequence[Segment], spec: ImageSpec) -> ImageSpec:
    """`spec` with what it leaves open (`data.image_size`, `data.color`: auto) taken from the
    first frame of the first video that has one, as image files take it from the first image."""
    if spec.size is not None and spec.channels is not None:
        return spec
    for paths, _, _ in segments:
        for path in paths:
            first = next(decode_frames(path, spec), None)
            if first is not None:
                return spec.settle(first)
    return spec


def resize_line(sizes: Mapping[tuple[int, int], int], size: Sequence[int]) -> Optional[str]:
    """What `frames` resized to `size` (h, w), as training says it of image files; None when
    nothing was."""
    other = {s: n for s, n in sorted(sizes.items()) if s != tuple(size)}
    if not other:
        return None
    return (f"{sum(other.values())} of {sum(sizes.values())} video frames were resized to "
            f"{size[0]}x{size[1]} (data.image_size, or the first frame's size), from "
            + ", ".join(f"{h}x{w} ({n})" for (h, w), n in other.items()))


def frames(segments: Sequence[Segment], spec: ImageSpec, chunk: int,
           sizes: Optional[dict] = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frames, labels, videos) chunks over all segments' videos in order; one label per frame,
    a mismatch named by its videos and labels file. `spec` should be `settled`, so that every
    frame has one size; `sizes` counts the frames by their own size (`resize_line`)."""
    buf_x: list[np.ndarray] = []
    buf_y: list = []
    buf_g: list[str] = []
    for paths, labels, labels_path in segments:
        seen = 0
        for path in paths:
            for image in decode_frames(path, spec, sizes):
                if seen >= len(labels):
                    raise UserError(f"video has more frames than labels ({len(labels)}), "
                                    f"{path} frame {seen}, expected one label per frame in "
                                    f"{labels_path}")
                label = labels[seen]
                seen += 1
                if labels.dtype.kind == "f" and not np.isfinite(label):
                    continue
                buf_x.append(image)
                buf_y.append(label)
                buf_g.append(path)
                if len(buf_x) == chunk:
                    yield _chunk(buf_x, buf_y, buf_g)
                    buf_x, buf_y, buf_g = [], [], []
        if seen != len(labels):
            raise UserError(f"{len(labels)} labels but {seen} frames, {labels_path}, expected one "
                            f"label per frame of {', '.join(paths)}, in order")
    if buf_x:
        yield _chunk(buf_x, buf_y, buf_g)


def _chunk(xs: list[np.ndarray], ys: list, gs: list[str]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(ys)
    if y.dtype.kind == "f" and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return np.stack(xs), y, np.array(gs)

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
from typing import Iterator, Mapping, Optional, Sequence

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


def decode_frames(path: str, spec: ImageSpec) -> Iterator[np.ndarray]:
    """Every frame of the video, in order, as uint8 (H, W, C) sized and coloured by `spec`.

    One frame is decoded at a time, so a video of any length costs one frame of memory here.
    8-bit frames decode to whole numbers up to 255, so uint8 holds them losslessly; a model
    receives the same values as float32, whether it reads them from shards or from the video.
    """
    index = 0
    try:
        with storage.open_read(path) as f, av.open(f) as container:
            if not container.streams.video:
                raise UserError(f"no video stream, {path}, expected a video file FFmpeg reads")
            for frame in container.decode(video=0):
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


def _load_mat(path: str) -> dict[str, np.ndarray]:
    """The variables of a .mat file: v4 to v7.2 through scipy, v7.3 (HDF5) through h5py."""
    data = storage.read_bytes(path)
    try:
        contents = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:  # scipy's answer to a v7.3 file
        return _load_mat_hdf5(data, path)
    except (ValueError, TypeError, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read MATLAB file ({reason}), {path}, expected a .mat file "
                        "(v4 to v7.3) with a label vector") from None
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def _load_mat_hdf5(data: bytes, path: str) -> dict[str, np.ndarray]:
    """A v7.3 MAT-file's top-level numeric variables. MATLAB stores arrays column-major, so
    h5py sees each one transposed; bytes outside the file (links, external storage) are
    refused as for HDF5 data (`trainer.data.readers`)."""
    import h5py

    from trainer.storage.hdf5 import check_inside

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            check_inside(f, path)
            return {key: np.asarray(item[()]).T for key, item in f.items()
                    if isinstance(item, h5py.Dataset) and not key.startswith("#")}
    except OSError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read MATLAB v7.3 file ({reason}), {path}, expected a .mat file "
                        "(v4 to v7.3) with a label vector") from None


def _vector(contents: Mapping[str, np.ndarray], key: str, path: str) -> np.ndarray:
    if key not in contents:
        raise UserError(f"variable {key!r} missing, {path}, expected one of "
                        f"{', '.join(contents)}")
    labels = np.asarray(contents[key])
    if labels.dtype.kind not in "iufb" or (labels.ndim == 2 and min(labels.shape) != 1) or labels.ndim > 2:
        raise UserError(f"variable {key!r} has shape {labels.shape} and dtype {labels.dtype}, {path}, "
                        "expected a numeric vector with one label per frame")
    return labels.reshape(-1)  # NaN marks a frame to leave out; whole numbers become ints later


def mat_labels(path: str, key: Optional[str]) -> np.ndarray:
    """The label vector in a .mat file: variable `key`, or its only variable."""
    contents = _load_mat(path)
    if key is None:
        if len(contents) != 1:
            raise UserError(f"{len(contents)} variables ({', '.join(contents)}), {path}, expected "
                            "one label vector or --labels_key NAME")
        key = next(iter(contents))
    return _vector(contents, key, path)


Segment = tuple[list[str], np.ndarray, str]  # videos, their labels in order, the labels' file


def label_segments(videos: Sequence[str], label_files: Sequence[str], key: Optional[str]
                   ) -> list[Segment]:
    """Which labels go with which frames: one .mat per video (paired in order), or one for all
    videos, holding either one vector for all their frames in order or a vector per video named
    as `variable_names` names them (the layout `trainer.predict --mat` writes)."""
    videos, label_files = list(videos), list(label_files)
    if len(label_files) == len(videos):
        return [([v], _labels_of(f, key, variable_name(v)), f) for v, f in zip(videos, label_files)]
    if len(label_files) != 1:
        raise UserError(f"--labels given {len(label_files)} times for {len(videos)} videos, "
                        "command line, expected one --labels for all videos or one after each "
                        "--video, in the same order")
    path = label_files[0]
    contents = _load_mat(path)
    names = variable_names(videos)
    if key is None and len(videos) > 1 and set(names) <= set(contents):
        return [([v], _vector(contents, n, path), path) for v, n in zip(videos, names)]
    return [(videos, mat_labels(path, key), path)]


def _labels_of(path: str, key: Optional[str], own_name: str) -> np.ndarray:
    """A paired file's vector: `key`, its only variable, or the one named after its video."""
    if key is None:
        contents = _load_mat(path)
        if len(contents) > 1 and own_name in contents:
            return _vector(contents, own_name, path)
    return mat_labels(path, key)


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


def frames(segments: Sequence[Segment], spec: ImageSpec, chunk: int
           ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frames, labels, videos) chunks over all segments' videos in order; one label per frame,
    a mismatch named by its videos and labels file."""
    buf_x: list[np.ndarray] = []
    buf_y: list = []
    buf_g: list[str] = []
    for paths, labels, labels_path in segments:
        seen = 0
        for path in paths:
            for image in decode_frames(path, spec):
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

"""Seed 001's raw material: video files plus a MATLAB vector with one label per frame.

Frames are decoded with PyAV (FFmpeg bindings whose wheels ship their own decoder), then sized
and coloured as image files are (`trainer.data.images`); labels are read with `scipy.io.loadmat`.
Both stream through `storage`, so `gs://` works. Frames whose label is NaN are left out (seed
001's "uncuratable" frames). Each frame's group is its video (the path as given), so a split by
group never puts frames of one video on both sides.
"""

from __future__ import annotations

import io
from typing import Iterator, Optional

import av
import numpy as np
import scipy.io

from trainer import storage
from trainer.data.images import ImageSpec, to_array
from trainer.errors import UserError


def mat_labels(path: str, key: Optional[str]) -> np.ndarray:
    """The label vector in a .mat file: variable `key`, or its only variable."""
    try:
        contents = scipy.io.loadmat(io.BytesIO(storage.read_bytes(path)))
    except (ValueError, TypeError, NotImplementedError, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read MATLAB file ({reason}), {path}, expected a .mat file "
                        "(v4 to v7.2) with a label vector") from None
    names = [k for k in contents if not k.startswith("__")]
    if key is None:
        if len(names) != 1:
            raise UserError(f"{len(names)} variables ({', '.join(names)}), {path}, expected one "
                            "label vector or --labels_key NAME")
        key = names[0]
    if key not in contents:
        raise UserError(f"variable {key!r} missing, {path}, expected one of {', '.join(names)}")
    labels = np.asarray(contents[key])
    if labels.dtype.kind not in "iufb" or (labels.ndim == 2 and min(labels.shape) != 1) or labels.ndim > 2:
        raise UserError(f"variable {key!r} has shape {labels.shape} and dtype {labels.dtype}, {path}, "
                        "expected a numeric vector with one label per frame")
    return labels.reshape(-1)  # NaN marks a frame to leave out; whole numbers become ints later


def frames(paths: list[str], labels: np.ndarray, spec: ImageSpec, chunk: int,
           labels_path: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frames, labels, videos) chunks over all videos in order; one label per frame."""
    seen = 0
    buf_x: list[np.ndarray] = []
    buf_y: list = []
    buf_g: list[str] = []
    for path in paths:
        try:
            with storage.open_read(path) as f, av.open(f) as container:
                for frame in container.decode(video=0):
                    if seen >= len(labels):
                        raise UserError(f"video has more frames than labels ({len(labels)}), "
                                        f"{path} frame {seen}, expected one label per frame in "
                                        f"{labels_path}")
                    label = labels[seen]
                    seen += 1
                    if labels.dtype.kind == "f" and not np.isfinite(label):
                        continue
                    # 8-bit frames decode to whole numbers up to 255: kept as uint8, losslessly.
                    buf_x.append(to_array(frame.to_image(), spec, f"{path} frame {seen - 1}"
                                          ).astype(np.uint8))
                    buf_y.append(label)
                    buf_g.append(path)
                    if len(buf_x) == chunk:
                        yield _chunk(buf_x, buf_y, buf_g)
                        buf_x, buf_y, buf_g = [], [], []
        except av.error.FFmpegError as exc:
            raise UserError(f"cannot decode video ({exc}), {path}, expected a video file FFmpeg "
                            "reads") from None
    if seen != len(labels):
        raise UserError(f"{len(labels)} labels but {seen} frames, {labels_path}, expected one label "
                        "per frame of the videos, in order")
    if buf_x:
        yield _chunk(buf_x, buf_y, buf_g)


def _chunk(xs: list[np.ndarray], ys: list, gs: list[str]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(ys)
    if y.dtype.kind == "f" and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return np.stack(xs), y, np.array(gs)

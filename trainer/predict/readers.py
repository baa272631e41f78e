"""Inputs read one at a time as the model's input: `(input, frame, image)` items, read lazily
(`frame` is None but for video frames). Image files and video frames go through training's own
decoders, shards through the checked `.npy`/`.npz` readers."""

from __future__ import annotations

import sys
import time
from typing import Iterator, Optional, Sequence, TextIO

import numpy as np

from trainer import storage
from trainer.data import images, video
from trainer.data.npyfile import open_npy, open_npz
from trainer.errors import UserError
from trainer.predict.inputs import SHARD_EXTENSIONS


def _image_spec(path: str, shape: tuple[int, ...]):
    """What the image decoder makes of a file (or frame) for a model of input `shape`."""
    height, width, channels = shape
    if channels not in (1, 3):
        raise UserError(f"model takes {channels}-channel images, {path}, expected a model of "
                        "1 or 3 channels for image files and videos (use .npy/.npz shards)")
    return images.ImageSpec((height, width), channels)


def read_image(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """One image file as the model's input, decoded exactly as training decoded its images:
    the same decoder, to the height, width and channels the model was trained on."""
    return images.decode(storage.read_bytes(path, what="an image"), _image_spec(path, shape),
                         path)


def read_video(path: str, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A video's frames as the model's input, one at a time, decoded exactly as
    `trainer.convert --video` decodes the frames a model is trained on."""
    for frame in video.decode_frames(path, _image_spec(path, shape)):
        yield frame.astype(np.float32)


def read_shard(path: str, shape: tuple[int, ...], block: int = 256
               ) -> Iterator[tuple[str, np.ndarray]]:
    """Images of an .npz (array `x`) or .npy shard, a block of rows at a time; a single image in
    a file is allowed too. Headers are checked against the file's size before anything is read,
    and pickled objects are refused (`trainer.data.npyfile`)."""
    arr = open_npy(path) if path.endswith(".npy") else open_npz(path, ("x",))["x"]
    if arr.dtype.kind not in "biuf":
        raise UserError(f"array of dtype {arr.dtype}, {path}, expected a numeric .npz/.npy array "
                        "of images")
    image_shapes = {tuple(shape), tuple(shape[:2])} if shape[2] == 1 else {tuple(shape)}
    first = (shape[2], *shape[:2])  # channel-first (C, H, W), as PyTorch keeps images
    if tuple(arr.shape) in image_shapes:
        yield f"{path}[0]", np.asarray(arr.load(), dtype=np.float32).reshape(shape)
        return
    channel_first = tuple(arr.shape[1:]) == first and first != tuple(shape)
    if not channel_first and tuple(arr.shape[1:]) not in image_shapes:
        raise UserError(f"images of shape {tuple(arr.shape[1:])}, {path}, expected {tuple(shape)} "
                        "as the model was trained on")
    read = arr.reader()
    for start in range(0, arr.shape[0], block):
        rows = read(start, min(arr.shape[0], start + block))
        if channel_first:
            rows = np.moveaxis(rows, 1, -1)
        for i, image in enumerate(rows):
            yield f"{path}[{start + i}]", np.asarray(image, dtype=np.float32).reshape(shape)


Item = tuple[str, Optional[int], np.ndarray]  # input, frame of a video (or None), image


def read_inputs(files: Sequence[str], shape: tuple[int, ...],
                progress: Optional["Progress"] = None) -> Iterator[Item]:
    for path in files:
        if path.lower().endswith(SHARD_EXTENSIONS):
            yield from ((name, None, image) for name, image in read_shard(path, shape))
        elif video.is_video(path):
            for frame, image in enumerate(read_video(path, shape)):
                if progress:
                    progress.frame(path, frame)
                yield path, frame, image
        else:
            yield path, None, read_image(path, shape)


class Progress:
    """A line on `stream` every `every` frames of a video: where it is, how fast it goes."""

    def __init__(self, every: int, stream: Optional[TextIO] = None):
        self.every, self.stream = every, stream
        self._started: dict[str, float] = {}
        self._total: dict[str, Optional[int]] = {}

    def frame(self, path: str, index: int) -> None:
        if index == 0:
            from trainer.data import video

            self._started[path], self._total[path] = time.monotonic(), video.frame_count(path)
        if index and index % self.every == 0:
            rate = index / max(time.monotonic() - self._started[path], 1e-9)
            total = f" of {self._total[path]}" if self._total[path] else ""
            print(f"progress: {path} frame {index}{total} ({rate:.0f} frames/s)",
                  file=self.stream or sys.stderr, flush=True)

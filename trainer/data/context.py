"""`data.frame_context: K`: the model sees frames t-K..t+K of a video as the channels of one
sample (contact is coherent over frames), and at a video's edges the edge frame is repeated.

A video is a group (`trainer.convert --video` records each frame's video as its group) and its
frames are the group's samples in file order, as `convert` writes them. The channels are
stacked frame-major: frame t-K's channels first, frame t+K's last. Training (`ContextView`),
`trainer.predict` (`stream`) and the served model (`stack_tf`) stack the same way.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

import numpy as np

from trainer.data.source import Block, View
from trainer.errors import UserError


def neighbours(groups: np.ndarray, k: int) -> np.ndarray:
    """(N, 2K+1) row numbers: for each row, the rows of its group K before to K after it (in
    file order), the group's first or last row where the group runs out."""
    n = len(groups)
    out = np.empty((n, 2 * k + 1), np.int64)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # rows of each group together, in file order
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1, n]
    for a, b in zip(starts[:-1], starts[1:]):
        rows = order[a:b]
        at = np.arange(len(rows))[:, None] + np.arange(-k, k + 1)[None, :]
        out[rows] = rows[np.clip(at, 0, len(rows) - 1)]
    return out


def stack(frames: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """(n, 2K+1, ...) neighbour images -> one sample each, their channels concatenated in order."""
    n, span = frames.shape[:2]
    if channel_axis == -1:  # (n, S, H, W, C) -> (n, H, W, S*C)
        moved = np.moveaxis(frames, 1, -2)
        return moved.reshape(*moved.shape[:-2], span * moved.shape[-1])
    return frames.reshape(n, span * frames.shape[2], *frames.shape[3:])  # (n, S*C, H, W)


class ContextView(View):
    """A view whose samples are their frame and its neighbours, stacked as channels."""

    def __init__(self, view: View, k: int, where: str):
        if view.source.groups is None:
            raise UserError(f"no group per sample, data.frame_context={k}, {where}, expected the "
                            "video of each frame (the group `trainer.convert --video` records)")
        super().__init__(view.source, view.rows, view.name)
        self.k = k
        self.around = neighbours(view.source.groups, k)

    def _scale(self, shape: tuple, axis: int) -> tuple:
        axis %= len(shape)
        return tuple(d * (2 * self.k + 1) if i == axis else d for i, d in enumerate(shape))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._scale(self.source.sample_shape, -1)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return self._scale(self.source.stored_shape, 0 if self.source.channels_first else -1)

    def read_stored(self, block: Block) -> np.ndarray:
        wanted = self.around[self.rows[block.positions]]  # (n, 2K+1) source rows
        unique = np.unique(wanted)
        plain = View(self.source, unique)
        images = np.concatenate([plain.read_stored(b) for b in plain.blocks(1 << 16)])
        frames = images[np.searchsorted(unique, wanted)]
        return stack(frames, 1 if self.source.channels_first else -1)

    def read_into(self, block: Block, out: np.ndarray, slots: np.ndarray) -> int:
        out[np.asarray(slots, np.int64)] = self.read_stored(block)
        return len(slots)

    def take(self, positions) -> np.ndarray:
        positions = np.asarray(positions, np.int64)
        return self.read(Block(-1, positions, positions))


def wrap(views: dict, k: int) -> dict:
    """The splits' views with `data.frame_context: k` (unchanged for 0)."""
    if not k:
        return views
    return {name: ContextView(v, k, f"data.{name}={v.name}") for name, v in views.items()}


def frame_shape(input_shape: tuple, k: int) -> tuple:
    """The shape of one frame of a model whose input stacks 2K+1 frames."""
    h, w, c = input_shape
    return (h, w, c // (2 * k + 1))


def stream(items: Iterable[tuple[str, Optional[int], np.ndarray]], k: int
           ) -> Iterator[tuple[str, Optional[int], np.ndarray]]:
    """`trainer.predict`'s (input, frame, image) items of one input file (a video's frames, a
    shard's rows, in order), each image stacked with its neighbours, the edge frame repeated;
    holds 2K+1 frames at most."""
    if not k:
        yield from items
        return
    window: list = []  # the last items read, at most 2K+1: frames done-K .. done+K
    first = done = 0  # the frame number of window[0]; the next frame to give out

    def out(last: int):
        picked = [window[min(max(done + d, 0), last) - first][2] for d in range(-k, k + 1)]
        name, frame, _ = window[done - first]
        return name, frame, stack(np.stack(picked)[None])[0]

    for item in items:
        window.append(item)
        if first + len(window) - 1 - done >= k:  # frame `done` has its K later neighbours
            yield out(first + len(window) - 1)
            done += 1
            if done - first > k:  # its earlier neighbours beyond K are no longer needed
                window.pop(0)
                first += 1
    while done < first + len(window):  # the last K frames: the last one repeated after them
        yield out(first + len(window) - 1)
        done += 1


def stream_files(files, read, k: int) -> Iterator[tuple[str, Optional[int], np.ndarray]]:
    """`stream` over each file's items (`read(path)`), each file one sequence of frames."""
    for path in files:
        yield from stream(read(path), k)


def stack_tf(images, k: int):
    """The served model's twin of `stream` over one request: the instances are consecutive
    frames of one video, each stacked with its neighbours, the edge instances repeated."""
    from trainer.kerasflavor import tf

    n = tf.shape(images)[0]
    at = tf.clip_by_value(tf.range(n)[:, None] + tf.range(-k, k + 1)[None, :], 0, n - 1)
    frames = tf.gather(images, at)  # (n, 2K+1, H, W, C)
    frames = tf.transpose(frames, [0, 2, 3, 1, 4])
    shape = tf.shape(frames)
    return tf.reshape(frames, [shape[0], shape[1], shape[2], shape[3] * shape[4]])


def from_metadata(metadata: dict, input_shape: tuple, path: str) -> int:
    """The frame context a model file stores (0 when it has none), checked against its input."""
    k = metadata.get("frame_context") or 0
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or \
            (k and input_shape[-1] % (2 * k + 1)):
        raise UserError(f"model metadata 'frame_context' is {repr(k)[:200]}, {path}, expected "
                        f"a whole number K >= 0 whose 2K+1 frames divide the input's "
                        f"{input_shape[-1]} channels")
    return k

"""An epoch of a split's rows read in shuffled windows, into reused buffers, in bounded memory.

Each epoch draws a new order from (`train.seed`, epoch), so runs repeat exactly and a resumed
run continues the same sequence. The order is two-level:
1. the split is cut into blocks of `shuffle_block` consecutive rows (never across a file), and
   the blocks of all files are put in a random order;
2. consecutive blocks fill a window of `shuffle_window` rows, read in parallel threads while
   the previous window is being consumed; the window's rows are permuted and cut into batches.

The permutation is drawn before the window is read, so each row is read straight from the file
into its final place in the window's buffer (`View.read_into`: one copy, `os.preadv` for local
files), and batches are then slices of the window: TensorFlow takes the buffer without a copy
and a batch is a view of it. Buffers are reused once TensorFlow has let go of every batch cut
from them, so memory is a few windows, whatever the size of the data set. `trainer.data.pipeline`
turns the windows into tf.data batches.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from trainer.data.finite import Tally
from trainer.data.shares import WHOLE, Share, part_of, share_rows
from trainer.data.source import Block, View

WINDOW_BYTES = 256 << 20  # a window never holds more than this, whatever `shuffle_window` says
ALIGN = 64  # TensorFlow takes a NumPy buffer without a copy when it is aligned to this


class RowsRead:
    """The rows that this process's reader delivered, per epoch: with several workers, its
    share of the data (the epoch record logs it as `rows_read`)."""

    def __init__(self):
        self.by_epoch: dict[int, int] = {}

    def add(self, epoch: int, rows: int) -> None:
        self.by_epoch[epoch] = self.by_epoch.get(epoch, 0) + rows

    def __getitem__(self, epoch: int) -> int:
        return self.by_epoch.get(epoch, 0)


@dataclass(frozen=True)
class PipelineOptions:
    """The input pipeline's settings (`pipeline.pipeline_options` makes them from the `data`
    section); here, beside the reading that uses most of them."""

    batch_size: int
    shuffle: bool = False
    seed: int = 0
    window: int = 16384
    block: int = 1024
    threads: int = 4
    augment: Sequence = ()  # `data.augment`: names, or (name, strength) pairs
    nonfinite: str = "error"  # `data.nonfinite`: what a NaN or Inf read from the data gets
    classes: int = 0  # classification: what mixup and cutmix turn labels into probabilities of


def window_rows(view: View, opts: PipelineOptions) -> int:
    """Rows per window: `shuffle_window`, capped by `WINDOW_BYTES`, at least one batch."""
    sample_bytes = 4 * int(np.prod(view.sample_shape))
    return max(opts.batch_size, min(opts.window, WINDOW_BYTES // max(sample_bytes, 1)))


def epoch_order(view: View, opts: PipelineOptions, epoch: int) -> tuple[list, np.random.Generator]:
    """The blocks of one epoch in reading order, and the generator that permutes its windows."""
    blocks = view.blocks(opts.block)
    rng = np.random.default_rng([opts.seed, epoch])
    if opts.shuffle:
        blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    return blocks, rng


def plan_windows(blocks: list[Block], rows: int, batch: int) -> list[tuple[list[Block], int, int]]:
    """(blocks, carried-in rows, rows kept) per window.

    Blocks fill a window until it holds `rows` with the rows carried in from the previous one;
    a window keeps whole batches and carries the rest on, except the last, which keeps all.
    """
    plan, group, carry, size = [], [], 0, 0
    for i, block in enumerate(blocks):
        group.append(block)
        size += len(block.rows)
        if carry + size >= rows or i == len(blocks) - 1:
            total = carry + size
            keep = total if i == len(blocks) - 1 else total - total % batch
            plan.append((group, carry, keep))
            group, carry, size = [], total - keep, 0
    return plan


class Buffers:
    """Aligned float32 window buffers, reused once nothing outside this pool refers to them.

    TensorFlow holds a reference to a NumPy array it shares (and each batch sliced from it keeps
    the window alive), so a buffer whose reference count is back to what the pool alone holds
    can be written again; otherwise a new one is made. A handful exist at a time.
    """

    def __init__(self, sample_shape: tuple[int, ...], rows: int):
        self.sample_shape, self.rows = tuple(sample_shape), rows
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []  # (memory, its aligned array)
        self._free: list[int] = []  # the memory's reference count when nothing else holds it
        self._lock = threading.Lock()

    def get(self, rows: int) -> np.ndarray:
        """A free buffer of `rows` rows (a view: the buffer is taken while it, or any view of
        it, lives)."""
        with self._lock:
            for entry, free in zip(self._pool, self._free):
                if len(entry[1]) >= rows and self._refs(entry) <= free:
                    return entry[1][:rows]  # a new view: while it lives, the buffer is taken
            entry = self._new(max(rows, self.rows))
            self._pool.append(entry)
            self._free.append(self._refs(entry))  # measured as `get` measures: the pool's refs
            return entry[1][:rows]

    @staticmethod
    def _refs(entry: tuple) -> int:
        return sys.getrefcount(entry[0])

    def _new(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        nbytes = rows * int(np.prod(self.sample_shape)) * 4
        memory = np.empty(nbytes + ALIGN, np.uint8)
        at = -memory.ctypes.data % ALIGN
        return memory, memory[at:at + nbytes].view(np.float32).reshape(rows, *self.sample_shape)

    def __len__(self) -> int:
        return len(self._pool)


def window_buffers(view: View, opts: PipelineOptions, rows: int) -> Buffers:
    """The pool of a pass's window buffers, each of `rows` rows, or of the view's rows where it
    has fewer (a window never holds more); checked against the memory there is before any is
    made, so samples of a huge declared shape end in one line, not in an allocation error."""
    from trainer.runtime import memory

    rows = max(1, min(rows, len(view)))
    memory.check_fits(rows * 4 * int(np.prod(view.stored_shape)),
                      f"a read window of {rows} samples of shape {tuple(view.stored_shape)} in "
                      "float32", f"{view.name} (data.shuffle_block={opts.block}, "
                      f"train.batch_size={opts.batch_size})")
    return Buffers(view.stored_shape, rows)


def windows(view: View, y: np.ndarray, opts: PipelineOptions, epoch: int,
            buffers: Optional[Buffers] = None, tally: Optional[Tally] = None,
            share: Share = WHOLE, rows_read: Optional[RowsRead] = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per window, rows in the epoch's order (only the `share`'s part of it);
    all windows but the last hold whole steps. The images are a view of a pooled buffer: do not
    keep it past the next window unless TensorFlow holds it (which the pool sees). Each window
    is checked for NaN and Inf as it is read (`tally`, by default one for this pass); the rows
    the reader delivers are counted in `rows_read`."""
    if tally is None:
        tally = Tally(view.name, opts.nonfinite)
    blocks, rng = epoch_order(view, opts, epoch)
    if share != WHOLE:
        blocks = part_of(blocks, *share_rows(len(view), opts.batch_size, share))
    rows, batch = window_rows(view, opts), opts.batch_size // share.pipelines  # rows a step
    plan = plan_windows(blocks, rows, batch)
    if buffers is None:
        buffers = window_buffers(view, opts, rows + opts.block + batch)
    with ThreadPoolExecutor(max(1, opts.threads)) as pool:

        def start(w: int):
            """Draw window w's order and read its blocks, in the background, into their places."""
            group, carry, _ = plan[w]
            total = carry + sum(len(b.rows) for b in group)
            order = rng.permutation(total) if opts.shuffle else np.arange(total)
            x = buffers.get(total)
            reads, at = [], carry
            for block in group:
                reads.append(pool.submit(view.read_into, block, x, order[at:at + len(block.rows)]))
                at += len(block.rows)
            return x, order, reads

        pending = start(0) if plan else None
        carry_x, carry_y, carry_pos = None, y[:0], np.zeros(0, np.int64)
        read = 0
        for w, (group, carry, keep) in enumerate(plan):
            x, order, reads = pending
            delivered = sum(r.result() for r in reads)
            if rows_read is not None:
                rows_read.add(epoch, delivered)
            if carry:  # the previous window's last rows, not yet batched, join this one
                x[order[:carry]] = carry_x
            labels = np.empty((len(order), *y.shape[1:]), y.dtype)
            labels[order] = np.concatenate([carry_y, *(y[b.positions] for b in group)])
            positions = np.empty(len(order), np.int64)  # the view's row in each slot
            positions[order] = np.concatenate([carry_pos, *(b.positions for b in group)])
            # Carried rows were checked (and zeroed) in their own window: no double count.
            tally.scan(x, view.locate, writable=True, positions=positions)
            read += len(order) - carry
            tally.check(read if read < len(view) else None)
            carry_x, carry_y, carry_pos = x[keep:len(order)], labels[keep:], positions[keep:]
            pending = start(w + 1) if w + 1 < len(plan) else None  # read ahead
            yield x[:keep], labels[:keep]
            del x, order, reads
        tally.report()



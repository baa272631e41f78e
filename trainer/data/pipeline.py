"""A split's rows -> shuffled, batched, prefetched tf.data batches, in bounded memory.

Each epoch draws a new order from (`train.seed`, epoch), so runs repeat exactly and a resumed
run continues the same sequence. The order is two-level:
1. the split is cut into blocks of `shuffle_block` consecutive rows (never across a file), and
   the blocks of all files are put in a random order;
2. consecutive blocks fill a window of `shuffle_window` rows, read in parallel threads while
   the previous window is being consumed; the window's rows are permuted and cut into batches.

The permutation is drawn before the window is read, so each row is read straight from the file
into its final place in the window's buffer (`View.read_into`: one copy, `os.preadv` for local
files), and batches are then slices of the window: TensorFlow takes the buffer without a copy
and a batch is a view of it. No per-sample work is done in Python or tf.data; the only per-batch
work is the optional augmentation, vectorised over the batch. Buffers are reused once TensorFlow
has let go of every batch cut from them, so memory is a few windows, whatever the size of the
data set.

A job with several workers (MultiWorkerMirroredStrategy) runs one pipeline per worker, made by
the strategy's `distribute_datasets_from_function`; its `InputContext` gives each pipeline a
`Share`. Every worker draws the same block order, and each reads only its own contiguous part
of it (a block on the border is cut between the two): each row is read by exactly one worker an
epoch, and the parts together are the whole order. Every worker runs the same number of steps:
each step gives every replica `batch_size` rows, and the epoch's last, short step splits its
rows evenly over all replicas (a remainder smaller than the number of replicas is left out of
that epoch: a different few rows each epoch, since the order is drawn anew).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from trainer.config import DataConfig
from trainer.data import augment_ops, augment_spec
from trainer.data.finite import Tally
from trainer.data.source import Block, View
from trainer.errors import StorageUnavailable, UserError
from trainer.kerasflavor import tf

WINDOW_BYTES = 256 << 20  # a window never holds more than this, whatever `shuffle_window` says
ALIGN = 64  # TensorFlow takes a NumPy buffer without a copy when it is aligned to this


@dataclass(frozen=True)
class Share:
    """Which part of each epoch one input pipeline reads, and how it cuts its batches.

    The default, one pipeline feeding one model (`replicas=1`), reads everything and yields
    global batches, which a one-machine strategy splits between its GPUs itself. With
    `pipelines` > 1 (one per worker), pipeline `index` reads only its part of the epoch and
    yields per-replica batches for its own `replicas // pipelines` replicas, as
    `distribute_datasets_from_function` expects.
    """

    pipelines: int = 1
    index: int = 0
    replicas: int = 1  # the replicas that the pipelines together feed per-replica batches

    @property
    def local_replicas(self) -> int:
        return self.replicas // self.pipelines


WHOLE = Share()


def share_of(context: tf.distribute.InputContext) -> Share:
    """This worker's share, from the strategy's input context."""
    return Share(context.num_input_pipelines, context.input_pipeline_id,
                 context.num_replicas_in_sync)


def share_rows(rows: int, batch: int, share: Share) -> tuple[int, int]:
    """[start, stop) of the pipeline's part of an epoch of `rows` rows in its drawn order, for
    a global batch of `batch` rows.

    Each replica gets `batch // replicas` rows a step; the last, short step's rows are spread
    over the replicas (one more to the first ones), or left out when fewer than the replicas.
    """
    full, rest = divmod(rows, batch)
    if rest < share.replicas:
        rest = 0
    per = full * (batch // share.replicas) + rest // share.replicas + (
        np.arange(share.replicas) < rest % share.replicas)
    bounds = np.concatenate([[0], np.cumsum(per)])
    first = share.index * share.local_replicas
    return int(bounds[first]), int(bounds[first + share.local_replicas])


def part_of(blocks: list[Block], start: int, stop: int) -> list[Block]:
    """The rows [start, stop) of the blocks' rows in this order, as blocks (the two at the
    ends cut)."""
    out, at = [], 0
    for block in blocks:
        n = len(block.rows)
        lo, hi = max(start - at, 0), min(stop - at, n)
        if lo < hi:
            out.append(block if hi - lo == n else
                       Block(block.shard, block.rows[lo:hi], block.positions[lo:hi]))
        at += n
    return out


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
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    window: int = 16384
    block: int = 1024
    threads: int = 4
    augment: Sequence = ()  # `data.augment`: names, or (name, strength) pairs
    nonfinite: str = "error"  # `data.nonfinite`: what a NaN or Inf read from the data gets
    classes: int = 0  # classification: what mixup and cutmix turn labels into probabilities of


def pipeline_options(d: DataConfig, seed: int, batch_size: int, shuffle: bool,
                     classes: int = 0) -> PipelineOptions:
    """The input pipeline's settings from the `data` section, `train.seed` and the batch the
    pipeline makes (the global batch: `trainer.training.scaling`); evaluation neither shuffles
    nor augments. `classes`: what mixup and cutmix turn class labels into probabilities of."""
    return PipelineOptions(batch_size=batch_size, shuffle=shuffle, seed=seed,
                           window=d.shuffle_window, block=d.shuffle_block, threads=d.read_threads,
                           augment=augment_spec.parse(d.augment) if shuffle else (),
                           nonfinite=d.nonfinite, classes=classes)


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


def make_dataset(view: View, y: np.ndarray, opts: PipelineOptions, first_epoch: int = 0,
                 epochs: int = 1, first_step: int = 0, split: str = "", share: Share = WHOLE,
                 rows_read: Optional[RowsRead] = None) -> tf.data.Dataset:
    """Batches of `epochs` epochs back to back (`steps_per_epoch`: `steps(view, opts,
    share.replicas)`), the first one starting at step `first_step` (a run resumed mid-epoch gets
    the batches the uninterrupted run would have had: same order, same augmentation). NaN and
    Inf are refused or zeroed as read (`opts.nonfinite`); messages call the data the `split`
    split.

    With a `share` of several pipelines, this is one worker's pipeline: its part of each epoch,
    as `local_replicas` per-replica batches a step."""
    square = view.sample_shape[0] == view.sample_shape[1]
    if "rot90" in dict(augment_spec.parse(opts.augment)) and not square:
        raise UserError(f"images of shape {view.sample_shape[:2]} are not square, data.augment=rot90, "
                        "expected square images for 90-degree rotations")
    label_spec = tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype))
    # Windows hold rows as the files store them; channel-first rows are turned per batch below.
    signature = (tf.TensorSpec((None, *view.stored_shape), tf.float32), label_spec)
    batch = opts.batch_size
    buffers = window_buffers(view, opts, window_rows(view, opts) + opts.block + batch)
    channels_first = view.source.channels_first
    tally = Tally(split or view.name, opts.nonfinite)  # one for all epochs: logged once
    pieces = share.local_replicas  # batches a step: one per replica this pipeline feeds
    piece = batch // share.replicas  # rows of each, but in an epoch's last, short step

    def one_epoch(epoch):
        return tf.data.Dataset.from_generator(
            lambda e: windows(view, y, opts, int(e), buffers, tally, share, rows_read),
            args=(epoch,), output_signature=signature)

    def cut(x, labels):
        # Slices along the first axis of an aligned buffer: views, not copies. A window holds
        # whole steps of `pieces` batches, but the epoch's last window, whose short last step
        # is cut into `pieces` batches as even as can be.
        n = tf.shape(labels, out_type=tf.int64)[0]
        whole = n // (piece * pieces) * (piece * pieces)
        short = whole + tf.range(pieces, dtype=tf.int64) * (n - whole) // pieces
        # Sorted starts and the end; a window that ends on a whole step has no short one.
        bounds = tf.unique(tf.concat([tf.range(0, whole, piece, dtype=tf.int64), short, [n]], 0)).y
        starts = tf.data.Dataset.range(tf.size(bounds, out_type=tf.int64) - 1)
        if channels_first:  # (N, C, H, W) -> (N, H, W, C): one copy per batch, in TensorFlow
            return starts.map(
                lambda i: (tf.transpose(x[bounds[i]:bounds[i + 1]], [0, 2, 3, 1]),
                           labels[bounds[i]:bounds[i + 1]]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return starts.map(lambda i: (x[bounds[i]:bounds[i + 1]], labels[bounds[i]:bounds[i + 1]]))

    ds = tf.data.Dataset.range(first_epoch, first_epoch + epochs).flat_map(one_epoch).flat_map(cut)
    ds = ds.skip(first_step * pieces)
    if opts.shuffle and opts.augment:
        # Keyed by the step's index since epoch 0, whichever epoch this dataset starts at, and
        # the replica the batch is for (one pipeline, one replica: the step's index).
        start = (first_epoch * steps(view, opts, share.replicas) + first_step) * pieces
        first = share.index * pieces

        def key(i):
            return i // pieces * share.replicas + first + i % pieces

        ds = ds.enumerate(start=start).map(
            lambda i, xy: augment(xy[0], xy[1], opts.augment, opts.seed, key(i), opts.classes),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if share == WHOLE:
        # A known length: Keras needs it to run several steps per call (`steps_per_execution`)
        # over validation, test and prediction data.
        ds = ds.apply(tf.data.experimental.assert_cardinality(epochs * steps(view, opts) - first_step))
    options = tf.data.Options()
    # Where the strategy distributes this dataset itself (one machine; evaluation), it splits
    # each batch between the replicas; a worker's own pipeline (`share`) is not split further.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # Parallelism follows the machine: tf.data's own threads, as many as it has cores, tuned by
    # AUTOTUNE (the reads run in `opts.threads` threads of their own).
    options.threading.private_threadpool_size = os.cpu_count() or 1
    options.autotune.enabled = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=1)
def _counter():
    @tf.function
    def run(ds):
        n = tf.constant(0, tf.int64)
        for batch in ds:
            n += tf.shape(batch[1], out_type=tf.int64)[0]
        return n
    return run


def count_samples(ds: tf.data.Dataset) -> int:
    """Consume a dataset in a graph loop (as `fit` does) and count its samples: a timing probe.
    One traced loop per process, so a second pass over the same dataset is not traced again."""
    return int(_counter()(ds))


def steps(view: View, opts: PipelineOptions, replicas: int = 1) -> int:
    """Steps an epoch: every global batch, and a last, short one unless it holds fewer rows
    than the `replicas` that per-worker pipelines split it between (1: one pipeline, which
    the strategy splits)."""
    whole, rest = divmod(len(view), opts.batch_size)
    return whole + (rest >= replicas)


def augment(x: tf.Tensor, y: tf.Tensor, kinds: Sequence, seed: int, index: tf.Tensor,
            classes: int = 0):
    """A batch transformed by `data.augment`'s kinds, seeded by (seed, batch index): see
    `trainer.data.augment_ops`."""
    return augment_ops.apply(x, y, augment_spec.parse(kinds), seed, index, classes)


@contextlib.contextmanager
def data_errors():
    """Turn a reader's UserError (or StorageUnavailable) raised inside tf.data, which wraps it,
    back into the same error."""
    try:
        yield
    except tf.errors.OpError as exc:
        found = re.search(r"\b(UserError|StorageUnavailable): ([^\n]+)", str(exc))
        if found is None:
            raise
        kind = StorageUnavailable if found.group(1) == "StorageUnavailable" else UserError
        raise kind(found.group(2)) from None

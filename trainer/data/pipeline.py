"""A split's rows -> shuffled, batched, prefetched tf.data batches, in bounded memory.

Each epoch draws a new order from (`train.seed`, epoch), so runs repeat exactly and a resumed
run continues the same sequence. The order is two-level:
1. the split is cut into blocks of `shuffle_block` consecutive rows (never across a file), and
   the blocks of all files are put in a random order;
2. consecutive blocks fill a window of `shuffle_window` rows, read in parallel threads while
   the previous window is being consumed; the window's rows are permuted and cut into batches.

Batches are gathered from the window by TensorFlow in C++ (`tf.gather`), so no per-sample Python
or tf.data work is done; the only per-batch work is the optional augmentation, vectorised over
the batch. Memory is a few windows, whatever the size of the data set.
"""

from __future__ import annotations

import collections
import contextlib
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from trainer.data.source import View
from trainer.errors import UserError
from trainer.kerasflavor import tf

WINDOW_BYTES = 256 << 20  # a window never holds more than this, whatever `shuffle_window` says


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    window: int = 16384
    block: int = 1024
    threads: int = 4
    augment: Sequence[str] = ()


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


def windows(view: View, y: np.ndarray, opts: PipelineOptions, epoch: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, order) per window; every window but the last holds whole batches."""
    blocks, rng = epoch_order(view, opts, epoch)
    rows, batch = window_rows(view, opts), opts.batch_size
    shape = (*view.sample_shape,)
    carry_x = np.zeros((0, *shape), np.float32)
    carry_y = y[:0]
    with ThreadPoolExecutor(opts.threads) as pool:
        pending: collections.deque = collections.deque()
        queued = 0
        it = iter(blocks)

        def top_up() -> None:
            # Keep one window's worth of blocks in flight: the next window reads while this one
            # is consumed, and memory stays bounded.
            nonlocal queued
            while queued < rows:
                block = next(it, None)
                if block is None:
                    return
                pending.append((block, pool.submit(view.read, block)))
                queued += len(block.rows)

        top_up()
        while pending:
            taken = []
            size = len(carry_x)
            while pending and size < rows:
                block, future = pending.popleft()
                queued -= len(block.rows)
                taken.append((block, future.result()))
                size += len(block.rows)
            top_up()
            x = np.empty((size, *shape), np.float32)
            x[:len(carry_x)] = carry_x
            at = len(carry_x)
            for block, images in taken:
                x[at:at + len(images)] = images  # the one copy (and cast) out of the file
                at += len(images)
            labels = np.concatenate([carry_y, *(y[b.positions] for b, _ in taken)])
            order = rng.permutation(size) if opts.shuffle else np.arange(size)
            keep = size if not pending else size - size % batch
            carry_x, carry_y = x[order[keep:]], labels[order[keep:]]
            yield x, labels, order[:keep]


def make_dataset(view: View, y: np.ndarray, opts: PipelineOptions, first_epoch: int = 0,
                 epochs: int = 1) -> tf.data.Dataset:
    """Batches of `epochs` epochs back to back (`steps_per_epoch` = `steps(view, opts)`)."""
    if "rot90" in opts.augment and view.sample_shape[0] != view.sample_shape[1]:
        raise UserError(f"images of shape {view.sample_shape[:2]} are not square, data.augment=rot90, "
                        "expected square images for 90-degree rotations")
    label_spec = tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype))
    signature = (tf.TensorSpec((None, *view.sample_shape), tf.float32), label_spec,
                 tf.TensorSpec((None,), tf.int64))
    batch = opts.batch_size

    def one_epoch(epoch):
        return tf.data.Dataset.from_generator(lambda e: windows(view, y, opts, int(e)),
                                              args=(epoch,), output_signature=signature)

    def cut(x, labels, order):
        n = tf.shape(order, out_type=tf.int64)[0]
        return tf.data.Dataset.range(0, n, batch).map(
            lambda i: (tf.gather(x, order[i:i + batch]), tf.gather(labels, order[i:i + batch])))

    ds = (tf.data.Dataset.range(first_epoch, first_epoch + epochs)
          .flat_map(one_epoch).prefetch(1).flat_map(cut))
    if opts.shuffle and opts.augment:
        ds = ds.enumerate().map(lambda i, xy: augment(xy[0], xy[1], opts.augment, opts.seed, i),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Data-parallel strategies split batches across replicas; the files are not split by worker.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def count_samples(ds: tf.data.Dataset) -> int:
    """Consume a dataset in a graph loop (as `fit` does) and count its samples: a timing probe."""
    @tf.function
    def run(ds):
        n = tf.constant(0, tf.int64)
        for batch in ds:
            n += tf.shape(batch[1], out_type=tf.int64)[0]
        return n
    return int(run(ds))


def steps(view: View, opts: PipelineOptions) -> int:
    return math.ceil(len(view) / opts.batch_size)


def augment(x: tf.Tensor, y: tf.Tensor, kinds: Sequence[str], seed: int, index: tf.Tensor):
    """Per-sample random 90-degree rotations and flips of a batch, seeded by (seed, batch index)."""
    n = tf.shape(x)[0]
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])

    def coin(salt: int) -> tf.Tensor:
        return tf.random.stateless_uniform([n], key + salt) < 0.5

    if "flip_left_right" in kinds:
        x = tf.where(coin(1)[:, None, None, None], tf.reverse(x, [2]), x)
    if "flip_up_down" in kinds:
        x = tf.where(coin(2)[:, None, None, None], tf.reverse(x, [1]), x)
    if "rot90" in kinds:
        k = tf.random.stateless_uniform([n], key + 3, maxval=4, dtype=tf.int32)[:, None, None, None]
        rotated = x
        for turns in (1, 2, 3):
            rotated = tf.where(k == turns, tf.image.rot90(x, turns), rotated)
        x = rotated
    return x, y


@contextlib.contextmanager
def data_errors():
    """Turn a reader's UserError raised inside tf.data (which wraps it) back into a UserError."""
    try:
        yield
    except tf.errors.OpError as exc:
        found = re.search(r"\bUserError: ([^\n]+)", str(exc))
        if found is None:
            raise
        raise UserError(found.group(1)) from None

"""A split's rows -> shuffled, batched, prefetched tf.data batches, in bounded memory.

The rows come in windows (`trainer.data.windows`: the epoch's order, drawn from (`train.seed`,
epoch), read straight into reused buffers), and batches are slices of a window. No per-sample
work is done in Python or tf.data; the only per-batch work is the optional augmentation,
vectorised over the batch.

A job with several workers runs one pipeline per worker, each reading only its `Share` of an
epoch (`trainer.data.shares`), as per-replica batches.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from typing import Optional, Sequence

import numpy as np

from trainer.config import DataConfig
from trainer.data import augment_ops, augment_spec
from trainer.data.finite import Tally
from trainer.data.shares import WHOLE, Share
from trainer.data.source import View
from trainer.data.windows import PipelineOptions, RowsRead, window_buffers, window_rows, windows
from trainer.errors import StorageUnavailable, UserError
from trainer.kerasflavor import tf


def pipeline_options(d: DataConfig, seed: int, batch_size: int, shuffle: bool,
                     classes: int = 0) -> PipelineOptions:
    """The input pipeline's settings from the `data` section, `train.seed` and the batch the
    pipeline makes (the global batch: `trainer.training.scaling`); evaluation neither shuffles
    nor augments. `classes`: what mixup and cutmix turn class labels into probabilities of."""
    return PipelineOptions(batch_size=batch_size, shuffle=shuffle, seed=seed,
                           window=d.shuffle_window, block=d.shuffle_block, threads=d.read_threads,
                           augment=augment_spec.parse(d.augment) if shuffle else (),
                           nonfinite=d.nonfinite, classes=classes)


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

"""numpy splits -> batched, shuffled, prefetched tf.data pipelines, and input statistics.

Shuffling draws a new order every epoch from `train.seed`, so runs repeat exactly.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from trainer.kerasflavor import tf


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of (N, H, W, C) images, computed in float64."""
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(axis=0, dtype=np.float64)
    var = flat.var(axis=0, dtype=np.float64)
    # A constant channel would divide by zero; leave it unscaled instead.
    var = np.where(var > 0, var, 1.0)
    return mean.astype(np.float32), var.astype(np.float32)


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int,
                 sample_weight: Optional[np.ndarray] = None) -> tf.data.Dataset:
    tensors = (x, y) if sample_weight is None else (x, y, sample_weight)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    # Data-parallel strategies shard batches across replicas; sharding by file is meaningless here.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)

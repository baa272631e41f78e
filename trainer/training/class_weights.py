"""Class weights for `train.class_weight: balanced`: every class counts as much in the loss as
in a balanced data set, however rare it is in the training split."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from trainer.config import Config
from trainer.data import Splits
from trainer.kerasflavor import tf

log = logging.getLogger("trainer")


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, scaled so that a balanced data set gets weight 1 everywhere."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def training_class_weights(config: Config, splits: Splits) -> Optional[dict[int, float]]:
    """The weights `fit` takes for this config, or None (regression, or not asked for)."""
    if config.task != "classification" or config.train.class_weight != "balanced":
        return None
    weights = class_weights(splits.train.y, splits.num_outputs)
    log.info("class weights: %s", {splits.class_names[i]: round(w, 3) for i, w in weights.items()})
    return weights


def with_sample_weights(ds: tf.data.Dataset, weights: dict[int, float]) -> tf.data.Dataset:
    """(x, y) -> (x, y, each sample's class weight): what `fit(class_weight=...)` does, for a
    dataset that `fit` gets already distributed (one pipeline per worker), which it cannot map."""
    table = tf.constant([weights[i] for i in range(len(weights))], tf.float32)
    def weighted(x, y):
        # Mixup and cutmix's class probabilities weigh as their most likely class.
        labels = tf.argmax(y, -1) if y.shape.rank == 2 and y.shape[-1] != 1 else y
        return x, y, tf.gather(table, tf.cast(labels, tf.int32))

    return ds.map(weighted)

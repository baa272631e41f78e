"""The trained model's scores on the held-out splits and its test predictions, the numbers the
artefacts (metrics.json, the confusion matrix, the report) are made from."""

from __future__ import annotations

import logging
import math

import numpy as np

from trainer.data.pipeline import data_errors
from trainer.kerasflavor import keras, tf

log = logging.getLogger("trainer")


def evaluate(model: keras.Model, datasets: dict[str, tf.data.Dataset]) -> dict[str, dict]:
    """{split: {metric: value}} for each named dataset, logged; warns when test scores are not
    finite (a diverged model still writes its artefacts, which show it)."""
    metrics = {}
    for name, ds in datasets.items():
        with data_errors():
            scores = model.evaluate(ds, return_dict=True, verbose=0)
        metrics[name] = {k: float(v) for k, v in scores.items()}
        log.info("%s: %s", name, " ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    if any(not math.isfinite(v) for v in metrics.get("test", {}).values()):
        log.warning("test metrics are not finite")
    return metrics


def predict(model: keras.Model, ds: tf.data.Dataset) -> np.ndarray:
    with data_errors():
        return model.predict(ds, verbose=0)

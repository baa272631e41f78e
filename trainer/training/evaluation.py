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
    finite (a diverged model still writes its artefacts, which show it). Each figure is over
    the whole split: Keras's metrics accumulate over every batch, and an `rmse` loss's figure
    is the root of the mean square over every sample (`trainer.training.compiling.RootMeanSquare`)."""
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


def per_target_scores(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, dict]:
    """{target: {rmse, mae, r2}} and the same over all targets ("overall"), for metrics.json and
    the report; R² is NaN for a target that does not vary."""
    pred = pred.reshape(y.shape)
    err = pred - y

    def scores(e: np.ndarray, t: np.ndarray) -> dict:
        spread = float(((t - t.mean(axis=0)) ** 2).sum())
        r2 = 1.0 - float((e ** 2).sum()) / spread if spread > 0 else float("nan")
        return {"rmse": float(np.sqrt((e ** 2).mean())), "mae": float(np.abs(e).mean()), "r2": r2}

    out = {n: scores(err[:, k], y[:, k]) for k, n in enumerate(names)}
    out["overall"] = scores(err, y)
    return out


def log_per_target(split: str, scores: dict[str, dict]) -> None:
    """One line per target in its own units, and a warning for each target whose predictions
    are no better than its mean (R² <= 0): a pooled figure hides a target left unlearnt."""
    for name, s in scores.items():
        if name != "overall":
            log.info("%s %s: rmse=%.4g mae=%.4g r2=%.4g", split, name, s["rmse"], s["mae"], s["r2"])
    for name, s in scores.items():
        if name != "overall" and s["r2"] <= 0:
            log.warning("%s target %s is not learnt: R² %.3g, no better than predicting its mean "
                        "(rmse %.4g); see data.standardize_targets for targets on different "
                        "scales", split, name, s["r2"], s["rmse"])

"""Ranking and calibration figures of a classifier's probabilities, in NumPy alone.

ROC and precision-recall curves with their areas (one-vs-rest per class for several classes),
and the expected calibration error with the reliability diagram's bins. The areas follow the
usual definitions: the ROC area is the trapezoid area under (false positive rate, true positive
rate) with tied scores taken as one step, equal to the probability that a random positive
scores above a random negative (ties counting one half); the precision-recall area is the
average precision, the sum over thresholds of precision times the recall gained there.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

RELIABILITY_BINS = 15  # equal-width confidence bins, as the temperature-scaling paper's ECE


def _steps(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives counted above each distinct score, highest first, and those
    scores: one point per threshold, ties moving together."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
    tp = np.cumsum(p)[last]
    fp = (last + 1) - tp
    return tp, fp, s[last]


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1)."""
    tp, fp, _ = _steps(np.asarray(scores, np.float64), np.asarray(positive, bool))
    pos, neg = tp[-1], fp[-1]
    return (np.r_[0.0, fp / neg] if neg else np.full(len(fp) + 1, np.nan),
            np.r_[0.0, tp / pos] if pos else np.full(len(tp) + 1, np.nan))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve; NaN when one side (positives or negatives) is absent."""
    fpr, tpr = roc_curve(scores, positive)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each threshold, highest threshold first."""
    tp, fp, _ = _steps(np.asarray(scores, np.float64), np.asarray(positive, bool))
    pos = tp[-1]
    recall = tp / pos if pos else np.full(len(tp), np.nan)
    return recall, tp / (tp + fp)


def pr_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision: sum of (recall gained) x precision; NaN without positives."""
    recall, precision = pr_curve(scores, positive)
    if np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def areas(probabilities: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """`roc_auc` and `pr_auc` of a split: of the second class for two classes (the positive
    class, e.g. `touch`); for more, the mean over classes one-vs-rest (classes absent from the
    split left out), with each class's figures under `per_class`."""
    y = np.asarray(y).astype(int).ravel()
    if probabilities.shape[1] == 2:
        return {"roc_auc": roc_auc(probabilities[:, 1], y == 1),
                "pr_auc": pr_auc(probabilities[:, 1], y == 1)}
    per = {name: {"roc_auc": roc_auc(probabilities[:, k], y == k),
                  "pr_auc": pr_auc(probabilities[:, k], y == k)}
           for k, name in enumerate(class_names)}
    out = {}
    for key in ("roc_auc", "pr_auc"):
        values = [v[key] for v in per.values() if not np.isnan(v[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    out["per_class"] = per
    return out


def reliability(probabilities: np.ndarray, y: np.ndarray, bins: int = RELIABILITY_BINS) -> dict:
    """The reliability diagram's bins over the top class's probability (its confidence):
    per bin the count, mean confidence and accuracy, and the expected calibration error, the
    count-weighted mean gap between the two."""
    y = np.asarray(y).astype(int).ravel()
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, confidence, minlength=bins)
    acc_sum = np.bincount(which, correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = conf_sum / count, acc_sum / count
    ece = float(np.abs(acc_sum - conf_sum).sum() / max(len(y), 1))
    return {"ece": ece, "count": count.tolist(), "confidence": mean_conf.tolist(),
            "accuracy": accuracy.tolist()}


def ece(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Expected calibration error over `RELIABILITY_BINS` equal-width bins."""
    return reliability(probabilities, y)["ece"]


def nan_to_none(value: Optional[float]) -> Optional[float]:
    """JSON has no NaN: an undefined area is written as null."""
    return None if value is None or np.isnan(value) else float(value)

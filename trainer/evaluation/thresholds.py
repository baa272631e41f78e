"""The decision threshold of a two-class model, chosen on the validation split.

`eval.threshold` is a number (the positive class's probability from which a sample is called
positive; 0.5 by default, the argmax of two probabilities) or a rule applied to the validation
split's probabilities: `f1` (the threshold of the best F1), `precision@P` (the lowest threshold
whose precision is at least P, so the most recall at that precision), `recall@R` (the highest
threshold whose recall is at least R, so the most precision at that recall). The value is
stored in `model.h5`'s metadata and applied by `trainer.predict`, batch curation and the
served model; `decide` is the one place that turns probabilities into labels.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from trainer.config.values import parse_threshold as parse
from trainer.evaluation.curves import _steps


def choose(rule: Union[str, float], positive_probability: Optional[np.ndarray],
           y: Optional[np.ndarray]) -> dict:
    """`{rule, value}` for metrics.json: the number as given, or the rule's threshold on these
    (validation) probabilities of the positive class. A rule with no validation split to apply
    it to, or whose target no threshold reaches, falls back to 0.5 and says so (`note`)."""
    kind, target = parse(rule)
    if kind == "value":
        return {"rule": "value", "value": float(target)}
    name = str(rule).strip()
    if positive_probability is None or y is None or len(y) == 0:
        return {"rule": name, "value": 0.5, "note": "no validation split: 0.5 used"}
    positive = np.asarray(y).astype(int).ravel() == 1
    if not positive.any():
        return {"rule": name, "value": 0.5, "note": "no positive sample in validation: 0.5 used"}
    tp, fp, at = _steps(np.asarray(positive_probability, np.float64), positive)
    precision, recall = tp / (tp + fp), tp / positive.sum()
    if kind == "f1":
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        pick = int(np.argmax(f1))  # highest threshold among ties: fewest positives called
    elif kind == "precision":
        ok = np.flatnonzero(precision >= target)
        pick = int(ok[-1]) if len(ok) else None  # lowest threshold still precise enough
    else:
        ok = np.flatnonzero(recall >= target)
        pick = int(ok[0]) if len(ok) else None  # highest threshold reaching the recall
    if pick is None:
        return {"rule": name, "value": 0.5,
                "note": f"no threshold reaches {kind} {target} on validation: 0.5 used"}
    return {"rule": name, "value": float(at[pick])}


def decide(probabilities: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Class indices: the positive class (1) where its probability reaches `threshold`, for a
    two-class model with a threshold; the likeliest class otherwise."""
    probabilities = np.asarray(probabilities)
    if threshold is None or probabilities.shape[-1] != 2:
        return probabilities.argmax(axis=-1)
    return (probabilities[..., 1] >= threshold).astype(np.int64)


def scores_at(probabilities: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall and F1 of the positive class at `threshold`."""
    y = np.asarray(y).astype(int).ravel()
    called = decide(probabilities, threshold)
    tp = float(np.sum((called == 1) & (y == 1)))
    precision = tp / max(float(np.sum(called == 1)), 1.0)
    recall = tp / max(float(np.sum(y == 1)), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy_at_threshold": float(np.mean(called == y)), "precision": precision,
            "recall": recall, "f1": f1}


def from_metadata(metadata: dict, path: str) -> Optional[float]:
    """The threshold a model file stores (None: the likeliest class), checked: prediction
    trusts it for every label of a two-class model."""
    from trainer.errors import UserError

    value = metadata.get("threshold")
    if value is None:
        return None
    names = metadata.get("class_names") or []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 \
            or len(names) != 2:
        shown = repr(value)[:200]
        raise UserError(f"model metadata 'threshold' is {shown}, {path}, expected a number "
                        "from 0 to 1 for a model of two classes")
    return float(value)

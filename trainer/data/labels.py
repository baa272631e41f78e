"""Targets as the model wants them: class indices with a saved name mapping, or float regressors."""

from __future__ import annotations

from typing import Optional

import numpy as np

from trainer.data.source import texts
from trainer.errors import UserError


def encode_classes(y: np.ndarray, where: str,
                   class_names: Optional[list[str]] = None) -> tuple[np.ndarray, list[str]]:
    """Map integer, string or one-hot labels to indices 0..K-1 and return the names in that order.

    Names are the sorted distinct labels of the training split (integers sort numerically); later
    splits must reuse the training split's mapping, so an unseen label is an error.
    """
    if y.ndim == 2 and y.shape[1] > 1:
        if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
            numbers = y.dtype.kind in "iuf"
            raise UserError(f"labels of shape {y.shape} are 2-D but not one-hot, {where}, expected "
                            "y of shape (N,) or one-hot (N, K) for classification" +
                            (f" (or task: regression, for {y.shape[1]} targets per sample)"
                             if numbers else ""))
        indices = y.argmax(axis=1)
        names = class_names or [str(i) for i in range(y.shape[1])]
        return indices.astype(np.int32), names
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise UserError(f"class labels are not whole numbers, {where}, expected integer or "
                            "string labels (or task: regression)")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuUSO":
        raise UserError(f"labels of dtype {y.dtype}, {where}, expected integer or string labels")
    if y.dtype.kind == "S":
        y = texts(y, where, "labels")
    if class_names is None:
        distinct = np.unique(y)
        class_names = [str(v) for v in distinct]
    lookup = {name: i for i, name in enumerate(class_names)}
    try:
        indices = np.fromiter((lookup[str(v)] for v in y), dtype=np.int32, count=len(y))
    except KeyError as exc:
        raise UserError(f"label {exc.args[0]!r} does not occur in the training data, {where}, "
                        f"expected one of {', '.join(class_names)}") from None
    return indices, class_names


def encode_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Regression targets as float32 of shape (N, K)."""
    if y.dtype.kind not in "iuf":
        text = next((v for v in texts(y.reshape(-1), where, "targets") if not is_number(v)), None)
        such = f" (such as {text[:100]!r})" if y.dtype.kind in "USO" and text is not None else ""
        raise UserError(f"regression targets of dtype {y.dtype}{such}, {where}, expected numbers")
    y = y.astype(np.float32).reshape(len(y), -1)
    if not np.all(np.isfinite(y)):
        raise UserError(f"regression targets contain NaN or infinity, {where}, expected finite numbers")
    return y


def is_number(text: str) -> bool:
    """Whether a label's text reads as a number (as CSV cells and string targets are read)."""
    try:
        float(text)
    except ValueError:
        return False
    return True

"""Which fold of a K-fold cross-validation each training sample is in (`data.fold`): by whole
groups with `data.split_by: group`, else by sample, drawn from `train.seed`. The data layer
draws it (the fold is a run's test split); `trainer.crossval` runs the folds."""

from __future__ import annotations

from typing import Optional

import numpy as np

from trainer.data import formats
from trainer.errors import UserError


def assign(groups: Optional[np.ndarray], n: int, folds: int, seed: int,
           where: str = "data.train") -> np.ndarray:
    """The fold of each of `n` samples. With `groups`, whole groups: in a seeded order, largest
    first, each to the fold with the fewest samples so far, so folds are as even as whole groups
    allow and no group is in two folds. Without, a seeded permutation dealt round."""
    rng = np.random.default_rng(seed)
    if groups is None:
        out = np.empty(n, np.int64)
        out[rng.permutation(n)] = np.arange(n) % folds
        return out
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < folds:
        raise UserError(f"{len(names)} group{'s' * (len(names) != 1)} cannot make {folds} folds "
                        f"(data.split_by=group), {where}, expected at least one group per fold")
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]  # largest first, ties as drawn
    fold_of_group = np.empty(len(names), np.int64)
    filled = np.zeros(folds, np.int64)
    for g in order:
        k = int(np.argmin(filled))
        fold_of_group[g] = k
        filled[k] += counts[g]
    return fold_of_group[inverse]


def fold_rows(source, train_rows: Optional[np.ndarray], config) -> np.ndarray:
    """Row numbers of `source` (the training files) in fold `data.fold[0]`, among `train_rows`
    (all rows when None)."""
    d = config.data
    k, folds = d.fold
    rows = np.arange(len(source)) if train_rows is None else np.asarray(train_rows)
    groups = None
    if d.split_by == "group":
        if source.groups is None:
            raise UserError(f"no group per sample (data.split_by=group), {source.ungrouped}, "
                            f"expected {formats.groups_expected(d.format, d.group_key)}")
        groups = source.groups[rows]
    return rows[assign(groups, len(rows), folds, config.train.seed,
                       f"data.train={source.description}") == k]

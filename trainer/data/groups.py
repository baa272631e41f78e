"""Splits that keep each group (a video, a session, a simulation seed) on one side.

Neighbouring frames of one video are near-copies. A random frame split puts them on both sides
of an evaluation, so validation measures how well the model remembers a video it has seen, not
how it does on a new one. Carving whole groups instead gives an honest estimate. Groups are
drawn in a random order from `train.seed` and cut where the running sample count comes closest
to each requested fraction, so the same config always splits the same way.
"""

from __future__ import annotations

import itertools
from typing import Optional

import numpy as np

from trainer.errors import UserError

SPLIT_NAMES = {"val": "validation", "test": "test"}
KEYS = {"val": "validation_split", "test": "test_split"}
FAR_OFF = 0.5  # a split this far (relative) from its asked fraction gets a note in the report


def carve(groups: np.ndarray, rows: np.ndarray, fractions: dict[str, float], seed: int,
          where: str) -> dict[str, np.ndarray]:
    """Rows of `train` and of each split in `fractions` (`test`, then `val`), by whole groups.

    `groups` are the group names of `rows`. Each carved split takes consecutive groups of a
    seeded permutation, as many as bring its sample count closest to its fraction of `rows`;
    every split, train included, gets at least one group.
    """
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    if len(names) < len(fractions) + 1:
        asked = " and ".join(f"{KEYS[k]}={fractions[k]:g}" for k in KEYS if k in fractions)
        raise UserError(f"{len(names)} group{'s' * (len(names) != 1)} cannot be carved into "
                        f"{asked} (data.split_by=group), {where}, expected at least "
                        f"{len(fractions) + 1} groups: one for training and one for each carved "
                        "split")
    ends = np.cumsum(counts[order])  # samples in the first k+1 groups of the order
    assigned = np.full(len(names), -1)  # index into `keys`, -1 for train
    keys = list(fractions)
    start, target = 0, 0.0
    for i, key in enumerate(keys):
        target += fractions[key] * len(rows)
        last = len(names) - (len(keys) - i)  # leave a group for each later split and for train
        k = start + int(np.argmin(np.abs(ends[start:last] - target)))
        assigned[order[start:k + 1]] = i
        start = k + 1
    split_of_row = assigned[inverse]
    out = {"train": rows[split_of_row == -1]}
    out.update({key: rows[split_of_row == i] for i, key in enumerate(keys)})
    return out


def shared(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> np.ndarray:
    """Group names found in both arrays (empty when either has no groups)."""
    if a is None or b is None:
        return np.array([], dtype=str)
    return np.intersect1d(a, b)


def counts(by_split: dict[str, Optional[np.ndarray]]) -> tuple[dict[str, int], dict[str, int]]:
    """Distinct groups per split, and groups found in two splits per pair ("train/val": n)."""
    per_split = {k: int(len(np.unique(g))) for k, g in by_split.items() if g is not None}
    in_two = {f"{a}/{b}": int(len(shared(by_split[a], by_split[b])))
              for a, b in itertools.combinations(by_split, 2)
              if by_split[a] is not None and by_split[b] is not None}
    return per_split, in_two


def overstated(task: str, split: str = "") -> str:
    """What an evaluation that has seen its samples in training gets wrong, in the task's words:
    a classifier's accuracy is too high, a regressor's error too low."""
    if task == "classification":
        return f"{split + ' accuracy' if split else 'evaluation'} overstates accuracy"
    return f"{split + ' error' if split else 'evaluation'} understates error"


def report_lines(summary: dict, task: str = "classification") -> list[str]:
    """The split report for the log (from `Splits.summary()`): groups and samples per split;
    then warnings, for groups in two splits and carved splits far from their asked fraction."""
    keys = [k for k in ("train", "val", "test") if k in summary]  # a left-out split is absent
    if any("groups" not in summary[k] for k in keys):
        return []
    total = sum(summary[k]["samples"] for k in keys)
    parts = [f"{k} {summary[k]['groups']} groups ({summary[k]['samples']} samples, "
             f"{summary[k]['samples'] / total:.0%})" for k in keys]
    lines = [f"split ({summary['split_method']}): " + ", ".join(parts)]
    leaks = {pair: n for pair, n in summary.get("groups_in_two_splits", {}).items() if n}
    if leaks:
        lines.append("groups in two splits: " + ", ".join(f"{p} {n}" for p, n in leaks.items()) +
                     f"; {overstated(task)} on new groups (see data.split_by)")
    asked_of = {k: summary[k]["fraction_asked"] for k in keys if "fraction_asked" in summary[k]}
    pool = summary["train"]["samples"] + sum(summary[k]["samples"] for k in asked_of)
    for key, asked in asked_of.items():
        got = summary[key]["samples"] / pool
        if abs(got - asked) > FAR_OFF * asked:
            lines.append(f"{SPLIT_NAMES[key]} holds {got:.0%} of the carved samples, asked "
                         f"{asked:.0%}: the groups are large for this split; more, smaller "
                         "groups fit closer")
    return lines

"""Non-finite values (NaN, Inf) in images: counted wherever images are read, then refused or
replaced with 0 (`data.nonfinite`).

A few NaN pixels make the standardisation mean NaN and every prediction the same, and training
still ends normally; so no value reaches a model unchecked. Integer images cannot hold NaN and
cost nothing; float blocks cost one sum, and an exact count only when that sum is not finite.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

from trainer.errors import UserError

POLICIES = ("error", "zero")

log = logging.getLogger("trainer")


def nonfinite_rows(x: np.ndarray) -> Optional[np.ndarray]:
    """Per sample (first axis), whether it holds a NaN or Inf; None when every value is finite."""
    if x.dtype.kind != "f" or x.size == 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(x.sum()):
            return None  # NaN and Inf propagate through a sum: a finite sum, finite values
    bad = ~np.isfinite(x.reshape(len(x), -1))
    rows = bad.any(axis=1)
    return rows if rows.any() else None  # the sum overflowed, the values are finite


def zeroed(x: np.ndarray, copy: bool = True) -> np.ndarray:
    """`x` with NaN and Inf set to 0: what `data.nonfinite: zero` gives the model."""
    return np.nan_to_num(x, copy=copy, nan=0.0, posinf=0.0, neginf=0.0)


class Tally:
    """NaN and Inf counts of one split as its blocks are read, and the policy applied to them."""

    def __init__(self, split: str, policy: str, setting: str = "data.nonfinite"):
        """`split` names the data in messages (`train`, or `inputs` for prediction); `setting`
        is where the user chose `policy`."""
        if policy not in POLICIES:
            raise ValueError(f"{setting}={policy!r}")
        self.split, self.policy, self.setting = split, policy, setting
        self.nan = self.inf = self.samples = 0
        self.first: Optional[str] = None
        self.reported = False

    def scan(self, x: np.ndarray, name_row: Callable[[int], str], writable: bool = False,
             positions: Optional[np.ndarray] = None) -> np.ndarray:
        """Count the block's non-finite values; returns it with them set to 0 under `zero`
        (in place when `writable`, else in a copy: a reader's block may be its file's array).
        `name_row(i)` names sample i of the block (its file and row) for the first one found,
        or, with `positions` (each sample's row in the data), the sample at row i: then the
        first is the lowest row, however the block is shuffled."""
        rows = nonfinite_rows(x)
        if rows is None:
            return x
        nan = int(np.count_nonzero(np.isnan(x)))
        self.nan += nan
        self.inf += int(np.count_nonzero(np.isinf(x)))
        self.samples += int(rows.sum())
        if self.first is None:
            bad = np.flatnonzero(rows)
            self.first = name_row(int(bad[0] if positions is None else positions[bad].min()))
        if self.policy == "error":
            return x
        return zeroed(x, copy=not writable)

    @property
    def found(self) -> int:
        return self.nan + self.inf

    def check(self, read: Optional[int] = None) -> None:
        """Stop with one line under `error` if anything was found; `read` says how many samples
        were counted, when that is not the whole split."""
        if self.policy != "error" or not self.found:
            return
        scope = f" (counted in the first {read} samples read)" if read is not None else ""
        raise UserError(f"{self.nan} NaN and {self.inf} Inf values in {self.samples} samples of "
                        f"{self.where}{scope}, first at {self.first}, {self.setting}=error, "
                        f"expected finite values ({self.setting}=zero replaces them with 0)")

    @property
    def where(self) -> str:
        return f"the {self.split} split" if self.split in ("train", "val", "test") else self.split

    def report(self) -> None:
        """Log what `zero` replaced, once, after the split's first full read."""
        if self.policy == "zero" and self.found and not self.reported:
            self.reported = True
            log.info("%s", self.summary())

    def summary(self) -> str:
        return (f"{self.setting}=zero: replaced {self.nan} NaN and {self.inf} Inf values in "
                f"{self.samples} samples of {self.where} with 0 (first at {self.first})")

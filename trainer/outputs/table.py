"""Rows of results as people read them: a fixed-width text table for the terminal, and CSV.

`trainer.compare`, the search's ranked trials and a run's `history.csv` are all lists of flat
dicts; they share this one writer, so a number reads the same wherever it is printed.
"""

from __future__ import annotations

import csv
import math
from typing import Collection


def number(value: float) -> str:
    """A metric as every command prints it: four significant digits, so a small loss keeps
    its digits (`3.2e-05`, not `0.0000`)."""
    return f"{value:.4g}"


def cell(value: object) -> str:
    """Blank for a missing value (None or NaN), four significant digits for a float."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return number(value) if isinstance(value, float) else str(value)


def columns(rows: list[dict]) -> list[str]:
    """Every key that occurs in the rows, in the order they first occur."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def text_table(rows: list[dict], leave_out: Collection[str] = ()) -> str:
    """Left-aligned columns, two spaces apart, under a header of the keys."""
    names = [c for c in columns(rows) if c not in leave_out]
    cells = [[cell(r.get(c)) for c in names] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(names)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in [names, *cells])


def write_csv(rows: list[dict], path: str) -> None:
    """A local CSV file with a column for every key (blank where a row lacks it)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows))
        writer.writeheader()
        writer.writerows(rows)

"""Data: readers per format, label encoding, reproducible splits and the tf.data pipeline.

`load_splits(config)` is the one entry point the training job calls: splits are lazy views of
the files plus encoded labels. The formats are listed in `formats` (which the config reads, so
importing this package stays cheap: the dataset modules load on first use); everything
format-specific lives in the readers it names; `pipeline` turns a split into shuffled batches.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Splits", "SplitData", "load_splits"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("trainer.data.dataset"), name)
    raise AttributeError(f"module 'trainer.data' has no attribute {name!r}")

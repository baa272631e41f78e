"""Data: readers per format, label encoding, reproducible splits and the tf.data pipeline.

`load_splits(config)` is the one entry point the training job calls; everything format-specific
lives in `readers`.
"""

from trainer.data.dataset import Splits, SplitData, load_splits

__all__ = ["Splits", "SplitData", "load_splits"]

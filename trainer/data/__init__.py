"""Data: readers per format, label encoding, reproducible splits and the tf.data pipeline.

`load_splits(config)` is the one entry point the training job calls: splits are lazy views of
the files plus encoded labels. Everything format-specific lives in `readers` (and the format
modules it uses); `pipeline` turns a split into shuffled batches.
"""

from trainer.data.dataset import Splits, SplitData, load_splits

__all__ = ["Splits", "SplitData", "load_splits"]

"""From the data config to train/validation/test arrays with encoded labels.

Validation and test sets come from their own paths when given; otherwise they are carved out of
the training data by a permutation drawn from `train.seed`, so the same config always splits the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from trainer import storage
from trainer.config import Config
from trainer.data import demo, labels
from trainer.data.readers import READERS
from trainer.errors import UserError


@dataclass
class SplitData:
    x: np.ndarray  # float32 (N, H, W, C)
    y: np.ndarray  # int32 (N,) class indices, or float32 (N, K) targets
    source: str

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    train: SplitData
    val: SplitData
    test: SplitData
    task: str
    class_names: Optional[list[str]]
    split_method: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.class_names else int(self.train.y.shape[1])

    def summary(self) -> dict:
        """Counts per split (and per class), for the log and metrics.json."""
        out: dict = {"input_shape": list(self.input_shape), "split_method": self.split_method}
        for name in ("train", "val", "test"):
            part = getattr(self, name)
            entry: dict = {"samples": len(part), "source": part.source}
            if self.class_names:
                counts = np.bincount(part.y, minlength=len(self.class_names))
                entry["per_class"] = {c: int(n) for c, n in zip(self.class_names, counts)}
            out[name] = entry
        return out


def _read(config: Config, paths, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    data = config.data
    if data.format == "shapes":
        x, y = demo.generate(data.samples_per_class, tuple(data.image_size), config.train.seed)
        return x, y, "generated shapes"
    if paths is None:
        raise UserError(f"no training data given, data.{key}, expected a path or glob for "
                        f"data.format={data.format}")
    files = storage.expand(paths, f"data.{key}")
    x, y = READERS[data.format](files)
    source = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
    if len(x) == 0:
        raise UserError(f"no samples, data.{key}={source}, expected at least one image")
    return x, y, source


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """float32 (N, H, W, C); 2-D images get a channel axis."""
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise UserError(f"x has shape {x.shape}, {where}, expected (N, H, W) or (N, H, W, C)")
    if x.dtype.kind not in "iuf" and x.dtype != np.bool_:
        raise UserError(f"images of dtype {x.dtype}, {where}, expected numbers")
    return np.asarray(x, dtype=np.float32)


def _carve(n: int, config: Config, carve_val: bool, carve_test: bool, source: str):
    """Index arrays (train, val, test) for the splits taken out of the training data."""
    d = config.data
    n_test = int(round(n * d.test_split)) if carve_test else 0
    n_val = int(round(n * d.validation_split)) if carve_val else 0
    if (carve_test and n_test < 1) or (carve_val and n_val < 1) or n - n_test - n_val < 1:
        raise UserError(
            f"{n} samples are too few for validation_split={d.validation_split} and "
            f"test_split={d.test_split}, data.train={source}, expected at least one sample in "
            "each of train, validation and test")
    order = np.random.default_rng(config.train.seed).permutation(n)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def load_splits(config: Config) -> Splits:
    d = config.data
    x, y, source = _read(config, d.train, "train")
    carve_val, carve_test = d.val is None, d.test is None
    for key, frac in (("validation_split", d.validation_split), ("test_split", d.test_split)):
        carving = carve_val if key == "validation_split" else carve_test
        if carving and frac == 0:
            part = "val" if key == "validation_split" else "test"
            raise UserError(f"data.{key} is 0 and data.{part} is not set, config, expected a "
                            f"fraction > 0 or a path for data.{part}")
    parts = {}
    if carve_val or carve_test:
        idx_train, idx_val, idx_test = _carve(len(x), config, carve_val, carve_test, source)
        parts["train"] = (x[idx_train], y[idx_train], source)
        if carve_val:
            parts["val"] = (x[idx_val], y[idx_val], f"{source} (validation_split)")
        if carve_test:
            parts["test"] = (x[idx_test], y[idx_test], f"{source} (test_split)")
    else:
        parts["train"] = (x, y, source)
    for key in ("val", "test"):
        if key not in parts:
            parts[key] = _read(config, getattr(d, key), key)

    class_names = None
    built = {}
    for key in ("train", "val", "test"):
        px, py, src = parts[key]
        px = _as_images(px, f"data.{key}={src}")
        if key != "train" and px.shape[1:] != built["train"].x.shape[1:]:
            raise UserError(f"images of shape {px.shape[1:]}, data.{key}={src}, expected "
                            f"{built['train'].x.shape[1:]} like the training data")
        if config.task == "classification":
            py, class_names = labels.encode_classes(py, f"data.{key}={src}", class_names)
        else:
            py = labels.encode_targets(py, f"data.{key}={src}")
        built[key] = SplitData(px, py, src)
    if class_names is not None and len(class_names) < 2:
        raise UserError(f"only one class ({class_names[0]}), data.train={source}, expected at "
                        "least two classes for classification")
    method = "random" if (carve_val or carve_test) else "given"
    return Splits(**built, task=config.task, class_names=class_names, split_method=method)


"""The saved model `trainer.predict` uses: `model.h5` (or a run folder's), loaded with what its
metadata says about the inputs (shape) and the outputs (task, class or target names)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from trainer import storage
from trainer.data import context
from trainer.errors import UserError
from trainer.evaluation import thresholds


@dataclass(frozen=True)
class SavedModel:
    """A loaded model with what its metadata says about inputs and outputs."""

    model: object
    task: str
    class_names: Optional[list[str]]
    input_shape: tuple[int, ...]  # (H, W, C)
    target_names: Optional[list[str]] = None  # regression: the targets' names, as trained
    threshold: Optional[float] = None  # two classes: the second's probability that calls it
    frame_context: int = 0  # data.frame_context: frames t-K..t+K stacked as channels

    @property
    def value_columns(self) -> list[str]:
        if self.class_names:
            return ["predicted", "probability", *[f"p_{c}" for c in self.class_names]]
        outputs = int(self.model.output_shape[-1])
        return self.target_names or [f"output_{k}" for k in range(outputs)]

    @property
    def columns(self) -> list[str]:
        return ["input", *self.value_columns]

    def label(self, values: list):
        """A prediction as one number for a MATLAB label vector: the class itself where the
        class names are numbers (seed 001's 0/1 contacts), else its index among the class
        names; the predicted values for regression."""
        if not self.class_names:
            return values
        try:
            return float(values[0])
        except ValueError:
            return float(self.class_names.index(values[0]))


def model_file(path: str) -> str:
    """The model file `path` names: itself, or its run directory's `model.h5`; it must exist."""
    if not path.endswith(".h5") and storage.exists(storage.join(path, "model.h5")):
        storage.confine(storage.join(path, "model.h5"), path, f" (--model={path})")
        path = storage.join(path, "model.h5")  # a run directory names its model
    if storage.is_local(path) and os.path.exists(path) and not os.path.isdir(path):
        storage.check_regular(path)  # a device or a pipe (behind a link too): says which
    if not storage.exists(path) or (storage.is_local(path) and not os.path.isfile(path)):
        raise UserError(f"file not found, --model={path}, expected a model.h5 written by "
                        "trainer.task")
    return path


def load(path: str, allow_unsafe: bool = False) -> SavedModel:
    """Load `model.h5` (or a run directory's) from a local path or a bucket.

    Models with code in them are refused unless `allow_unsafe` (see `trainer.outputs.modelfile`).
    """
    path = model_file(path)
    from trainer.outputs import modelfile  # TensorFlow, imported only once the inputs look right

    model, meta = modelfile.load(path, allow_unsafe)
    if "task" not in meta:
        raise UserError(f"model has no trainer_metadata, --model={path}, expected a model.h5 "
                        "written by trainer.task (it carries the task and class names)")
    shape = tuple(meta.get("input_shape") or model.input_shape[1:])
    return SavedModel(model, meta["task"], meta.get("class_names"), shape,
                      meta.get("target_names"), thresholds.from_metadata(meta, path),
                      context.from_metadata(meta, shape, path))

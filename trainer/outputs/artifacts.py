"""The files a run leaves in `<output.dir>/<name>/`, each made locally and then published whole.

`model.h5` carries what prediction needs besides the weights: the task, the class names in
output order and the input shape, as the HDF5 attribute `trainer_metadata` (the input
standardisation is a layer inside the model).
"""

from __future__ import annotations

import csv
import logging
import json
import warnings
from typing import Optional

import h5py
import numpy as np

from trainer.outputs import modelfile
from trainer.outputs import plots
from trainer.outputs import report
from trainer.runtime import secrets
from trainer.runtime.platform import Platform
from trainer.config import Config
from trainer.data import Splits
from trainer.errors import UserError
from trainer.kerasflavor import keras
from trainer.models import CUSTOM_OBJECTS, as_float32, resolve_builder
from trainer.storage.rundir import RunDir
from trainer.training.fit import TrainResult

METADATA_ATTR = "trainer_metadata"
log = logging.getLogger("trainer")


def save_model(model: keras.Model, path: str, metadata: dict) -> None:
    with warnings.catch_warnings():
        # `.h5` is the format the users' downstream tools load; Keras's "legacy" notice is noise.
        warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
        model.save(path, save_format="h5", include_optimizer=False)
    with h5py.File(path, "a") as f:
        f.attrs[METADATA_ATTR] = json.dumps(metadata)


def load_model(path: str, allow_unsafe: bool = False) -> tuple[keras.Model, dict]:
    """Load a `model.h5` written by this package, with its metadata (local path).

    Its architecture is checked first (`modelfile`): layers that carry code or that Keras does
    not know are refused unless `allow_unsafe`, which also imports the user's builder module
    named in the metadata (`package.module:function`), so its registered layers resolve.
    """
    if not allow_unsafe:
        modelfile.check(path)
    try:
        with h5py.File(path, "r") as f:
            metadata = json.loads(f.attrs.get(METADATA_ATTR, "{}"))
        if allow_unsafe and ":" in str(metadata.get("model", "")):
            resolve_builder(metadata["model"])
        model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"cannot load model ({reason}), {path}, expected a model.h5 written by "
                        "this package") from None
    if not isinstance(metadata, dict):
        raise UserError(f"model metadata is not a mapping, {path}, expected a model.h5 written "
                        "by this package")
    return model, metadata


def write_history(rows: list[dict], path: str) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def write_all(config: Config, splits: Splits, result: TrainResult, run: RunDir,
              platform: Platform, wall_time_s: float) -> dict[str, str]:
    """Write and publish every artefact; returns what went where."""
    out: dict[str, str] = {}
    metadata = {"task": config.task, "class_names": splits.class_names,
                "input_shape": list(splits.input_shape), "num_outputs": splits.num_outputs,
                "model": config.model.name, "name": config.name}
    # Saved in float32 whatever the training precision, so it loads and predicts on any machine.
    save_model(as_float32(result.model), run.local("model.h5"), metadata)
    out["model"] = run.publish("model.h5")

    with open(run.local("config.yaml"), "w") as f:
        f.write(config.to_yaml())
    out["config"] = run.publish("config.yaml")

    if result.history:
        write_history(result.history, run.local("history.csv"))
        out["history"] = run.publish("history.csv")

    metrics = dict(result.metrics)
    metrics["data"] = splits.summary()
    metrics["training"] = {"epochs_trained": len(result.history), "best_epoch": result.best_epoch,
                           "resumed_from_epoch": result.resumed_from_epoch,
                           "stopped_early": result.stopped_early, "wall_time_s": wall_time_s,
                           "replicas": result.replicas, "global_batch": result.global_batch,
                           **result.runtime}
    matrix: Optional[np.ndarray] = None
    if splits.class_names and result.test_predictions is not None:
        predicted = result.test_predictions.argmax(axis=1)
        matrix = plots.confusion_matrix(splits.test.y, predicted, splits.num_outputs)
        metrics["confusion_matrix"] = {"labels": splits.class_names, "matrix": matrix.tolist()}
    metrics = secrets.redact(metrics)  # data sources are URLs, which may carry a password
    with open(run.local("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    out["metrics"] = run.publish("metrics.json")

    if config.output.plots:
        if result.history:
            plots.history_plot(result.history, run.local("plots", "history.png"), config.name)
            run.publish("plots", "history.png")
        if matrix is not None:
            plots.confusion_plot(matrix, splits.class_names, run.local("plots", "confusion_matrix.png"),
                                 f"{config.name}: test set")
            run.publish("plots", "confusion_matrix.png")
        out["plots"] = run.remote("plots")
    if config.output.report:
        try:
            report.write_report(run.local("report.html"), config, splits, result, metrics, run.url,
                                platform)
            out["report"] = run.publish("report.html")
        except Exception:  # noqa: BLE001 - the model and metrics are saved; a page must not fail the run
            log.exception("report.html could not be written")
    return out

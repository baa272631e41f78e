"""The model file, `model.h5`: saved with its metadata, checked, then loaded.

Prediction needs nothing else, so this module stays small (no training, report or plots): the
task, the class names in output order and the input shape travel in the file as the HDF5
attribute `trainer_metadata` (the input standardisation is a layer inside the model).

Keras's legacy `.h5` loader has no safe mode: a `Lambda` layer's function is stored as Python
bytecode and `load_model` runs it (`marshal`), so opening someone else's model file can execute
their code. The model's architecture is plain JSON (the HDF5 attribute `model_config`), so
`check` reads it first: every object in it must be a Keras class (`keras.layers.*`,
initializers, regularizers, constraints, dtype policies) or one of the project's own
`CUSTOM_OBJECTS`, and no layer may carry code (`Lambda`, and the TensorFlow-op layers that call
any TF function or op by name). Anything else is refused unless the user opts in.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Iterator, Optional

import h5py

from trainer import storage
from trainer.storage import hdf5
from trainer.errors import UserError
from trainer.kerasflavor import keras
from trainer.models import CUSTOM_OBJECTS, resolve_builder
from trainer.runtime import secrets

METADATA_ATTR = "trainer_metadata"

OPT_IN_FLAG = "--allow_unsafe_model"
# Layers that run code named in the file: Python bytecode, or any TensorFlow function or op.
CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer")
# Model containers: their configs hold the layers checked below.
CONTAINERS = ("Functional", "Sequential", "Model")
POLICIES = ("Policy", "DTypePolicy")  # mixed-precision dtype policies (tf.keras.mixed_precision)


def _objects(config: Any) -> Iterator[tuple[str, str, bool]]:
    """(class_name, layer name, is the layer itself) of every object serialised in a model config:
    layers, nested models and wrappers, and what layers hold (initializers, regularizers, ...).
    Every dict is visited, so nothing hides under a key this module does not know about."""
    stack: list[tuple[Any, str]] = [(config, "?")]
    while stack:
        node, layer = stack.pop()
        if isinstance(node, list):
            stack.extend((v, layer) for v in reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node:
            inner = node.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            is_layer = isinstance(name, str) and node["class_name"] not in POLICIES
            layer = name if is_layer else layer
            yield str(node["class_name"]), layer, is_layer
        stack.extend((v, layer) for v in reversed(list(node.values())))


def _known(class_name: str) -> bool:
    if class_name in CONTAINERS or class_name in CUSTOM_OBJECTS or class_name in POLICIES:
        return True
    if not class_name.isidentifier() or class_name.startswith("_"):
        return False
    return any(isinstance(getattr(space, class_name, None), type) for space in (
        keras.layers, keras.initializers, keras.regularizers, keras.constraints))


# A model file is read by Keras into memory; larger than this is no model this package wrote.
MODEL_LIMIT = 8 << 30


def check_inside(local: str, where: Optional[str] = None) -> None:
    """Refuse a model file that is not a regular file, is too large, or whose datasets are kept
    outside it (HDF5 external storage, links, virtual datasets: `storage.hdf5`), which Keras
    would read as weights. Runs whatever `--allow_unsafe_model` says."""
    path = where or local
    storage.check_regular(local)
    storage.check_size(path, os.stat(local).st_size, MODEL_LIMIT, "a model file")
    try:
        with h5py.File(local, "r") as f:
            hdf5.check_inside(f, path)
    except OSError as exc:
        raise UserError(f"cannot open model ({str(exc).splitlines()[0]}), {path}, expected a "
                        "model.h5 written by this package") from None


def check(path: str, where: Optional[str] = None) -> None:
    """Refuse a model whose layers carry code or are not known to Keras, naming the layer and
    the opt-in flag that skips this check. Messages name `where` (default: the local `path`)."""
    flag = OPT_IN_FLAG
    local, path = path, where or path
    check_inside(local, path)
    try:
        with h5py.File(local, "r") as f:
            text = f.attrs.get("model_config")
    except OSError as exc:
        raise UserError(f"cannot open model ({str(exc).splitlines()[0]}), {path}, expected a "
                        "model.h5 written by this package") from None
    if text is None:
        raise UserError(f"model has no architecture (no 'model_config'), {path}, expected a "
                        "model.h5 written by this package (not a weights-only file)")
    try:
        config = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except (ValueError, RecursionError):
        raise UserError(f"model architecture is not JSON, {path}, expected a model.h5 written "
                        "by this package") from None
    found = list(_objects(config))
    if not any(is_layer for _, _, is_layer in found):
        raise UserError(f"model architecture names no layers, {path}, expected a model.h5 "
                        "written by this package")
    for class_name, name, is_layer in found:
        if class_name in CODE_LAYERS:
            raise UserError(f"model layer {name!r} is a {class_name} layer, which runs code stored "
                            f"in the file, {path}, expected only built-in Keras layers (pass "
                            f"{flag} if you trust the file's author)")
        if not _known(class_name):
            what = "is of" if is_layer else "holds an object of"
            raise UserError(f"model layer {name!r} {what} unknown class {class_name!r}, {path}, "
                            f"expected only built-in Keras layers (pass {flag} if you trust the "
                            "file's author and its code is importable)")


def save(model: keras.Model, path: str, metadata: dict) -> None:
    """Write `model` to the local `path` as `.h5`, without its optimizer, with `metadata`."""
    with warnings.catch_warnings():
        # `.h5` is the format the users' downstream tools load; Keras's "legacy" notice is noise.
        warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
        model.save(path, save_format="h5", include_optimizer=False)
    with h5py.File(path, "a") as f:
        f.attrs[METADATA_ATTR] = json.dumps(secrets.redact(metadata))  # the file is shared


def load(path: str, allow_unsafe: bool = False) -> tuple[keras.Model, dict]:
    """A `model.h5` written by this package (local path or URL), with its metadata.

    Its architecture is checked first (`check`): layers that carry code or that Keras does not
    know are refused unless `allow_unsafe`, which also imports the user's builder module named
    in the metadata (`package.module:function`), so its registered layers resolve. h5py reads
    only local files, so a remote model is fetched to a temporary file first.
    """
    if not storage.is_local(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "model.h5")
            storage.get_file(path, local, MODEL_LIMIT, "a model file")
            return _load_local(local, allow_unsafe, path)
    return _load_local(path, allow_unsafe, path)


def _load_local(local: str, allow_unsafe: bool, path: str) -> tuple[keras.Model, dict]:
    if allow_unsafe:
        check_inside(local, path)  # code is the user's to trust; reading other files is not
    else:
        check(local, path)
    try:
        with h5py.File(local, "r") as f:
            metadata = json.loads(f.attrs.get(METADATA_ATTR, "{}"))
        if allow_unsafe and ":" in str(metadata.get("model", "")):
            resolve_builder(metadata["model"])
        model = keras.models.load_model(local, custom_objects=CUSTOM_OBJECTS, compile=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"cannot load model ({reason}), {path}, expected a model.h5 written by "
                        "this package") from None
    if not isinstance(metadata, dict):
        raise UserError(f"model metadata is not a mapping, {path}, expected a model.h5 written "
                        "by this package")
    if metadata:
        check_metadata(model, metadata, path)
    return model, metadata


TASKS = ("classification", "regression")


def check_metadata(model: keras.Model, metadata: dict, path: str) -> None:
    """Refuse metadata that disagrees with the model it describes (an edited or mixed-up file):
    prediction trusts it for the class of each output and the shape of each input."""

    def refuse(key: str, expected: str) -> UserError:
        shown = repr(metadata.get(key))
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        return UserError(f"model metadata {key!r} is {shown}, {path}, expected {expected}")

    inputs, outputs = model.input_shape, model.output_shape
    if not (isinstance(inputs, tuple) and len(inputs) == 4):
        raise UserError(f"model input of shape {inputs}, {path}, expected one input of images "
                        "(batch, height, width, channels)")
    if not (isinstance(outputs, tuple) and len(outputs) == 2 and outputs[1]):
        raise UserError(f"model output of shape {outputs}, {path}, expected one output of shape "
                        "(batch, outputs)")
    width, task, names = int(outputs[1]), metadata.get("task"), metadata.get("class_names")
    if task not in TASKS:
        raise refuse("task", " or ".join(TASKS))
    if task == "classification" and not (
            isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names)):
        raise refuse("class_names", f"a list of {width} names, one per output of the model")
    if task == "regression" and names is not None:
        raise refuse("class_names", "none for a regression model")
    targets = metadata.get("target_names")
    if targets is not None and not (
            task == "regression" and isinstance(targets, list) and len(targets) == width
            and all(isinstance(n, str) for n in targets)):
        raise refuse("target_names", f"a list of {width} names, one per output of a regression "
                     "model")
    shape = metadata.get("input_shape")
    expected = [None if d is None else int(d) for d in inputs[1:]]
    if "input_shape" in metadata and not (
            isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            and all(e is None or d == e for d, e in zip(shape, expected))):
        raise refuse("input_shape", f"{expected}, the model's input shape")
    count = metadata.get("num_outputs")
    if "num_outputs" in metadata and (isinstance(count, bool) or count != width):
        raise refuse("num_outputs", f"{width}, the model's output width")

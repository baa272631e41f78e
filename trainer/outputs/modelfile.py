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

The file also loads in Keras 3 (`tf.keras` from TensorFlow 2.16 on, `import keras`), which
reads tf-keras `.h5` files with its legacy loader but trips on two things tf-keras writes:
a model nested inside another (Keras 3 resolves the outer model's calls of it to a node that
does not exist) and config keys its layers do not take (`rng_type` of every random layer,
`trainable` and `noise_shape` that its `SpatialDropout2D` refuses). So `save` writes the model
as one flat graph of the same layers and weights, and leaves out of every layer's config the
keys that only hold what both flavours default to (`keras3_config`).
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
from trainer.kerasflavor import keras, tf
from trainer.kerasinternals import graph_nodes
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
    """Write `model` to the local `path` as `.h5`, without its optimizer, with `metadata`: one
    flat graph, its config readable by tf-keras and Keras 3 alike (see the module docstring)."""
    with warnings.catch_warnings():
        # `.h5` is the format the users' downstream tools load; Keras's "legacy" notice is noise.
        warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
        flattened(model).save(path, save_format="h5", include_optimizer=False)
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(keras3_config(config))
        f.attrs[METADATA_ATTR] = json.dumps(secrets.redact(metadata))  # the file is shared


# Keys tf-keras writes into a layer's config that some Keras 3 layers do not take, with the
# value both flavours default to: left out where they hold it (and `rng_type`, tf-keras's own).
_DEFAULTED = {"trainable": True, "noise_shape": None}
_TF_KERAS_ONLY = ("rng_type",)


def keras3_config(node: Any) -> Any:
    """A saved model config without the keys above, in every layer at any depth; tf-keras
    reads it back as the same model."""
    if isinstance(node, list):
        return [keras3_config(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: keras3_config(v) for k, v in node.items()}
    inner = node.get("config")
    if "class_name" in node and isinstance(inner, dict) and node["class_name"] not in CONTAINERS:
        node["config"] = {k: v for k, v in inner.items() if k not in _TF_KERAS_ONLY and not (
            k in _DEFAULTED and v is _DEFAULTED[k])}
    return node


class _Replayed(dict):
    """Computed tensors by the id of the Keras tensor they stand for, handed out as the
    one-element lists a `Node` pops them from."""

    def __getitem__(self, key):
        return [dict.__getitem__(self, key)]


def flattened(model: keras.Model) -> keras.Model:
    """The same layers (so the same weights) as one graph, the models nested in `model` opened
    up; `model` itself when nothing is nested, or when the flat graph cannot be made (a layer
    named like another, a nested model that is not a graph of layers)."""
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    try:
        outputs = _replay(model, list(model.inputs))
        return keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0],
                           outputs if len(outputs) > 1 else outputs[0], name=model.name)
    except (ValueError, TypeError, KeyError, AttributeError):
        return model


def _replay(model: keras.Model, inputs: list) -> list:
    """Call `model`'s layers on `inputs` in its graph's order (as tf-keras's own
    `Functional._run_internal_graph` does), nested graphs layer by layer; the outputs."""
    nodes = graph_nodes(model)
    if nodes is None:
        raise TypeError(f"{model.name} is not a graph of layers")
    tensors = _Replayed((str(id(ref)), x) for ref, x in zip(model.inputs, inputs))
    for node in nodes:
        if node.is_input:
            continue
        args, kwargs = node.map_arguments(tensors)
        layer = node.layer
        if isinstance(layer, keras.Model) and not kwargs:
            out = _replay(layer, tf.nest.flatten(args))
        else:
            out = layer(*args, **kwargs)
        for key, value in zip(node.flat_output_ids, tf.nest.flatten(out)):
            dict.__setitem__(tensors, key, value)
    return [dict.__getitem__(tensors, str(id(ref))) for ref in model.outputs]


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


def round_trip(model: keras.Model, name: str) -> None:
    """Refuse, before training, a model that the end of the run could not write: its float32
    copy is saved as `.h5` in a temporary folder, loaded back, and must give the same prediction
    on zeros. A layer that cannot be rebuilt from its saved config (a `Lambda` holding a Python
    `lambda` under mixed precision, an unregistered layer class) is named, with the builder."""
    from trainer.models import as_float32  # the copy the run saves, made the same way

    import numpy as np

    zeros = np.zeros((1, *model.input_shape[1:]), np.float32)
    with tempfile.TemporaryDirectory(prefix="trainer-round-trip-") as tmp:
        path = os.path.join(tmp, "model.h5")
        try:
            copy = as_float32(model)
            save(copy, path, {})
            back = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
            before = np.asarray(copy(zeros, training=False), np.float64)
            after = np.asarray(back(zeros, training=False), np.float64)
        except Exception as exc:  # noqa: BLE001 - the user's layers may fail in any way
            if storage.out_of_space(exc):
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            reason = reason.split(". ")[0].rstrip(".")[:200]  # its first sentence
            raise UserError(f"model {name!r} cannot be saved and loaded back as model.h5 "
                            f"({_culprit(model, str(exc))}: {reason}), model.name={name}, expected "
                            "layers that Keras can save and rebuild (built-in layers, or classes "
                            "registered with keras.saving.register_keras_serializable; no "
                            "Lambda holding a Python lambda)") from None
    if before.shape != after.shape or not np.allclose(before, after, rtol=1e-4, atol=1e-5,
                                                      equal_nan=True):
        raise UserError(f"model {name!r} predicts differently once saved and loaded back as "
                        f"model.h5 (on zeros: {before.reshape(-1)[:4]} before, "
                        f"{after.reshape(-1)[:4]} after), model.name={name}, expected layers "
                        "whose saved config and weights rebuild them (get_config returning every "
                        "constructor argument)")


def _culprit(model: keras.Model, error: str) -> str:
    """The layer that does not rebuild: the first whose own config does not deserialize, else
    the first named in the error, else the model as a whole."""
    import re

    from trainer.models import _float32_config

    layers = [m for m in model.submodules  # the layers inside, not the models holding them
              if isinstance(m, keras.layers.Layer) and not isinstance(m, keras.Model)]
    for layer in layers:
        try:
            keras.layers.deserialize(_float32_config(keras.layers.serialize(layer)),
                                     custom_objects=CUSTOM_OBJECTS)
        except Exception:  # noqa: BLE001 - this layer is the one
            return f"layer {layer.name!r} of class {type(layer).__name__}"
    for layer in layers:
        for word in (layer.name, type(layer).__name__):
            if re.search(rf"\b{re.escape(word)}\b", error):
                return f"layer {layer.name!r} of class {type(layer).__name__}"
    return "the model"

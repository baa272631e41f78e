"""What a `.h5` model asks Keras to build, checked before Keras builds it.

Keras's legacy `.h5` loader has no safe mode: a `Lambda` layer's function is stored as Python
bytecode and `load_model` runs it (`marshal`), so opening someone else's model file can execute
their code. The model's architecture is plain JSON (the HDF5 attribute `model_config`), so it is
read here first: every object in it must be a Keras class (`keras.layers.*`, initializers,
regularizers, constraints, dtype policies) or one of the project's own `CUSTOM_OBJECTS`, and no
layer may carry code (`Lambda`, and the TensorFlow-op layers that call any TF function or op by
name). Anything else is refused unless the user opts in.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import h5py

from trainer.errors import UserError
from trainer.kerasflavor import keras
from trainer.models import CUSTOM_OBJECTS

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


def check(path: str) -> None:
    """Refuse a model whose layers carry code or are not known to Keras, naming the layer and
    the opt-in flag that skips this check."""
    flag = OPT_IN_FLAG
    try:
        with h5py.File(path, "r") as f:
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

"""`saved_model/`: the run's model as a TensorFlow SavedModel that serves encoded images.

`model.h5` needs this package (or its decoder) in front of it; a SavedModel carries its own
preprocessing, so Vertex AI's TensorFlow prediction containers (TF Serving) can run it as is.
Two signatures:

- `serving_default` takes `image_bytes`, a batch of encoded PNG or JPEG files (what Vertex AI
  online prediction passes on from `{"instances": [{"image_bytes": {"b64": "..."}}]}`; the
  `_bytes` suffix is the name Vertex AI expects for binary inputs), decodes and resizes each as
  training did (`trainer.data.tf_images`, the TF-op twin of `trainer.data.images`);
- `predict_arrays` takes `images`, float32 arrays in the training layout (batch, H, W, C),
  as `trainer.predict` hands them to `model.h5`.

Both return, for classification, `classes` (the class names, per instance), `probabilities`,
`predicted` (the likeliest class, or for two classes the second where its probability reaches
the model's stored `eval.threshold`) and `probability` (the predicted class's probability); for
regression one output per target, named after it. The standardisation is a layer inside the
model, as in `model.h5`.

`assets.extra/trainer.json` records what the registry needs (the TensorFlow version that wrote
the model, the task, names and input shape) without TensorFlow. A model that cannot be exported
(a user's layer that does not trace) leaves no folder and one log line; the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Optional, Sequence

from trainer import storage
from trainer.data import context

log = logging.getLogger("trainer")

FOLDER = "saved_model"
BYTES_SIGNATURE, BYTES_INPUT = "serving_default", "image_bytes"
ARRAYS_SIGNATURE, ARRAYS_INPUT = "predict_arrays", "images"
INFO = os.path.join("assets.extra", "trainer.json")
LAST = "saved_model.pb"  # published last: until it is there, the folder is no SavedModel


def output_names(class_names: Optional[Sequence[str]], num_outputs: int,
                 target_names: Optional[Sequence[str]] = None) -> list[str]:
    """The signature's output keys: fixed for classification; for regression one per target,
    its name made a valid key (the run's target names, as `trainer.predict`'s columns;
    `output_K` for a model saved without them), unique."""
    if class_names:
        return ["classes", "probabilities", "predicted", "probability"]
    names = list(target_names or []) if len(target_names or []) == num_outputs else []
    keys = []
    for k in range(num_outputs):
        key = re.sub(r"[^A-Za-z0-9_]", "_", names[k]) if names else f"output_{k}"
        key = key if key and key[0].isalpha() else f"output_{key}"
        keys.append(key if key not in keys else f"{key}_{k}")
    return keys


def export(model, metadata: dict, path: str, target_names: Optional[Sequence[str]] = None
           ) -> Optional[str]:
    """Write the SavedModel to the local folder `path`; returns None, or why it was not written
    (then `path` does not exist)."""
    shape = context.frame_shape(tuple(int(d) for d in metadata["input_shape"]),
                                metadata.get("frame_context") or 0)  # what a request sends
    if len(shape) != 3 or shape[2] not in (1, 3):
        return (f"the model takes inputs of shape {shape}; image files decode to (H, W, 1) or "
                "(H, W, 3)")
    try:
        _write(model, metadata, shape, path, target_names)
    except Exception as exc:  # noqa: BLE001 - whatever a user's layer raises while traced
        shutil.rmtree(path, ignore_errors=True)
        if storage.out_of_space(exc) is not None:
            raise  # a full disk ends the run as it does for any file (job.py)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return f"{type(exc).__name__}: {reason}"
    return None


def _write(model, metadata: dict, shape: tuple, path: str,
           target_names: Optional[Sequence[str]]) -> None:
    import tensorflow as tf

    from trainer.data import tf_images

    height, width, channels = shape
    class_names = metadata.get("class_names")
    keys = output_names(class_names, int(metadata["num_outputs"]), target_names)
    module = tf.Module()
    # Its variables, not the Keras model: saving a Keras object also traces every layer's own
    # call for Keras to reload, which costs seconds per run and is never used here.
    module.weights = list(model.weights)

    def outputs(images):
        if metadata.get("frame_context"):  # one video's consecutive frames, stacked
            images = context.stack_tf(images, metadata["frame_context"])
        values = tf.cast(model(images, training=False), tf.float32)
        if not class_names:
            return {key: values[:, k] for k, key in enumerate(keys)}
        names = tf.constant(class_names)
        best = tf.argmax(values, axis=1)
        if metadata.get("threshold") is not None and len(class_names) == 2:
            # two classes: the stored decision threshold, as trainer.predict applies it
            best = tf.cast(values[:, 1] >= metadata["threshold"], tf.int64)
        return {"classes": tf.tile(names[None, :], [tf.shape(values)[0], 1]),
                "probabilities": values, "predicted": tf.gather(names, best),
                "probability": tf.gather(values, best, axis=1, batch_dims=1)}

    image = tf.TensorSpec((height, width, channels), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
                 autograph=False)  # plain TF ops: nothing for AutoGraph to convert
    def from_bytes(image_bytes):
        images = tf.map_fn(lambda data: tf_images.decode(data, height, width, channels),
                           image_bytes, fn_output_signature=image)
        return outputs(images)

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=ARRAYS_INPUT)],
                 autograph=False)
    def from_arrays(images):
        return outputs(images)

    # Saved as signatures only (attached to the module too, each would be traced twice).
    tf.saved_model.save(module, path, signatures={
        BYTES_SIGNATURE: from_bytes.get_concrete_function(),
        ARRAYS_SIGNATURE: from_arrays.get_concrete_function()})
    os.makedirs(os.path.join(path, os.path.dirname(INFO)), exist_ok=True)
    with open(os.path.join(path, INFO), "w") as f:
        json.dump({"tensorflow": tf.__version__, "task": metadata.get("task"),
                   "name": metadata.get("name"), "class_names": class_names,
                   "threshold": metadata.get("threshold"),
                   "outputs": keys, "input_shape": list(shape),
                   "signatures": {BYTES_SIGNATURE: BYTES_INPUT, ARRAYS_SIGNATURE: ARRAYS_INPUT}},
                  f, indent=2)


def files(path: str) -> list[str]:
    """The SavedModel's files, relative to `path`, in publishing order: `saved_model.pb` last."""
    found = [os.path.relpath(os.path.join(folder, name), path)
             for folder, _dirs, names in os.walk(path) for name in names]
    return sorted(found, key=lambda rel: (rel == LAST, rel))

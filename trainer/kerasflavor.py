"""The one module that imports Keras.

The project uses tf-keras (Keras 2 API) because Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585). Every other module takes `keras` from here,
so switching flavour later is a one-file change.
"""

import os

# Must be set before TensorFlow first resolves `tf.keras`.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["dropout_generators", "keras", "tf"]


def dropout_generators(model: keras.Model) -> list:
    """The dropout layers' random generators. tf-keras keeps them out of the model's own
    checkpoint dependencies, so a checkpoint names them itself: without their state, a resumed
    run would drop other units than an uninterrupted one."""
    found = []
    for layer in model.submodules:
        rng = getattr(layer, "_random_generator", None)
        if rng is not None and getattr(rng, "_generator", None) is not None:
            found.append(rng._generator)
    return found

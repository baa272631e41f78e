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

__all__ = ["keras", "tf"]

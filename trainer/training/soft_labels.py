"""Classification's loss and metrics when training labels are not plain class indices: label
smoothing (`train.label_smoothing`), and the class probabilities that mixup and cutmix make of
the training batches (`data.augment`).

Validation and test batches keep their class indices, so the loss and every metric take either
form: class indices, or probabilities over the classes (told apart by their static shape, which
differs between Keras's training and evaluation functions, each traced on its own data).
Against probabilities, the metrics count the most likely class as the label.
"""

from __future__ import annotations

from typing import Any

from trainer.kerasflavor import keras, tf


def _probabilities(y_true: tf.Tensor, y_pred: tf.Tensor) -> bool:
    """Whether `y_true` holds a probability per class (else a class index per sample)."""
    return (y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] is not None
            and y_true.shape[-1] == y_pred.shape[-1] and y_pred.shape[-1] > 1)


def as_probabilities(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    y_true, y_pred = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
    if _probabilities(y_true, y_pred):
        return tf.cast(y_true, y_pred.dtype)
    indices = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    return tf.one_hot(indices, tf.shape(y_pred)[-1], dtype=y_pred.dtype)


def as_indices(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    y_true, y_pred = tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred)
    return tf.argmax(y_true, axis=-1) if _probabilities(y_true, y_pred) else y_true


@keras.saving.register_keras_serializable(package="trainer")
class SoftCrossentropy(keras.losses.Loss):
    """The cross-entropy of softmax outputs against class indices or class probabilities,
    the targets smoothed by `label_smoothing` (`(1 - s) * target + s / classes`). Equal to
    `sparse_categorical_crossentropy` on class indices without smoothing."""

    def __init__(self, label_smoothing: float = 0.0,
                 name: str = "sparse_categorical_crossentropy", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            as_probabilities(y_true, y_pred), y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


# The classification metrics of `config.TASK_METRICS`, as the function of class indices each
# stands for, under the name Keras logs it by.
_METRICS = {
    "accuracy": "sparse_categorical_accuracy", "acc": "sparse_categorical_accuracy",
    "sparse_categorical_accuracy": "sparse_categorical_accuracy",
    "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
    "sparse_top_k_categorical_accuracy": "sparse_top_k_categorical_accuracy",
    "SparseTopKCategoricalAccuracy": "sparse_top_k_categorical_accuracy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
}


def metric(name: str) -> Any:
    """The metric `name`, taking class indices or probabilities, logged under the name Keras
    gives `name` (`accuracy` stays `accuracy`, `SparseCategoricalAccuracy` is
    `sparse_categorical_accuracy`)."""
    function = getattr(keras.metrics, _METRICS[name])
    logged = name if name[0].islower() else _METRICS[name]

    def on_indices(y_true, y_pred):
        return function(as_indices(y_true, y_pred), y_pred)

    on_indices.__name__ = logged
    return on_indices


def loss_and_metrics(train) -> tuple[Any, list]:
    """The loss and metrics `compile` gets for the `train` section of a config that trains on
    anything but plain class indices (`train.label_smoothing`, mixup, cutmix)."""
    return (SoftCrossentropy(train.label_smoothing),
            [metric(name) for name in train.metrics])

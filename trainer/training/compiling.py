"""Compiling a built model for training: Adam (with `train.ema`'s average), the task's loss and
metrics as the config names them, and the losses' own needs: a regression loss over standardised
targets (`models.target_scale`), label smoothing and mixup's class probabilities
(`soft_labels`), and an RMSE that is the whole split's (`RootMeanSquare`).

Compiling is training's business, so it lives here and not beside the architectures: loading a
model to predict (`trainer.predict`, through `trainer.models`' custom objects) imports nothing of
`trainer.training`.
"""

from __future__ import annotations

from typing import Callable

from trainer.config import TrainConfig
from trainer.errors import UserError
from trainer.kerasflavor import keras, tf
from trainer.kerasinternals import replace_loss_tracker
from trainer.models import CUSTOM_OBJECTS, target_scale
from trainer.training import ema, soft_labels

# Losses that are relative errors already, scale-free per target: computed on the targets' own
# values even when the model learns them standardised (standardised targets cross zero).
RELATIVE_LOSSES = ("mape", "msle", "mean_absolute_percentage_error",
                   "mean_squared_logarithmic_error", "MeanAbsolutePercentageError",
                   "MeanSquaredLogarithmicError")


def _standardised(loss: Callable, scale: tuple[tf.Tensor, tf.Tensor]) -> Callable:
    """`loss` over targets and outputs standardised by the training split's `scale`."""
    mean, std = scale

    def standardised_loss(y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        return loss((y_true - mean) / std, (y_pred - mean) / std)

    return standardised_loss


class RootMeanSquare(keras.metrics.Mean):
    """The loss figure of a root-mean-square loss: Keras averages each batch's loss weighted by
    its size, which for `rmse` is the mean of per-batch RMSEs, not the split's RMSE. This
    averages the squares (each batch's mean squared error) and takes the root at the end: the
    RMSE over every sample of the split, under any batching, replica or worker count."""

    def update_state(self, values, sample_weight=None):
        return super().update_state(tf.square(values), sample_weight=sample_weight)

    def result(self):
        return tf.sqrt(super().result())


def compile_model(model: keras.Model, train: TrainConfig, mixed_labels: bool = False,
                  learning_rate=None, jit_compile: bool = False,
                  steps_per_execution: int = 1) -> None:
    """Adam at `learning_rate` (a number or a schedule; default: `train.learning_rate`), the
    task's loss and metrics, optional XLA, and `steps_per_execution` training steps per call.

    It needs the `train` section alone (the config filled in the task's loss and metrics) and
    `mixed_labels`: whether the training batches carry class probabilities (mixup or cutmix in
    `data.augment`: `augment_spec.mixes_labels`), which the input pipeline decides."""
    learning_rate = train.learning_rate if learning_rate is None else learning_rate
    loss_name, metrics = train.loss, train.metrics  # the config filled in defaults
    loss = CUSTOM_OBJECTS.get(loss_name, loss_name)
    scale = target_scale(model)
    # The names were checked when the config loaded: only those that fit the task, each one
    # Keras knows (config.TASK_LOSSES, TASK_METRICS; a test resolves every one of them).
    if scale is not None and loss_name not in RELATIVE_LOSSES:
        loss = _standardised(keras.losses.get(loss) if isinstance(loss, str) else loss, scale)
    # Label smoothing (classification only, as the config's rules hold), mixup, cutmix.
    if train.label_smoothing or mixed_labels:
        loss, metrics = soft_labels.loss_and_metrics(train)
    try:
        # Under a mixed_float16 policy tf-keras wraps the optimizer in a LossScaleOptimizer itself.
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate,
                                                      **ema.optimizer_options(train.ema)),
                      loss=loss, metrics=list(metrics), jit_compile=jit_compile,
                      steps_per_execution=steps_per_execution)
    except ValueError as exc:
        raise UserError(f"cannot compile ({exc}), train.loss={loss_name} train.metrics={metrics}, "
                        "expected Keras loss and metric names") from None
    if loss_name == "rmse":
        # tf-keras's loss tracker, made whole-split.
        replace_loss_tracker(model, lambda: RootMeanSquare(name="loss"), keras.metrics.Mean)

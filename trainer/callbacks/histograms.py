"""Weight, gradient and activation views over training, for TensorBoard (seed 003's TODO list).

With `train.histograms: true`, every epoch writes, to `<run>/tensorboard/histograms/`:
  weights/<variable>        a histogram of each trainable variable
  gradients/<variable>      a histogram of its gradient on one fixed training batch
  activations/<layer>       a histogram of each layer's output on that batch, plus the scalars
  activations/<layer>/mean, /std and /zero_fraction (a ReLU layer near 1.0 has dead units)
A fixed batch makes epochs comparable: the change between two histograms is the model's, not
the data's. Nested models (the architecture inside the standardise/softmax wrapper) are opened
up layer by layer when they are linear chains; a branching model is measured as a whole.
"""

from __future__ import annotations

import numpy as np

from trainer.kerasflavor import keras, tf


def _is_chain(model: keras.Model, layers: list) -> bool:
    """Whether each layer takes exactly the previous layer's output (so eager chaining is exact)."""
    if isinstance(model, keras.Sequential):
        return True
    try:
        for prev, layer in zip(layers, layers[1:]):
            if layer.get_input_at(-1) is not prev.get_output_at(-1):
                return False
        return len(model.inputs) == 1 and layers[0].get_input_at(-1) is model.inputs[0]
    except (AttributeError, ValueError, RuntimeError):
        return False


def layer_outputs(model: keras.Model, x: tf.Tensor, prefix: str = "") -> list[tuple[str, tf.Tensor]]:
    """(layer path, output) for every leaf layer, computed eagerly on `x` in inference mode."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not _is_chain(model, layers):
        return [(prefix + model.name, model(x, training=False))]
    out = []
    for layer in layers:
        if isinstance(layer, keras.Model):
            inner = layer_outputs(layer, x, f"{prefix}{layer.name}/")
            out += inner
            x = inner[-1][1]
        else:
            x = layer(x, training=False)
            out.append((prefix + layer.name, x))
    return out


def _tag(name: str) -> str:
    return name.replace(":0", "").replace(":", "_")


class HistogramLogger(keras.callbacks.Callback):
    """Writes the histograms and activation statistics above at the end of every epoch."""

    def __init__(self, log_dir: str, x: np.ndarray, y: np.ndarray):
        super().__init__()
        self.x = tf.constant(x)
        self.y = tf.constant(y)
        self.writer = tf.summary.create_file_writer(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        with tf.GradientTape() as tape:
            pred = model(self.x, training=False)
            loss = model.compute_loss(x=self.x, y=self.y, y_pred=pred)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        step = epoch + 1
        with self.writer.as_default(step=step):
            for var, grad in zip(variables, grads):
                tf.summary.histogram(f"weights/{_tag(var.name)}", var)
                if grad is not None:
                    tf.summary.histogram(f"gradients/{_tag(var.name)}", grad)
            for name, value in layer_outputs(model, self.x):
                value = tf.cast(value, tf.float32)
                tf.summary.histogram(f"activations/{name}", value)
                tf.summary.scalar(f"activations/{name}/mean", tf.reduce_mean(value))
                tf.summary.scalar(f"activations/{name}/std", tf.math.reduce_std(value))
                tf.summary.scalar(f"activations/{name}/zero_fraction", tf.math.zero_fraction(value))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()

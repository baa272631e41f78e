"""Weight, gradient and activation views over training, for TensorBoard (seed 003's TODO list).

With `train.histograms: true`, every epoch writes, to `<run>/tensorboard/histograms/`:
  weights/<variable>        a histogram of each trainable variable
  gradients/<variable>      a histogram of its gradient on one fixed training batch
  activations/<layer>       a histogram of each layer's output on that batch, plus the scalars
  activations/<layer>/mean, /std and /zero_fraction (a ReLU layer near 1.0 has dead units)
A fixed batch makes epochs comparable: the change between two histograms is the model's, not
the data's. Nested models (the architecture inside the standardise/softmax wrapper) are opened
up layer by layer when they are linear chains; a branching model is measured as a whole.

The same measurements are kept for the run's own plots (`Dynamics`, drawn by
`trainer.outputs.plots` into `plots/` and the report): per layer and epoch the norm of its
weights and of their gradient, the zero fraction of its output, and a fixed sample of at most
SAMPLE values of each (the same weights and output positions every epoch), so what is kept grows
by a few kilobytes an epoch whatever the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


SAMPLE = 256  # values kept per layer, kind and epoch for the histograms' image and GIF
KINDS = ("weights", "gradients", "activations")


@dataclass
class Dynamics:
    """Per-layer measurements of each epoch a `HistogramLogger` saw, bounded (see above)."""
    epochs: list[int] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # leaf layers in the model's order
    weight_norm: dict[str, list[float]] = field(default_factory=dict)  # layers with weights
    grad_norm: dict[str, list[float]] = field(default_factory=dict)
    zero_fraction: dict[str, list[float]] = field(default_factory=dict)  # every layer
    samples: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)  # (kind, layer)

    def rows(self) -> list[dict]:
        """One row per epoch and layer: `plots/layer_dynamics.csv`."""
        nan = float("nan")
        return [{"epoch": epoch, "layer": layer,
                 "weight_norm": self.weight_norm.get(layer, [nan] * (i + 1))[i],
                 "gradient_norm": self.grad_norm.get(layer, [nan] * (i + 1))[i],
                 "zero_fraction": self.zero_fraction[layer][i]}
                for i, epoch in enumerate(self.epochs) for layer in self.layers]


def _leaf_layers(model: keras.Model, prefix: str = "") -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer that is not a model, nested models opened up."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _leaf_layers(layer, f"{prefix}{layer.name}/")
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append((prefix + layer.name, layer))
    return out


def _sample_at(size: int, seed: int) -> np.ndarray:
    """SAMPLE fixed positions among `size` values (all of them when fewer)."""
    if size <= SAMPLE:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, SAMPLE, replace=False))


def _flat(values: list) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in values]) if values else \
        np.zeros(0, np.float32)


def _tag(name: str) -> str:
    return name.replace(":0", "").replace(":", "_")


class HistogramLogger(keras.callbacks.Callback):
    """Writes the histograms and activation statistics above at the end of every epoch."""

    def __init__(self, log_dir: str, x: np.ndarray, y: np.ndarray):
        super().__init__()
        self.x = tf.constant(x)
        self.y = tf.constant(y)
        self.writer = tf.summary.create_file_writer(log_dir)
        self.dynamics = Dynamics()
        self._at: dict[tuple[str, str], np.ndarray] = {}  # the sampled positions, fixed

    def _keep(self, epoch: int, grads: dict, outputs: list[tuple[str, tf.Tensor]]) -> None:
        """This epoch's norms, zero fractions and samples into `dynamics`."""
        d = self.dynamics
        d.epochs.append(epoch)
        outputs = dict(outputs)
        for path, layer in _leaf_layers(self.model):
            if path not in d.layers:
                d.layers.append(path)
            weights = [w.numpy() for w in layer.trainable_weights]
            values = {"weights": _flat(weights),
                      "gradients": _flat([grads[id(w)] for w in layer.trainable_weights
                                          if grads.get(id(w)) is not None]),
                      "activations": _flat([outputs[path]]) if path in outputs else None}
            if weights:
                d.weight_norm.setdefault(path, []).append(float(np.linalg.norm(values["weights"])))
                d.grad_norm.setdefault(path, []).append(float(np.linalg.norm(values["gradients"])))
            act = values["activations"]
            d.zero_fraction.setdefault(path, []).append(
                float((act == 0).mean()) if act is not None and act.size else float("nan"))
            for kind, flat in values.items():
                if flat is None or not flat.size:
                    continue
                at = self._at.setdefault((kind, path), _sample_at(flat.size, len(self._at)))
                d.samples.setdefault((kind, path), []).append(flat[at])

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        with tf.GradientTape() as tape:
            pred = model(self.x, training=False)
            loss = model.compute_loss(x=self.x, y=self.y, y_pred=pred)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        step = epoch + 1
        outputs = layer_outputs(model, self.x)
        self._keep(step, {id(v): None if g is None else g.numpy() for v, g in zip(variables, grads)},
                   [(name, tf.cast(value, tf.float32).numpy()) for name, value in outputs])
        with self.writer.as_default(step=step):
            for var, grad in zip(variables, grads):
                tf.summary.histogram(f"weights/{_tag(var.name)}", var)
                if grad is not None:
                    tf.summary.histogram(f"gradients/{_tag(var.name)}", grad)
            for name, value in outputs:
                value = tf.cast(value, tf.float32)
                tf.summary.histogram(f"activations/{name}", value)
                tf.summary.scalar(f"activations/{name}/mean", tf.reduce_mean(value))
                tf.summary.scalar(f"activations/{name}/std", tf.math.reduce_std(value))
                tf.summary.scalar(f"activations/{name}/zero_fraction", tf.math.zero_fraction(value))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()

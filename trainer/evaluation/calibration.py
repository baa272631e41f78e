"""Temperature scaling (`eval.calibrate: temperature`), fitted on the validation split and
stored inside the model.

One number T divides the logits before the softmax: the predicted class never changes, only
how sure the model says it is. T is fitted by minimising the validation split's negative
log-likelihood; that is convex in 1/T, so a golden-section search over log(1/T) finds it,
deterministically, in a few dozen passes over an (N, K) array.

The seeds' networks end in logits and the model's head is a float32 softmax layer named
`probabilities`: the temperature goes in as a built-in `Rescaling` layer (by 1/T) before it,
so the file needs nothing new to load. A user's network that ends in a softmax itself gives
probabilities; there the logits are their logarithms (softmax is unchanged by a constant
shift), taken by `TemperatureOnProbabilities`, one of the project's registered layers.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from trainer.kerasflavor import keras, tf

HEAD = "probabilities"  # trainer.models' softmax head
LAYER = "temperature"
SEARCH = (math.log(1 / 100.0), math.log(100.0))  # log(1/T): T from 0.01 to 100
STEPS = 80  # golden-section steps: the bracket shrinks by 0.618 each, far below float precision


class TemperatureOnProbabilities(keras.layers.Layer):
    """softmax(log(p) / T): probabilities re-tempered, for networks that end in a softmax."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, inputs):
        tiny = tf.constant(np.finfo(np.float32).tiny, inputs.dtype)
        return tf.nn.softmax(tf.math.log(tf.maximum(inputs, tiny)) / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant, which softmax ignores."""
    p = np.asarray(probabilities, np.float64)
    return np.log(np.maximum(p, np.finfo(np.float32).tiny))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), np.asarray(y).astype(int).ravel()].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of `y` (golden-section search)."""
    golden = (math.sqrt(5) - 1) / 2
    lo, hi = SEARCH

    def cost(log_beta: float) -> float:
        return nll(logits, y, 1.0 / math.exp(log_beta))

    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = cost(b)
    return float(1.0 / math.exp((lo + hi) / 2))


def head_logits(model: keras.Model) -> Optional[keras.Model]:
    """The model up to its logits, where its head is the `probabilities` softmax; else None."""
    try:
        head = model.get_layer(HEAD)
    except ValueError:
        return None
    return keras.Model(model.inputs, head.input)


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """The same network whose probabilities are softmax(logits / T)."""
    try:
        logits = model.get_layer(HEAD).input
    except ValueError:
        logits = None
    if logits is not None:
        scaled = keras.layers.Rescaling(1.0 / temperature, name=LAYER, dtype="float32")(logits)
        out = keras.layers.Activation("softmax", dtype="float32", name=HEAD)(scaled)
    else:
        out = TemperatureOnProbabilities(temperature, name=LAYER, dtype="float32")(model.output)
    return keras.Model(model.inputs, out, name=model.name)


def temperature_of(model: keras.Model) -> Optional[float]:
    """The temperature a model carries, or None."""
    try:
        layer = model.get_layer(LAYER)
    except ValueError:
        return None
    if isinstance(layer, TemperatureOnProbabilities):
        return layer.temperature
    return 1.0 / float(layer.scale)

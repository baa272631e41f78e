"""How much of the device a run uses: the model's FLOPs per sample, the device's measured matmul
peak for the precision in use, their ratio at the achieved training rate (the model FLOPs
utilisation, MFU), and the `steps_per_execution` the predicted step time calls for.

FLOPs are counted from the layers (the multiply-adds of convolutions and dense layers, 2 FLOPs
each; the rest is a few percent for these networks); a training step costs three forward passes
(forward, and a backward pass of twice that). The peak is a short matmul probe, measured once
per process and precision.
"""

from __future__ import annotations

import functools
import math
import time

from trainer.kerasflavor import keras, tf

TRAIN_PASSES = 3  # forward + backward (gradients of activations and of weights)
CALL_SECONDS = 0.2  # `steps_per_execution: auto`: about this much work per call
MAX_STEPS_PER_EXECUTION = 64


def _layers(model) -> list:
    out = []
    for layer in model.layers:
        out += _layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def _layer_flops(layer) -> int:
    """Forward FLOPs of one sample through `layer` (0 for layers without multiply-adds)."""
    if isinstance(layer, keras.layers.Dense):
        # on images (ConvNeXt's pointwise layers) a Dense layer acts at every position
        positions = math.prod(layer.output_shape[1:-1])
        return 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1]) * positions
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = layer.depthwise_kernel.shape  # (kh, kw, in, multiplier)
        return 2 * math.prod(kernel) * math.prod(layer.output_shape[1:-1])
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        # kernel x output positions (input positions for a transposed convolution); a grouped
        # convolution's kernel holds only its group's input channels already
        per_position = math.prod(layer.kernel.shape)
        positions = math.prod(layer.output_shape[1:-1] if layer.data_format == "channels_last"
                              else layer.output_shape[2:])
        if isinstance(layer, keras.layers.Conv2DTranspose):
            positions = math.prod(layer.input_shape[1:-1])
        return 2 * per_position * positions
    return 0


def forward_flops_per_sample(model: keras.Model) -> int:
    """FLOPs of one sample's forward pass, counted from the built model's layers."""
    return sum(_layer_flops(layer) for layer in _layers(model))


def train_flops_per_sample(model: keras.Model) -> int:
    return TRAIN_PASSES * forward_flops_per_sample(model)


@functools.lru_cache(maxsize=None)
def matmul_peak(policy: str) -> float:
    """FLOP/s of a square matmul in the policy's compute dtype on the default device, best of a
    few timed runs after a warm-up (about 0.1 s on a CPU; once per process and precision)."""
    dtype = {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}.get(policy, tf.float32)
    gpu = bool(tf.config.list_logical_devices("GPU"))
    n = 8192 if gpu else 1024
    a = tf.random.stateless_uniform((n, n), seed=(1, 2), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x)[:1, :1], tf.float32)))
    matmul(a).numpy()  # warm-up: tracing and kernel selection
    best = math.inf
    repeats = 10 if gpu else 5
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            matmul(a).numpy()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * n ** 3 / best


def steps_per_execution(setting, train_flops: int, batch: int, peak: float,
                        several_workers: bool = False) -> int:
    """`train.steps_per_execution`: a number as given; `auto` groups as many steps as fit in
    about CALL_SECONDS at the predicted step time (the step's FLOPs at half the peak). With
    several workers `auto` is 1: each worker measures its own peak, and workers that grouped
    steps differently would wait for each other's collectives for ever."""
    if setting != "auto":
        return int(setting)
    if several_workers:
        return 1
    step_s = train_flops * batch / (0.5 * peak) if peak > 0 else CALL_SECONDS
    return int(min(MAX_STEPS_PER_EXECUTION, max(1, CALL_SECONDS / max(step_s, 1e-9) + 1e-9)))


def utilisation(train_flops: int, samples_per_s: float, peak: float) -> float:
    """The fraction of the peak that training at `samples_per_s` achieves (MFU)."""
    return train_flops * samples_per_s / peak if peak > 0 else 0.0

"""Standard architectures by name: the backbones of `keras.applications`, under the task's head.

A backbone takes the run's raw images, as every other model does, so `model.h5`, `saved_model/`,
`predict` and serving need nothing new. What the backbone needs is inside the model, as built-in
Keras layers (saved in `.h5` as their numbers, loaded without custom code):
- grey images become three channels (`grey_to_rgb`, the one channel three times);
- images smaller than the backbone's minimum (32 px) are resized up to it (`resize_to_backbone`),
  or to `model.params.image_size` when given (224 is the size the ImageNet weights saw);
- with `data.standardize` the run's standardised values become pixels with ImageNet's statistics
  (`to_pixels`: value x std + mean, per channel); without it the images must be pixels, 0 to 255;
- the backbone's own preprocessing: `Rescaling` to [-1, 1] for ResNetV2 (a layer here), the
  layers EfficientNet, EfficientNetV2, MobileNetV3 and ConvNeXt carry inside themselves.
Then global average pooling, `dropout` and a dense layer of one output per class or target.

MobileNetV3's hard sigmoid and ConvNeXt's residual sums are TensorFlow ops in Keras's own code,
layers that the model file's safety check refuses (they run code named in the file); they are
built here from built-in layers that compute the same (`_builtin_layers`).

The weights a backbone starts from (`model.weights`: none, imagenet, or a weights file) are
another job: `trainer.backbone_weights` fetches and checks them before any data is read, and loads
them into the built model; this module only builds the architecture.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Callable, Optional

import numpy as np

from trainer.errors import UserError
from trainer.kerasflavor import keras

layers = keras.layers

MIN_SIZE = 32  # keras.applications' smallest input without the ImageNet top
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
BACKBONE = "backbone"  # the layer name of the backbone inside every such model
HEAD = "head"


@dataclasses.dataclass(frozen=True)
class Spec:
    constructor: str  # the class-like function in keras.applications
    rescale: bool  # whether the model needs Rescaling to [-1, 1] in front (ResNetV2 does)
    module: str  # the keras.applications module with its own layer code


SPECS: dict[str, Spec] = {
    "resnet50v2": Spec("ResNet50V2", True, "resnet_v2"),
    "efficientnet_b0": Spec("EfficientNetB0", False, "efficientnet"),
    "efficientnetv2_b0": Spec("EfficientNetV2B0", False, "efficientnet_v2"),
    "mobilenet_v3_small": Spec("MobileNetV3Small", False, "mobilenet_v3"),
    "mobilenet_v3_large": Spec("MobileNetV3Large", False, "mobilenet_v3"),
    "convnext_tiny": Spec("ConvNeXtTiny", False, "convnext"),
}
# Keyword arguments of the constructors that the head or this module decides.
_DECIDED = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
            "classifier_activation", "include_preprocessing")


def _source_module(name: str):
    """keras.applications' implementation module (where its layer helpers live)."""
    import importlib
    import tf_keras  # noqa: F401 - the flavour kerasflavor picked

    return importlib.import_module(f"tf_keras.src.applications.{name}")


def _hard_sigmoid(x):
    """MobileNetV3's relu6(x + 3) / 6, as clip(x / 6 + 1/2, 0, 1) from built-in layers."""
    return layers.ReLU(max_value=1.0)(layers.Rescaling(1.0 / 6.0, offset=0.5)(x))


def _convnext_block(projection_dim, drop_path_rate=0.0, layer_scale_init_value=1e-6, name=None):
    """ConvNeXt's block (Keras's code, the same layers and names) with its residual sum as an
    `Add` layer instead of a TensorFlow op."""
    convnext = _source_module("convnext")

    def apply(inputs):
        x = layers.Conv2D(projection_dim, kernel_size=7, padding="same", groups=projection_dim,
                          name=name + "_depthwise_conv")(inputs)
        x = layers.LayerNormalization(epsilon=1e-6, name=name + "_layernorm")(x)
        x = layers.Dense(4 * projection_dim, name=name + "_pointwise_conv_1")(x)
        x = layers.Activation("gelu", name=name + "_gelu")(x)
        x = layers.Dense(projection_dim, name=name + "_pointwise_conv_2")(x)
        if layer_scale_init_value is not None:
            x = convnext.LayerScale(layer_scale_init_value, projection_dim,
                                    name=name + "_layer_scale")(x)
        if drop_path_rate:
            x = convnext.StochasticDepth(drop_path_rate, name=name + "_stochastic_depth")(x)
        else:
            x = layers.Activation("linear", name=name + "_identity")(x)
        return layers.Add(name=name + "_add")([inputs, x])

    return apply


@contextmanager
def _builtin_layers(spec: Spec):
    """Keras's own construction code, with the helpers that would leave TensorFlow-op layers in
    the model swapped for built-in layers for the time of the call."""
    module = _source_module(spec.module)
    swaps = {"mobilenet_v3": {"hard_sigmoid": _hard_sigmoid},
             "convnext": {"ConvNeXtBlock": _convnext_block}}.get(spec.module, {})
    saved = {k: getattr(module, k) for k in swaps}
    try:
        for k, v in swaps.items():
            setattr(module, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


def custom_objects() -> dict:
    """Keras classes of keras.applications that a backbone's model file names (ConvNeXt's)."""
    convnext = _source_module("convnext")
    return {"LayerScale": convnext.LayerScale, "StochasticDepth": convnext.StochasticDepth}


def construct(name: str, size: tuple[int, int], weights: Optional[str] = None,
              **options: Any) -> keras.Model:
    """The bare backbone `name` (no top, global average pooling) for `size` x 3 pixels; with
    `weights`, Keras's own (`imagenet`: its download) or a file's."""
    spec = SPECS[name]
    for key in options:
        if key in _DECIDED:
            raise UserError(f"model.params.{key} is decided by the trainer, model.params, expected "
                            "the backbone's own options (e.g. alpha, minimalistic, "
                            "drop_connect_rate)")
    fn = getattr(keras.applications, spec.constructor)
    with _builtin_layers(spec):
        try:
            return fn(include_top=False, weights=weights, input_shape=(*size, 3), pooling="avg",
                      **options)
        except TypeError as exc:
            raise UserError(f"model {name!r} cannot take its params ({exc}), model.params, "
                            f"expected options of keras.applications.{spec.constructor}") from None


def _target_size(input_shape, image_size) -> tuple[int, int]:
    h, w = int(input_shape[0]), int(input_shape[1])
    if image_size is not None:
        size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
        if len(size) != 2 or min(size) < MIN_SIZE:
            raise UserError(f"model.params.image_size {image_size!r} is too small or not a size, "
                            f"model.params.image_size, expected a size of at least {MIN_SIZE}")
        return int(size[0]), int(size[1])
    return max(h, MIN_SIZE), max(w, MIN_SIZE)


def input_size(input_shape, params: dict) -> tuple[int, int]:
    """The height and width the backbone sees for images of `input_shape`."""
    return _target_size(input_shape, params.get("image_size"))


def _builder(name: str) -> Callable[..., keras.Model]:
    def build(input_shape, num_outputs: int, dropout: float = 0.2, standardized: bool = False,
              pretrained: bool = False, image_size=None,
              **options) -> keras.Model:
        channels = int(input_shape[-1])
        if len(input_shape) != 3 or channels not in (1, 3):
            raise UserError(f"model {name!r} takes images of 1 or 3 channels, model.name, "
                            f"expected data of shape (height, width, 1 or 3), not {input_shape}")
        size = _target_size(input_shape, image_size)
        inputs = keras.Input(shape=tuple(input_shape))
        x = inputs
        if channels == 1:
            x = layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
        if size != tuple(int(n) for n in input_shape[:2]):
            x = layers.Resizing(*size, name="resize_to_backbone")(x)
        if standardized:
            x = layers.Normalization(axis=-1, mean=IMAGENET_MEAN, variance=IMAGENET_STD ** 2,
                                     invert=True, name="to_pixels")(x)
        if SPECS[name].rescale:
            x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="backbone_preprocess")(x)
        backbone = construct(name, size, **options)
        backbone._name = BACKBONE  # where `trainer.backbone_weights` loads the weights
        # Pretrained: BatchNorm stays in inference mode, frozen or not (the Keras transfer-learning
        # guide); from scratch it learns its statistics.
        x = backbone(x, training=False) if pretrained else backbone(x)
        if dropout:
            x = layers.Dropout(dropout, name="head_dropout")(x)
        return keras.Model(inputs, layers.Dense(num_outputs, name=HEAD)(x), name=name)

    build.__doc__ = f"keras.applications.{SPECS[name].constructor} under the task's head."
    build.backbone = name
    return build


def is_backbone(model_name: str) -> bool:
    return model_name in SPECS


def weights_setting(config) -> str:
    """`model.weights` as given: none, imagenet, or a weights file (path or URL)."""
    return str(getattr(config.model, "weights", "none") or "none")


def options(params: dict) -> dict:
    """`model.params` that go to the keras.applications constructor (`image_size` does not)."""
    return {k: v for k, v in params.items() if k != "image_size"}


def memory_need(backbone: keras.Model, batch: int) -> int:
    """Bytes to train `backbone`: each weight four times (the weights, their gradients and
    Adam's two moments, float32), and each layer's outputs for a batch twice (kept for the
    backward pass, and their gradients)."""
    activations = 0
    for layer in backbone.layers:
        shapes = layer.output_shape if isinstance(layer.output_shape, list) else [layer.output_shape]
        activations += sum(int(np.prod([d for d in shape[1:] if d])) for shape in shapes
                           if isinstance(shape, tuple))
    return 16 * backbone.count_params() + 2 * 4 * batch * activations


def check_memory(backbone: keras.Model, config, size: tuple[int, int]) -> None:
    """The backbone at the size it will see, checked against memory before data is read, as
    the seed nets are when built."""
    from trainer.runtime import memory

    batch = config.train.batch_size
    memory.check_fits(memory_need(backbone, batch),
                      f"model {config.model.name!r} at {size[0]}x{size[1]}x3 "
                      f"({backbone.count_params()} parameters with their gradients and Adam's "
                      f"moments, and the activations of a batch of {batch})",
                      "model.name, train.batch_size, data.image_size")


def seen_line(input_shape, params: dict, name: str) -> str:
    """What `datacheck` says about a backbone's input."""
    h, w = input_size(input_shape, params)
    notes = []
    if int(input_shape[-1]) == 1:
        notes.append("grey as 3 channels")
    if (h, w) != (int(input_shape[0]), int(input_shape[1])):
        notes.append(f"resized from {input_shape[0]}x{input_shape[1]}")
    return (f"model {name} sees {h}x{w}x3 images"
            + (f" ({', '.join(notes)})" if notes else ""))


# A backbone builder's parameters that `builder_kwargs` fills from the config, not the user.
SET_BY_THE_TRAINER = ("standardized", "pretrained")


def builder_kwargs(config) -> dict:
    """What a backbone's builder takes from the config besides `model.params` (each of
    `SET_BY_THE_TRAINER`)."""
    return {"standardized": bool(config.data.standardize),
            "pretrained": weights_setting(config) != "none"}


def find_backbone(model: keras.Model) -> Optional[keras.Model]:
    """The backbone inside a built model (None for other models)."""
    for layer in _walk(model):
        if isinstance(layer, keras.Model) and layer.name == BACKBONE:
            return layer
    return None


def backbone_layers(model: keras.Model) -> list:
    """The layers of the backbone inside a built model (empty for other models)."""
    backbone = find_backbone(model)
    return list(backbone.layers) if backbone is not None else []


def _walk(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def register_all(register: Callable) -> None:
    for name in SPECS:
        register(name)(_builder(name))

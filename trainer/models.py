"""The seeds' architectures, a registry to pick them by name, and the task-dependent head.

Every builder shares one signature, `builder(input_shape, num_outputs, **params) -> keras.Model`,
and returns raw outputs (no softmax). `build_model` wraps it: input standardisation in front (so
the saved model carries its own statistics), and behind, for classification a float32 softmax,
for regression the targets' de-standardisation (`data.standardize_targets`): the network learns
standardised targets and the model outputs them in their own units.
A user's own builder, `package.module:function`, is called the same way, so changing the network
never needs a fork of this package (seed 001: "the only section of code where the design of the
model itself is changed"). Compiling the model for training is `trainer.training.compiling`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Callable, Optional

import numpy as np

from trainer.config import Config, ModelConfig
from trainer.errors import UserError
from trainer.evaluation import calibration
from trainer.runtime import memory
from trainer.kerasflavor import keras, tf

layers = keras.layers
Builder = Callable[..., keras.Model]
REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        REGISTRY[name] = fn
        return fn
    return wrap


def _sequential(input_shape, body: list, name: str) -> keras.Model:
    return keras.Sequential([keras.Input(shape=input_shape), *body], name=name)


@register("contact_cnn")
def contact_cnn(input_shape, num_outputs: int, dropout: float = 0.4) -> keras.Model:
    """Seed 001's Keras example: two 3x3 convs, pooling, a 512-unit dense layer."""
    return _sequential(input_shape, [
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(num_outputs),
    ], "contact_cnn")


@register("hexagonal_cnn")
def hexagonal_cnn(input_shape, num_outputs: int, dropout: float = 0.3) -> keras.Model:
    """Seed 000's lattice regressor (32x32x1 -> 2 in the seed); needs inputs of at least 20 px."""
    return _sequential(input_shape, [
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Conv2D(64, 3, activation="relu", padding="same"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.1),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(32, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(num_outputs),
    ], "hexagonal_cnn")


def _conv_bn_relu(filters: int, stride: int) -> list:
    """Seed 002's block: a strided convolution does the downsizing, then batch norm and ReLU."""
    return [
        layers.Conv2D(filters, kernel_size=stride + 1, strides=stride, padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
    ]


@register("raccoon")
def raccoon(input_shape, num_outputs: int, layer_param: int = 16, dropout: float = 0.5) -> keras.Model:
    """Seed 002's RACCOON: three stride-4 blocks (256 -> 64 -> 16 -> 4), then a small dense layer."""
    body = []
    for mult in (1, 4, 8):
        body += _conv_bn_relu(mult * layer_param, 4)
    body += [layers.Flatten(), layers.Dense(layer_param, activation="relu"), layers.Dropout(dropout),
             layers.Dense(num_outputs)]
    return _sequential(input_shape, body, "raccoon")


@register("penguin")
def penguin(input_shape, num_outputs: int, layer_param: int = 16, dropout: float = 0.5) -> keras.Model:
    """Seed 002's PENGUIN: six stride-2 blocks (256 -> 4), then two dense layers."""
    body = []
    for mult in (1, 2, 4, 6, 8, 10):
        body += _conv_bn_relu(mult * layer_param, 2)
    body += [layers.Flatten(),
             layers.Dense(10 * layer_param, activation="relu"), layers.Dropout(dropout),
             layers.Dense(layer_param, activation="relu"), layers.Dropout(dropout),
             layers.Dense(num_outputs)]
    return _sequential(input_shape, body, "penguin")


@register("shapes_cnn")
def shapes_cnn(input_shape, num_outputs: int, dropout: float = 0.5) -> keras.Model:
    """Seed 004's network: 12-12-24 filter convs with pooling, channel dropout, one dense layer."""
    return _sequential(input_shape, [
        layers.Conv2D(12, 3, padding="same"),
        layers.MaxPooling2D(2),
        layers.ReLU(),
        layers.Conv2D(12, 3, padding="same"),
        layers.MaxPooling2D(2),
        layers.ReLU(),
        layers.Conv2D(24, 3, padding="same"),
        layers.SpatialDropout2D(0.2),
        layers.ReLU(),
        layers.Dropout(dropout),
        layers.Flatten(),
        layers.Dense(num_outputs),
    ], "shapes_cnn")


@register("blueprint_cnn")
def blueprint_cnn(input_shape, num_outputs: int, dropout: float = 0.5) -> keras.Model:
    """Seed 003's small MNIST-style convnet (the Keras blueprint's default model)."""
    return _sequential(input_shape, [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(num_outputs),
    ], "blueprint_cnn")


@register("tiny_cnn")
def tiny_cnn(input_shape, num_outputs: int, dropout: float = 0.0) -> keras.Model:
    """A very small net for tests and smoke runs only."""
    return _sequential(input_shape, [
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(num_outputs),
    ], "tiny_cnn")


from trainer import backbone_weights, backbones  # noqa: E402 - keras.applications, by name

backbones.register_all(register)


def resolve_builder(name: str) -> Builder:
    """A registered name, or `package.module:function` imported from the user's code."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        if not (attr.isidentifier() and all(p.isidentifier() for p in module_name.split("."))):
            raise UserError(f"model.name {name!r} is not package.module:function, model.name, "
                            "expected e.g. mypackage.nets:build")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"cannot import {module_name!r} ({exc}), model.name={name}, expected "
                            "an importable package.module:function (is it on PYTHONPATH?)") from None
        except Exception as exc:  # the user's module fails as it runs: a syntax error, a raise
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UserError(f"cannot import {module_name!r} ({type(exc).__name__}: {first}), "
                            f"model.name={name}, expected a module that imports cleanly") from None
        builder = getattr(module, attr, None)
        if not inspect.isfunction(builder):  # not a class, a builtin (os:system) or a value
            raise UserError(f"{module_name} has no function {attr!r}, model.name={name}, expected "
                            "a function(input_shape, num_outputs, **params) returning a Keras model")
        return builder
    if name not in REGISTRY:
        near = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.5)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise UserError(f"unknown model {name!r}, model.name, expected one of "
                        f"{', '.join(sorted(REGISTRY))} or package.module:function{hint}")
    return REGISTRY[name]


def check_config(model: ModelConfig) -> None:
    """`model.name` and the parameters set for it (`model.params`, `model.dropout`,
    `model.layer_param`), checked through the registry's own lookup and the builder's signature.
    The config cannot check them when it loads (the registry needs TensorFlow, and loading a config
    does not), so a run does it first, before it reads any data: a misspelt name costs nothing."""
    _builder_kwargs(resolve_builder(model.name), model)


def reference_markdown() -> str:
    """The registered architectures as a Markdown table (name, parameters and their defaults,
    the builder's docstring), for docs/reference.md: the one list of model names."""
    rows = ["| `model.name` | parameters | what it is |", "| --- | --- | --- |"]
    for name, builder in REGISTRY.items():
        params = [f"`{p.name}`" if p.default is p.empty else f"`{p.name}={p.default}`"
                  for p in inspect.signature(builder).parameters.values()
                  if p.name not in ("input_shape", "num_outputs", *backbones.SET_BY_THE_TRAINER)
                  and p.kind is not p.VAR_KEYWORD]
        if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
            params.append("the backbone's own options")
        doc = " ".join(inspect.getdoc(builder).split("\n\n")[0].split())
        rows.append(f"| `{name}` | {', '.join(params) or 'none'} | {doc} |")
    return "\n".join(rows)


def _builder_kwargs(builder: Builder, m: ModelConfig, decided: Optional[dict] = None) -> dict:
    """The config's model parameters that this builder accepts; a set one it cannot take is an
    error. `decided`: what the trainer sets besides them (a backbone's weights and input)."""
    wanted = dict(m.params)
    if m.dropout is not None:
        wanted["dropout"] = m.dropout
    if m.layer_param is not None:
        wanted["layer_param"] = m.layer_param
    wanted.update(decided or {})
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return wanted
    for key in wanted:
        if key not in params:
            accepted = [p for p in params if p not in ("input_shape", "num_outputs")]
            raise UserError(f"model {m.name!r} takes no parameter {key!r}, model.{key if key in ('dropout', 'layer_param') else 'params.' + key}, "
                            f"expected one of: {', '.join(accepted) or 'none'}")
    return wanted


def _ends_in_softmax(model: keras.Model) -> bool:
    last = model.layers[-1] if model.layers else None
    act = getattr(last, "activation", None)
    return act is keras.activations.softmax or isinstance(last, layers.Softmax)


TARGETS_LAYER = "targets"  # regression's last layer: standardised outputs -> the targets' units


def build_model(config: Config, input_shape: tuple[int, ...], num_outputs: int,
                mean: Optional[np.ndarray] = None, variance: Optional[np.ndarray] = None,
                policy: str = "float32",
                targets: tuple[Optional[np.ndarray], Optional[np.ndarray]] = (None, None)
                ) -> keras.Model:
    """The full network: [standardise] -> architecture -> float32 head (softmax or linear)
    [-> de-standardise the targets, given their training mean and variance in `targets`].

    `policy` is the Keras dtype policy of the architecture's layers (`mixed_float16`,
    `mixed_bfloat16`); standardisation and the outputs stay float32 whatever it is. It takes the
    whole config, not the `model` section: the head follows `task`, and a backbone's builder
    takes `data.standardize` and its fetched weights from it too (`backbones.builder_kwargs`).
    """
    keras.mixed_precision.set_global_policy(policy)
    try:
        return _build(config, input_shape, num_outputs, mean, variance, mixed=policy != "float32",
                      targets=targets)
    finally:
        # Later models (the next run in this process, a float32 copy for saving) start clean.
        keras.mixed_precision.set_global_policy("float32")


def _build(config: Config, input_shape, num_outputs: int, mean, variance, mixed: bool,
           targets=(None, None)) -> keras.Model:
    builder = resolve_builder(config.model.name)
    kwargs = _builder_kwargs(builder, config.model, backbones.builder_kwargs(config)
                             if backbones.is_backbone(config.model.name) else None)
    try:
        body = builder(tuple(input_shape), num_outputs, **kwargs)
    except UserError:
        raise
    except Exception as exc:  # the builder is the user's code: any failure is theirs to fix
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {config.model.name!r} cannot be built for input shape "
                        f"{tuple(input_shape)} ({first}), model.name, expected an input size the "
                        "architecture can take") from None
    if not isinstance(body, keras.Model):
        raise UserError(f"builder returned {type(body).__name__}, model.name={config.model.name}, "
                        "expected a tf-keras Model")
    _check_shapes(body, config, tuple(input_shape), num_outputs)
    backbone_weights.load_into(body, config)  # a backbone's starting weights (model.weights)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if mean is not None:
        x = layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize",
                                 dtype="float32")(x)
    x = body(x)
    # The head stays float32 whatever precision policy the body uses (numerically safe loss).
    if config.task == "classification" and not _ends_in_softmax(body):
        x = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    elif mixed:
        x = layers.Activation("linear", dtype="float32", name="outputs")(x)
    if config.task == "regression" and targets[0] is not None:
        # A built-in layer (saved in .h5 as its mean and variance, loaded without custom
        # objects): mean + x * std, per target.
        x = layers.Normalization(axis=-1, mean=targets[0], variance=targets[1], invert=True,
                                 name=TARGETS_LAYER, dtype="float32")(x)
    return keras.Model(inputs, x, name=body.name)


def target_scale(model: keras.Model) -> Optional[tuple[tf.Tensor, tf.Tensor]]:
    """The mean and std by which the model's `targets` layer de-standardises its outputs, as
    that layer applies them; None for a model without it."""
    try:
        layer = model.get_layer(TARGETS_LAYER)
    except ValueError:
        return None
    mean = tf.constant(np.asarray(layer.input_mean, np.float32))
    std = tf.maximum(tf.sqrt(tf.constant(np.asarray(layer.input_variance, np.float32))),
                     keras.backend.epsilon())
    return mean, std


def _check_shapes(body: keras.Model, config: Config, input_shape: tuple, num_outputs: int) -> None:
    """The architecture takes one batch of the data's samples and gives one row of
    `num_outputs` per sample (a class's probability, a target), checked before any epoch: a
    wrong width would train and then fail when the run is evaluated."""
    got_in, got_out = body.input_shape, body.output_shape
    if not (isinstance(got_in, tuple) and len(got_in) == len(input_shape) + 1
            and all(g is None or g == w for g, w in zip(got_in[1:], input_shape))):
        raise UserError(f"model {config.model.name!r} takes inputs of shape {got_in}, model.name, "
                        f"expected (None, {', '.join(map(str, input_shape))}) as the data's samples")
    if not isinstance(got_out, tuple) or tuple(got_out) != (None, num_outputs):
        what = "class" if config.task == "classification" else "target"
        raise UserError(f"model {config.model.name!r} outputs shape {got_out}, model.name, "
                        f"expected (None, {num_outputs}): one value per {what} "
                        f"({num_outputs} {what}{'es' if what == 'class' else 's'} for "
                        f"task={config.task})")
    params = body.count_params()
    memory.check_fits(16 * params, f"model {config.model.name!r} of {params} parameters "
                      "(weights, gradients and Adam's two moments)", "model")


def _float32_config(node):
    """A model config with every mixed dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") in ("Policy", "DTypePolicy") and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {k: _float32_config(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32_config(v) for v in node]
    if node in ("mixed_float16", "mixed_bfloat16"):
        return "float32"
    return node


def as_float32(model: keras.Model) -> keras.Model:
    """The same network and weights computing in float32, for saving a model any machine can run.

    Mixed-precision variables are float32 already, so the weights copy over unchanged.
    """
    policies = {layer.dtype_policy.name for layer in _all_layers(model)}
    if policies <= {"float32"}:
        return model
    clone = keras.Model.from_config(_float32_config(model.get_config()), custom_objects=CUSTOM_OBJECTS)
    clone.set_weights(model.get_weights())
    return clone


def _all_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out += _all_layers(layer)
    return out


@keras.saving.register_keras_serializable(package="trainer")
def rmse(y_true, y_pred):
    """Root mean squared error, seed 000's regression loss (not built into Keras as a loss)."""
    y_true = tf.cast(y_true, y_pred.dtype)
    return tf.sqrt(tf.reduce_mean(tf.square(y_pred - y_true)))


# The project's own objects a model file may name (`eval.calibrate` on a network that ends in
# a softmax adds the one of `trainer.evaluation`; the backbones add Keras's own layers).
CUSTOM_OBJECTS = {"rmse": rmse,
                  "TemperatureOnProbabilities": calibration.TemperatureOnProbabilities,
                  **backbones.custom_objects()}

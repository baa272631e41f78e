"""Every registered architecture trains for real, for both tasks, and its saved model predicts."""

import numpy as np
import pytest

from trainer import backbones, config, models
from trainer.outputs import modelfile
from trainer.errors import UserError

from conftest import blob_images, run_job, write_npz

ARCHS = sorted(n for n in models.REGISTRY if not backbones.is_backbone(n))  # backbones: test_backbones


@pytest.fixture(scope="module")
def data32(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data32")
    x, label, target = blob_images(96, size=32, seed=1)
    write_npz(folder, "cls.npz", x, label)
    write_npz(folder, "reg.npz", x, target)
    return folder


def _small(name):
    return ["model.layer_param=4"] if name in ("raccoon", "penguin") else []


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_each_model_trains_and_saves(name, task, data32, tmp_path):
    data = data32 / ("cls.npz" if task == "classification" else "reg.npz")
    result, cfg = run_job(tmp_path, f"name={name}-{task}", f"task={task}", "data.format=npz",
                          f"data.train={data}", f"model.name={name}", "train.epochs=2",
                          "train.batch_size=16", *_small(name))
    assert len(result.metrics["test"]) >= 2
    assert np.isfinite(result.metrics["test"]["loss"])
    model, meta = modelfile.load(result.outputs["model"])
    x, _, _ = blob_images(5, size=32, seed=9)
    pred = model.predict(x[..., None], verbose=0)
    assert pred.shape == (5, 2)
    if task == "classification":
        assert meta["class_names"] == ["0", "1"]
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
        assert "accuracy" in result.metrics["test"]
    else:
        assert meta["class_names"] is None
        assert {"mse", "mae"} <= set(result.metrics["test"])


@pytest.mark.parametrize("name, expected_maps", [("raccoon", (4, 4)), ("penguin", (4, 4))])
def test_seed_002_networks_at_256(name, expected_maps, tmp_path):
    """RACCOON/PENGUIN downsize 256 -> 4x4 before the dense layers, as seed 002 describes."""
    cfg = config.from_dict({"task": "regression", "model": {"name": name, "layer_param": 4}})
    model = models.build_model(cfg, (256, 256, 1), 1)
    body = model.get_layer(name)
    flatten = [layer for layer in body.layers if layer.__class__.__name__ == "Flatten"][0]
    assert tuple(flatten.input_shape[1:3]) == expected_maps
    assert model.output_shape == (None, 1)
    # and it trains on a few 256x256 slices
    rng = np.random.default_rng(0)
    write_npz(tmp_path / "d", "s.npz", rng.normal(size=(12, 256, 256)).astype(np.float32),
              rng.normal(size=12).astype(np.float32))
    result, _ = run_job(tmp_path / "out", f"name={name}", "task=regression", "data.format=npz",
                        f"data.train={tmp_path / 'd' / 's.npz'}", f"model.name={name}",
                        "model.layer_param=4", "train.epochs=1", "train.batch_size=4",
                        "data.validation_split=0.25", "data.test_split=0.25")
    assert np.isfinite(result.metrics["test"]["loss"])


def test_hexagonal_matches_seed_000():
    cfg = config.from_dict({"task": "regression", "model": {"name": "hexagonal_cnn"}})
    model = models.build_model(cfg, (32, 32, 1), 2)
    body = model.get_layer("hexagonal_cnn")
    convs = [layer.filters for layer in body.layers if layer.__class__.__name__ == "Conv2D"]
    dense = [layer.units for layer in body.layers if layer.__class__.__name__ == "Dense"]
    assert convs == [32, 64, 64] and dense == [64, 32, 2]
    assert model.count_params() == body.count_params()  # regression: no extra head


def test_dropout_override_reaches_the_layers():
    cfg = config.from_dict({"model": {"name": "contact_cnn", "dropout": 0.2}})
    body = models.build_model(cfg, (32, 32, 1), 2).get_layer("contact_cnn")
    rates = [layer.rate for layer in body.layers if layer.__class__.__name__ == "Dropout"]
    assert rates == [0.25, 0.2]


def test_user_builder_from_module(tmp_path, monkeypatch, blob_npz):
    (tmp_path / "my_nets.py").write_text(
        "from trainer.kerasflavor import keras\n"
        "def small(input_shape, num_outputs, width=4):\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(width, 3),\n"
        "        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_outputs)], name='mine')\n"
        "def with_softmax(input_shape, num_outputs):\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),\n"
        "        keras.layers.Dense(num_outputs, activation='softmax')], name='mine_sm')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result, _ = run_job(tmp_path / "out", "name=mine", "data.format=npz", f"data.train={blob_npz}",
                        "model.name=my_nets:small", "model.params={width: 6}", "train.epochs=1")
    model, _ = modelfile.load(result.outputs["model"])
    # model.h5 holds the builder's layers in one flat graph (so that Keras 3 loads it too)
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [6]
    # a builder that already ends in softmax does not get a second one
    cfg = config.from_dict({"model": {"name": "my_nets:with_softmax"}})
    built = models.build_model(cfg, (16, 16, 1), 3)
    assert built.layers[-1].name == "mine_sm"


def test_model_name_errors(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="unknown model 'shape_cnn', model.name, expected one of "
                       ".* or package.module:function \\(did you mean 'shapes_cnn'\\?\\)"):
        models.resolve_builder("shape_cnn")
    with pytest.raises(UserError, match="cannot import 'no_such_module'"):
        models.resolve_builder("no_such_module:f")
    cfg = config.from_dict({"model": {"name": "shapes_cnn", "layer_param": 3}})
    with pytest.raises(UserError, match="takes no parameter 'layer_param'"):
        models.build_model(cfg, (16, 16, 1), 2)
    cfg = config.from_dict({"model": {"name": "hexagonal_cnn"}})
    with pytest.raises(UserError, match=r"cannot be built for input shape \(8, 8, 1\)"):
        models.build_model(cfg, (8, 8, 1), 2)
    with pytest.raises(UserError, match="invalid value 'mean_squared_eror' for 'train.loss'"):
        config.from_dict({"task": "regression", "train": {"loss": "mean_squared_eror"}})


# ----------------------------------------------------------------------------------------------
# A user's builder whose model the end of the run could not save is refused before training

USER_LAYERS = '''
from trainer.kerasflavor import keras
layers = keras.layers

def lam(input_shape, num_outputs):
    return keras.Sequential([keras.Input(input_shape), layers.Lambda(lambda x: x * 2.0, name="doubled"),
                             layers.Flatten(), layers.Dense(num_outputs)])

class Doubler(layers.Layer):  # not registered: a saved model cannot name its class
    def call(self, x):
        return x * 2.0

def unregistered(input_shape, num_outputs):
    return keras.Sequential([keras.Input(input_shape), Doubler(name="doubler"), layers.Flatten(),
                             layers.Dense(num_outputs)])

@keras.saving.register_keras_serializable(package="mine")
class Shift(layers.Layer):
    def __init__(self, offset=0.0, complete=True, **kwargs):
        super().__init__(**kwargs)
        self.offset, self.complete = offset, complete

    def call(self, x):
        return x + self.offset

    def get_config(self):  # an incomplete one forgets the offset
        extra = {"offset": self.offset, "complete": True} if self.complete else {}
        return {**super().get_config(), **extra}

def shifted(input_shape, num_outputs, complete=True):
    return keras.Sequential([keras.Input(input_shape), Shift(3.0, complete, name="shift"),
                             layers.Flatten(), layers.Dense(num_outputs, kernel_initializer="ones")])
'''


@pytest.mark.parametrize("builder, policy, refused", [
    ("lam", "mixed_bfloat16", "layer 'doubled' of class Lambda: Requested the deserialization of a "
                              "Lambda layer with a Python `lambda` inside it"),
    ("lam", "float32", None),  # saved as bytecode and loaded back: the run's end works
    ("unregistered", "float32", "layer 'doubler' of class Doubler: Unknown layer: 'Doubler'"),
    ("unregistered", "mixed_float16", "layer 'doubler' of class Doubler: "),
    ("shifted", "float32", None),
    ("shifted", "mixed_bfloat16", None),
    ("shifted_incomplete", "float32", "predicts differently"),
])
def test_a_user_model_must_survive_the_saving_at_the_end(tmp_path, monkeypatch, builder, policy,
                                                        refused):
    (tmp_path / "user_layers.py").write_text(USER_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = builder.replace("_incomplete", "")
    params = {"complete": False} if builder.endswith("_incomplete") else {}
    cfg = config.from_dict({"task": "regression",  # a linear head: outputs show any change
                            "model": {"name": f"user_layers:{name}", "params": params}})
    model = models.build_model(cfg, (8, 8, 1), 2, policy=policy)
    if refused is None:
        modelfile.round_trip(model, cfg.model.name)
        return
    with pytest.raises(UserError) as exc:
        modelfile.round_trip(model, cfg.model.name)
    message = str(exc.value)
    assert f"model.name=user_layers:{name}, expected" in message and refused in message
    assert "\n" not in message


def test_a_lambda_under_mixed_precision_fails_before_the_first_epoch(tmp_path, monkeypatch,
                                                                      capsys, blob_npz):
    from trainer import task

    (tmp_path / "user_layers.py").write_text(USER_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = task.train(None, ["name=lam", "model.name=user_layers:lam", "train.epochs=1",
                             "data.format=npz", f"data.train={blob_npz}",
                             "train.mixed_precision=bfloat16"], str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 2
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("error: model 'user_layers:lam' cannot be saved and loaded back as "
                           "model.h5 (layer 'doubled' of class Lambda: ")
    assert "epoch 1/1" not in captured.err + captured.out  # refused before training
    assert not (tmp_path / "out" / "lam").exists()


def test_the_model_list_is_the_registry():
    """docs/reference.md lists the registered architectures as the registry has them, and the
    config's own documentation of `model.name` names none of them (one list, not two)."""
    import os

    from conftest import ROOT

    table = models.reference_markdown()
    with open(os.path.join(ROOT, "docs", "reference.md")) as f:
        assert table in f.read(), (
            "docs/reference.md's model table is stale: paste `python -c 'from trainer import "
            "models; print(models.reference_markdown())'` into it")
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(models.REGISTRY)
    doc = {key: f for key, f, _ in config.leaves()}["model.name"].metadata["doc"]
    assert not [name for name in models.REGISTRY if name in doc]


def test_every_loss_and_metric_the_config_accepts_is_one_keras_knows():
    """The config checks `train.loss` and `train.metrics` when it loads, against the names that
    fit the task; compiling checks nothing more, so each of those names must resolve."""
    from trainer.kerasflavor import keras

    for task in ("classification", "regression"):
        for name in config.TASK_LOSSES[task]:
            assert name in models.CUSTOM_OBJECTS or callable(keras.losses.get(name)), name
        for name in config.TASK_METRICS[task]:
            assert keras.metrics.get(name) is not None, name

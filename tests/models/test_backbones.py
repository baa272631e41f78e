"""keras.applications backbones by name: raw images in, weights from a file checked layer by layer,
the model file safe and loadable, errors as one line. The smallest backbone at small sizes only
(its one real training run is in test_imagenet_weights.py, from Keras's ImageNet path)."""

import h5py
import numpy as np
import pytest

from trainer import backbones, config, models
from trainer.kerasflavor import keras
from trainer.outputs import modelfile
from trainer.training import utilisation

from conftest import blob_images, error_line, run_cli, write_npz

SMALL = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A weights file made as a user without internet would: a keras.applications backbone with
    weights=None (random, seeded), saved with save_weights."""
    folder = tmp_path_factory.mktemp("weights")
    model = backbones.construct(SMALL, (32, 32))
    path = str(folder / "small.h5")
    model.save_weights(path)
    return path


def _file_weights(path):
    """The file's arrays per layer name, in its order."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in f.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            g = f[name]
            arrays = [np.asarray(g[w]) for w in g.attrs.get("weight_names", [])]
            if arrays:
                out[name] = arrays
    return out


@pytest.mark.parametrize("name", sorted(backbones.SPECS))
def test_every_backbone_is_made_of_layers_the_model_file_accepts(name):
    """No TensorFlow-op layer (code named in the file) and no class the loader does not know."""
    model = backbones.construct(name, (32, 32))
    config_ = {"class_name": "Functional", "config": model.get_config()}
    for class_name, layer, _ in modelfile._objects(config_):
        assert class_name not in modelfile.CODE_LAYERS, (name, layer)
        assert modelfile._known(class_name), (name, layer, class_name)


@pytest.mark.parametrize("shape,standardize", [((20, 20, 1), True), ((40, 36, 3), False)])
def test_weights_from_a_file_are_the_files_layer_by_layer(small_weights, shape, standardize):
    cfg = config.load(None, [f"model.name={SMALL}", f"model.weights={small_weights}",
                             f"data.standardize={str(standardize).lower()}"])
    channels = shape[-1]
    model = models.build_model(cfg, shape, 3, np.zeros(channels), np.ones(channels))
    expected = _file_weights(small_weights)
    taken = [layer for layer in backbones.backbone_layers(model) if layer.weights]
    assert [layer.name for layer in taken] == list(expected)
    for layer in taken:
        for got, want in zip(layer.get_weights(), expected[layer.name]):
            np.testing.assert_array_equal(got, want)
    # Raw images in, of the data's own shape; the backbone sees 3 channels, at least 32 px.
    assert model.input_shape == (None, *shape)
    seen = model.get_layer(SMALL).get_layer(backbones.BACKBONE).input_shape
    assert seen == (None, max(shape[0], 32), max(shape[1], 32), 3)
    assert utilisation.train_flops_per_sample(model) > 0


def test_a_wrong_weights_file_is_one_line_naming_the_layer_before_data(tmp_path):
    wrong = str(tmp_path / "large.h5")
    backbones.construct("mobilenet_v3_large", (32, 32)).save_weights(wrong)
    missing = str(tmp_path / "no-such-data.npz")  # the weights are checked before data is read
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={missing}",
                   "--set", f"model.name={SMALL}", "--set", f"model.weights={wrong}",
                   "--output_dir", str(tmp_path / "runs"))
    line = error_line(proc.stderr)
    assert proc.returncode == 2
    assert "model.weights=" in line and "layer '" in line and "no-such-data" not in line
    proc = run_cli("--set", f"model.name={SMALL}", "--set", f"model.weights={tmp_path}/none.h5",
                   "--output_dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "model.weights" in error_line(proc.stderr)


def test_weights_need_a_backbone_and_params_reach_it(tmp_path):
    proc = run_cli("--set", "model.name=tiny_cnn", "--set", "model.weights=imagenet",
                   "--output_dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "model.weights=imagenet needs a backbone" in error_line(proc.stderr)
    cfg = config.load(None, [f"model.name={SMALL}", "model.params.alpha=0.75",
                             "model.params.image_size=48"])
    model = models.build_model(cfg, (16, 16, 1), 2)
    inner = model.get_layer(SMALL).get_layer(backbones.BACKBONE)
    assert inner.input_shape == (None, 48, 48, 3)
    default = backbones.construct(SMALL, (48, 48))
    assert inner.count_params() < default.count_params()  # alpha 0.75 is narrower than 1.0


def test_a_backbone_too_large_for_memory_is_refused_before_data(tmp_path):
    missing = str(tmp_path / "no-such-data.npz")
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={missing}",
                   "--set", f"model.name={SMALL}", "--set", "model.params.image_size=224",
                   "--set", "train.batch_size=65536", "--output_dir", str(tmp_path / "runs"))
    line = error_line(proc.stderr)
    assert proc.returncode == 2
    assert f"model '{SMALL}' at 224x224x3" in line and "train.batch_size" in line
    assert "no-such-data" not in line


def test_flops_count_grouped_convolutions_and_dense_layers_on_images():
    # ConvNeXt's layers: a convolution in 2 groups (kernel 3x3x2x6: 108 multiply-adds at each
    # of 64 positions) and a Dense layer at every position (6 x 5 x 64)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", groups=2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    assert utilisation.forward_flops_per_sample(model) == 2 * (108 * 64 + 6 * 5 * 64)


def test_flops_and_datacheck_show_what_the_backbone_sees(tmp_path):
    # MobileNetV3-Small at 224: about 56 M multiply-adds (its paper), counted by the same rule
    # as the seed nets (convolutions, depthwise convolutions, dense layers).
    flops = utilisation.forward_flops_per_sample(backbones.construct(SMALL, (224, 224)))
    assert 0.8 * 2 * 56e6 < flops < 1.25 * 2 * 56e6, flops
    from trainer import datacheck

    x, label, _ = blob_images(40, size=16, seed=4)
    data = write_npz(tmp_path, "d.npz", x[..., None], label)
    cfg = config.load(None, ["data.format=npz", f"data.train={data}", f"model.name={SMALL}"])
    lines = datacheck.check(cfg, None)
    assert f"model {SMALL} sees 32x32x3 images (grey as 3 channels, resized from 16x16)" in lines

"""Regression targets on different scales (seed 000's spacing and angle), and held-out figures
over the whole split.

With `data.standardize_targets` (the default) the network learns every target standardised by
the training split's mean and std, and its last layer maps the outputs back: `model.h5`, its
float32 copy, `saved_model/` and `trainer.predict` answer in the targets' own units. The
headline loss of a split, and each epoch's validation loss, is the split's own figure (for
`rmse`, the root of the mean square over every sample), not a mean of per-batch figures.
"""

import json
import logging

import numpy as np
import pytest

from conftest import blob_images, run_job, write_npz
from preemption_runs import assert_same_weights
from trainer import config, models, predict
from trainer.errors import UserError
from trainer.kerasflavor import keras, tf
from trainer.outputs import modelfile
from trainer.training.evaluation import log_per_target

# float32 on every CPU: the figures below are compared with a float32 recomputation to 1e-4, and
# `auto` computes in bfloat16 on CPUs with AVX512-BF16 or AMX (the split's figure is the same
# property there, to bfloat16's 3 digits).
SMALL = ["task=regression", "data.format=npz", "model.name=tiny_cnn", "train.batch_size=32",
         "train.early_stopping_patience=0", "output.plots=false", "output.report=false",
         "train.mixed_precision=off"]


def _targets(n: int, seed: int, scales, offsets):
    """Blob images whose targets are the square's x and y, each scaled and shifted."""
    x, _, t = blob_images(n, size=16, seed=seed)
    return x, (t * np.asarray(scales) + np.asarray(offsets)).astype(np.float32)


def _r2(y, pred):
    return 1 - ((pred - y) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)


# (scales, offsets): 1 to 1000 times apart, either target the small one, far from zero or not.
CASES = [((1.0, 1000.0), (0.0, 3000.0)), ((500.0, 0.5), (-200.0, 0.1)), ((30.0, 1.0), (0.0, -5.0))]


@pytest.mark.parametrize("scales, offsets", CASES, ids=["x1000", "x0.001", "x0.03"])
def test_each_target_is_learnt_and_predicted_in_its_own_units(tmp_path, scales, offsets):
    data = tmp_path / "d"
    x_tr, y_tr = _targets(320, 1, scales, offsets)
    x_va, y_va = _targets(64, 2, scales, offsets)
    # the test squares lie in the lower right: statistics taken from them would show
    x_te, y_te = _targets(256, 3, scales, offsets)
    right = ((y_te - offsets) / scales > 0.4).all(axis=1)
    x_te, y_te = x_te[right], y_te[right]
    paths = [write_npz(data, f"{k}.npz", x, y) for k, x, y in
             (("train", x_tr, y_tr), ("val", x_va, y_va), ("test", x_te, y_te))]
    serve = scales == CASES[0][0]  # one case exports saved_model/ too
    result, _ = run_job(tmp_path / "out", "name=s", *SMALL, "train.epochs=5",
                        f"data.train={paths[0]}", f"data.val={paths[1]}", f"data.test={paths[2]}",
                        f"output.saved_model={str(serve).lower()}")
    metrics = json.loads(open(f"{result.run_dir}/metrics.json").read())
    for name in ("target_0", "target_1"):  # each clearly better than predicting its mean
        assert metrics["per_target"][name]["r2"] > 0.5, metrics["per_target"]

    # the statistics are the training split's, stored in the model file
    model, _ = modelfile.load(f"{result.run_dir}/model.h5")
    layer = model.get_layer(models.TARGETS_LAYER)
    np.testing.assert_allclose(layer.input_mean, y_tr.mean(axis=0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(layer.input_variance, y_tr.var(axis=0, dtype=np.float64), rtol=1e-5)
    everything = np.concatenate([y_tr, y_va, y_te])
    assert not np.allclose(layer.input_mean, everything.mean(axis=0), rtol=1e-3)

    # trainer.predict answers in the targets' units: its R² against the raw targets
    saved = predict.load(result.run_dir)
    values = np.array([p.values for p in predict.predict(saved, [paths[2]])], dtype=np.float32)
    assert values.shape == y_te.shape
    assert (_r2(y_te, values) > 0.5).all(), _r2(y_te, values)
    np.testing.assert_allclose(_r2(y_te, values), [metrics["per_target"][n]["r2"] for n in
                                                   ("target_0", "target_1")], atol=1e-4)
    if serve:  # and so does the SavedModel's arrays signature
        served = tf.saved_model.load(f"{result.run_dir}/saved_model")
        out = served.signatures["predict_arrays"](images=tf.constant(x_te[..., None]))
        np.testing.assert_allclose(np.stack([out["target_0"], out["target_1"]], axis=1), values,
                                   rtol=1e-4, atol=1e-4 * np.abs(y_te).max())


def test_the_float32_copy_and_its_file_keep_the_targets_units(tmp_path):
    cfg = config.from_dict({"task": "regression", "model": {"name": "tiny_cnn"}})
    mean, var = np.float32([0.5, 4000.0]), np.float32([0.01, 250.0 ** 2])
    mixed = models.build_model(cfg, (16, 16, 1), 2, policy="mixed_bfloat16", targets=(mean, var))
    copy = models.as_float32(mixed)
    modelfile.save(copy, str(tmp_path / "m.h5"), {"task": "regression", "num_outputs": 2})
    loaded, _ = modelfile.load(str(tmp_path / "m.h5"))
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype(np.float32)
    body = keras.Model(loaded.input, loaded.get_layer(models.TARGETS_LAYER).input)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               mean + body.predict(x, verbose=0) * np.sqrt(var), rtol=1e-5)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), copy.predict(x, verbose=0), rtol=1e-6)


def test_a_target_no_better_than_its_mean_is_a_warning(caplog):
    scores = {"spacing": {"rmse": 0.01, "mae": 0.008, "r2": 0.977},
              "angle": {"rmse": 0.4, "mae": 0.3, "r2": -3.38},
              "overall": {"rmse": 0.3, "mae": 0.2, "r2": 0.725}}
    with caplog.at_level(logging.INFO, logger="trainer"):
        log_per_target("test", scores)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "angle" in warned[0] and "-3.38" in warned[0], warned
    assert any("test spacing: rmse=0.01 mae=0.008 r2=0.977" in r.getMessage()
               for r in caplog.records)


def _split_rmse(model, path, scale=None):
    with np.load(path) as f:
        x, y = f["x"][..., None], f["y"]
    err = model.predict(x, batch_size=7, verbose=0) - y
    if scale is not None:
        err = err / scale
    return float(np.sqrt((err ** 2).mean()))


@pytest.mark.parametrize("standardize", [False, True])
def test_the_loss_of_a_split_is_its_rmse_over_every_sample(tmp_path, standardize):
    """Batches of 16 over 45 validation and 37 test rows: each ends with an uneven batch."""
    scales, offsets = (2.0, 0.5), (1.0, 0.0)
    paths = []
    for k, (n, seed) in {"train": (96, 1), "val": (45, 2), "test": (37, 3)}.items():
        paths.append(write_npz(tmp_path / "d", f"{k}.npz", *_targets(n, seed, scales, offsets)))
    result, _ = run_job(tmp_path / "out", "name=l", *SMALL, "train.epochs=2",
                        "train.batch_size=16", "train.restore_best=false",
                        "train.metrics=[mse, RootMeanSquaredError]",
                        f"data.standardize_targets={str(standardize).lower()}",
                        f"data.train={paths[0]}", f"data.val={paths[1]}", f"data.test={paths[2]}")
    model, _ = modelfile.load(f"{result.run_dir}/model.h5")  # a fresh load of the saved model
    scale = None
    if standardize:
        scale = np.sqrt(model.get_layer(models.TARGETS_LAYER).input_variance)
    history = json.loads(open(f"{result.run_dir}/checkpoints/state.json").read())["history"]
    for split, path in (("val", paths[1]), ("test", paths[2])):
        figures = result.metrics[split]
        assert figures["loss"] == pytest.approx(_split_rmse(model, path, scale), rel=1e-4)
        rmse = _split_rmse(model, path)  # the metrics are in the targets' units
        assert figures["root_mean_squared_error"] == pytest.approx(rmse, rel=1e-4)
        assert figures["mse"] == pytest.approx(rmse ** 2, rel=1e-4)
    # the last epoch's validation loss (its weights are the model's) is the whole split's too
    assert history[-1]["val_loss"] == pytest.approx(_split_rmse(model, paths[1], scale), rel=1e-4)
    if standardize:  # a resumed run is the uninterrupted one, bit for bit
        args = [*SMALL, "train.epochs=3", "train.batch_size=16", "train.restore_best=false",
                "train.metrics=[mse, RootMeanSquaredError]",
                f"data.train={paths[0]}", f"data.val={paths[1]}", f"data.test={paths[2]}"]
        keras.backend.clear_session()
        run_job(tmp_path / "out", "name=l", *args)
        keras.backend.clear_session()
        run_job(tmp_path / "out", "name=whole", *args)
        assert_same_weights(tmp_path / "out" / "l" / "model.h5",
                            tmp_path / "out" / "whole" / "model.h5")
    # a re-run may not change the setting: the checkpoint's weights learnt the other units
    with pytest.raises(UserError, match=f"data.standardize_targets {str(standardize).lower()} -> "):
        run_job(tmp_path / "out", "name=l", *SMALL, "train.epochs=3", f"data.train={paths[0]}",
                f"data.standardize_targets={str(not standardize).lower()}")

"""The seeds' data as their users have it: every shipped config trains on sample data written in
its seed's layout (real PNG, 16-bit PNG, MP4 written with PyAV, .mat, HDF5, .npy files), and the
layout rules behind them: channel-first arrays, left-out splits, resized images, named outputs."""

import csv
import glob
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, blob_images, error_line, run_cli, run_job, write_npz
from trainer import config, datacheck, job, predict
from trainer.predict import command as predict_command
from trainer.data import load_splits
from trainer.data.pipeline import make_dataset, pipeline_options
from trainer.errors import UserError
from trainer.runtime.platform import Platform

sys.path.insert(0, os.path.join(ROOT, "local"))
import make_sample_data  # noqa: E402

SHIPPED = sorted(glob.glob(os.path.join(ROOT, "local", "configs", "*.yaml")))
# Tiny sample data per job: (samples, image size); enough samples that every class is in each split.
SAMPLES = {"digits": (300, 28), "cubes": (40, 32), "cubes_hdf5": (64, 32)}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Every job's sample data, small, under <dir>/local/data as the configs name it."""
    root = tmp_path_factory.mktemp("samples")
    for name in make_sample_data.JOBS:
        n, size = SAMPLES.get(name, (40, 32))
        make_sample_data.make(name, str(root / "local" / "data"), n, size=size)
    return root


def _train(samples, name: str, *overrides: str):
    cwd = os.getcwd()
    os.chdir(samples)  # the configs' paths are relative, as when run from the repository
    try:
        cfg = config.load(os.path.join(ROOT, "local", "configs", f"{name}.yaml"),
                          ["train.epochs=1", "output.plots=false", *overrides],
                          output_dir=str(samples / "runs"))
        result = job.run(cfg, Platform())
    finally:
        os.chdir(cwd)
    return cfg, result, json.loads(open(os.path.join(result.run_dir, "metrics.json")).read())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.basename(p))
def test_every_shipped_config_trains_on_its_sample_data(samples, path):
    name = os.path.splitext(os.path.basename(path))[0]
    cfg, result, metrics = _train(samples, name, f"output.report={name in ('shapes_folder',)}")
    assert metrics["training"]["epochs_trained"] == 1
    # ROC and PR areas are null where the split holds one class only; the rest is finite
    assert metrics["test"] and all(np.isfinite(v) for k, v in metrics["test"].items()
                                   if not (k.endswith("_auc") and v is None))
    check = CHECKS.get(name)
    if check:
        check(samples, cfg, result, metrics)


def _hexagonal_csv(samples, cfg, result, metrics):
    """Seed 000: a CSV of .npy files with two float targets, which keep their names."""
    assert metrics["data"]["target_names"] == ["spacing", "angle"]
    scores = metrics["per_target"]
    assert scores["split"] == "test" and set(scores) == {"split", "spacing", "angle", "overall"}
    for target in ("spacing", "angle", "overall"):
        assert set(scores[target]) == {"rmse", "mae", "r2"}
    # the overall RMSE is that of all errors together: between the two targets'
    low, high = sorted(scores[t]["rmse"] for t in ("spacing", "angle"))
    assert low <= scores["overall"]["rmse"] <= high
    out = samples / "pred.csv"
    image = samples / "local" / "data" / "hexagonal_csv" / "images" / "lattice_00000.npy"
    predict_command.run(result.run_dir, [str(image)], str(out), batch_size=4)
    assert next(csv.reader(open(out))) == ["input", "spacing", "angle"]


def _raccoon_hdf5(samples, cfg, result, metrics):
    """Seed 002: channel-first cubes (N, 1, H, W) in HDF5 with row ranges train a (H, W, 1)
    model, never one of 32 "channels" of height 1."""
    data = metrics["data"]
    assert data["input_shape"] == [32, 32, 1]
    assert data["layout"].startswith("channels first, samples (1, 32, 32)")
    assert data["test"]["samples"] == 24  # rows [40, 64)
    assert data["train"]["samples"] + data["val"]["samples"] == 40
    assert data["target_names"] == ["amplitude"] and "amplitude" in metrics["per_target"]
    import h5py  # new cubes to predict, as PyTorch holds them: (N, 1, H, W)

    with h5py.File(samples / "local" / "data" / "cubes_hdf5" / "cubes.h5") as f:
        cubes = f["x"][:3]
    np.save(samples / "new_cubes.npy", cubes)
    saved = predict.load(result.run_dir)
    rows = list(predict.predict(saved, [str(samples / "new_cubes.npy")]))
    expected = saved.model.predict(np.moveaxis(cubes, 1, -1), verbose=0)[:, 0]
    assert saved.columns == ["input", "amplitude"]
    np.testing.assert_allclose([r.values[0] for r in rows], expected, rtol=1e-5, atol=1e-6)


def _contact_video(samples, cfg, result, metrics):
    """Seed 001: MP4 videos and a .mat vector, converted; the 0/1 labels are named."""
    assert metrics["confusion_matrix"]["labels"] == ["no_touch", "touch"]
    assert metrics["data"]["split_method"] == "group"
    frame = sorted(glob.glob(str(samples / "local/data/contact_folders/touch/*.png")))[0]
    rows = list(predict.predict(predict.load(result.run_dir), [frame]))
    assert rows[0].values[0] in ("no_touch", "touch")


def _contact_folders(samples, cfg, result, metrics):
    """Seed 001's class folders of 16-bit PNG."""
    assert metrics["confusion_matrix"]["labels"] == ["no_touch", "touch"]
    assert metrics["data"]["input_shape"] == [32, 32, 1]


def _shapes_folder(samples, cfg, result, metrics):
    """Seed 004: 70% train / 30% test and no validation split; other sizes resized, and said."""
    data = metrics["data"]
    assert "val" not in metrics and "val" not in data and data["absent_splits"] == ["val"]
    assert cfg.train.monitor == "loss"
    total = data["train"]["samples"] + data["test"]["samples"]
    assert data["test"]["samples"] == round(0.3 * total)
    sizes = [Image.open(f).size for f in glob.glob(str(samples / "local/data/shapes_folder/*/*.png"))]
    others = [s for s in sizes if s != (32, 32)]  # image_size is [32, 32]
    assert others and data["resized"] == {"to": "32x32", "count": len(others), "of": len(sizes),
                                          "from": {"40x40": len(others)}}
    html = open(os.path.join(result.run_dir, "report.html")).read()
    assert "no validation split (data.validation_split: 0)" in html
    assert "validation" not in html.split("<h2>Final metrics</h2>")[1].split("</table>")[0]


CHECKS = {"hexagonal_csv": _hexagonal_csv, "raccoon_hdf5": _raccoon_hdf5,
          "contact_video": _contact_video, "contact_folders": _contact_folders,
          "shapes_folder": _shapes_folder}


# ----------------------------------------------------------------------------------------------
# Channel-first arrays: read as (H, W, C) whichever way the rows are read.


def _channel_first(tmp_path, fmt: str, channels: int = 3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, channels, 8, 12)).astype(np.float32)  # (N, C, H, W), as PyTorch
    y = np.arange(24) % 2
    if fmt == "npz":
        write_npz(tmp_path / "d", "a.npz", x, y)
        train = str(tmp_path / "d" / "a.npz")
    else:  # npy: raw rows copied straight into the pipeline's buffer
        os.makedirs(tmp_path / "d")
        np.save(tmp_path / "d" / "x0.npy", x)
        np.save(tmp_path / "d" / "y0.npy", y)
        train = str(tmp_path / "d" / "x0.npy")
    return x, y, train


@pytest.mark.parametrize("fmt", ["npz", "npy"])
@pytest.mark.parametrize("channels", ["auto", "first"])
def test_channel_first_arrays_reach_the_model_channel_last(tmp_path, fmt, channels):
    x, y, train = _channel_first(tmp_path, fmt)
    cfg = config.load(None, [f"data.format={fmt}", f"data.train={train}", f"data.channels={channels}",
                             "data.validation_split=0", "data.test_split=0.25"])
    splits = load_splits(cfg)
    assert splits.input_shape == (8, 12, 3)  # not 3 rows of 8 "channels"
    assert splits.layout == "channels first, samples (3, 8, 12) read as (H, W, C)"
    view = splits.train.view
    expected = np.moveaxis(x[view.rows], 1, -1)
    np.testing.assert_array_equal(view.array(), expected)  # View.read
    opts = pipeline_options(cfg.data, cfg.train.seed, 5, shuffle=False)
    batches = np.concatenate([b[0].numpy() for b in make_dataset(view, splits.train.y, opts)])
    np.testing.assert_array_equal(batches, expected)  # the pipeline, per batch in TensorFlow


def test_channels_last_is_taken_as_given(tmp_path):
    x, y, train = _channel_first(tmp_path, "npz", channels=1)
    cfg = config.load(None, ["data.format=npz", f"data.train={train}", "data.channels=last"])
    assert load_splits(cfg).input_shape == (1, 8, 12)


def test_an_ambiguous_layout_asks_for_the_key_and_writes_nothing(tmp_path):
    write_npz(tmp_path / "d", "a.npz", np.zeros((20, 8, 8, 8), np.float32), np.arange(20) % 2)
    expected = (f"cannot tell the channel axis of samples of shape (8, 8, 8), {tmp_path}/d/a.npz, "
                "expected data.channels: last (N, H, W, C) or data.channels: first (N, C, H, W) "
                "in the config")
    with pytest.raises(UserError) as caught:  # in-process: the CLI makes any UserError its line
        run_job(tmp_path / "runs", "data.format=npz", f"data.train={tmp_path}/d/a.npz", "name=cube")
    assert str(caught.value) == expected
    assert not (tmp_path / "runs" / "cube").exists()
    # and the data check, which a user runs first, stops the same way, as one line and exit 2
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={tmp_path}/d/a.npz",
                   "--out", str(tmp_path / "check"), module="trainer.datacheck")
    assert proc.returncode == 2 and error_line(proc.stderr) == f"error: {expected}"
    assert not (tmp_path / "check").exists()


# ----------------------------------------------------------------------------------------------
# Labels and names.


def test_two_d_float_labels_suggest_regression(tmp_path):
    x, _, target = blob_images(20, seed=1)
    write_npz(tmp_path / "d", "a.npz", x, target)  # (N, 2) floats, task left at classification
    cfg = config.load(None, ["data.format=npz", f"data.train={tmp_path}/d/a.npz"])
    with pytest.raises(UserError, match=r"labels of shape \(\d+, 2\) are 2-D but not one-hot, .* "
                       r"\(or task: regression, for 2 targets per sample\)$"):
        load_splits(cfg)


@pytest.mark.parametrize("key, names, task, message", [
    ("class_names", "[no_touch, touch, maybe]", "classification",
     r"3 names in data.class_names \(no_touch, touch, maybe\), .*expected 2, one per class \(0, 1\)"),
    ("target_names", "[spacing]", "regression",
     r"1 names in data.target_names \(spacing\), .*expected 2, one per target \(target_0, target_1\)"),
])
def test_names_must_match_the_outputs(tmp_path, key, names, task, message):
    x, label, target = blob_images(20, seed=1)
    write_npz(tmp_path / "d", "a.npz", x, label if task == "classification" else target)
    cfg = config.load(None, ["data.format=npz", f"data.train={tmp_path}/d/a.npz", f"task={task}",
                             f"data.{key}={names}", "train.metrics=null"])
    with pytest.raises(UserError, match=message):
        load_splits(cfg)


def test_without_a_test_split_the_figures_are_the_validation_splits(tmp_path, blob_npz):
    result, cfg = run_job(tmp_path / "runs", "data.format=npz", f"data.train={blob_npz}",
                          "data.test_split=0", "model.name=tiny_cnn", "train.epochs=1",
                          "data.class_names=[left, right]", "output.plots=false")
    metrics = json.loads(open(os.path.join(result.run_dir, "metrics.json")).read())
    assert "test" not in metrics and metrics["data"]["absent_splits"] == ["test"]
    assert metrics["confusion_matrix"]["split"] == "val"
    assert metrics["confusion_matrix"]["labels"] == ["left", "right"]
    html = open(os.path.join(result.run_dir, "report.html")).read()
    assert "no test split (data.test_split: 0)" in html and "Confusion matrix (validation set)" in html


# ----------------------------------------------------------------------------------------------
# datacheck says what it chose.


def test_datacheck_prints_the_layout_the_resizes_and_the_left_out_split(samples):
    cwd = os.getcwd()
    os.chdir(samples)
    try:
        hdf5 = datacheck.check(config.load(os.path.join(ROOT, "local/configs/raccoon_hdf5.yaml")),
                               str(samples / "check"))
        folder = datacheck.check(config.load(os.path.join(ROOT, "local/configs/shapes_folder.yaml")),
                                 str(samples / "check"))
        named = datacheck.check(config.load(os.path.join(ROOT, "local/configs/hexagonal_csv.yaml")),
                                str(samples / "check"))
    finally:
        os.chdir(cwd)
    assert "layout: channels first, samples (1, 32, 32) read as (H, W, C)" in hdf5
    assert "layout: channels last, samples (32, 32, 3)" in folder
    assert any(line.startswith("no validation split (data.validation_split: 0)") for line in folder)
    resized = [line for line in folder if "image files were resized to 32x32" in line]
    assert len(resized) == 1 and resized[0].endswith("from 40x40 (7)")
    assert not any(line.startswith("val:") for line in folder)
    assert any(line.startswith("  targets: spacing ") and ", angle " in line for line in named)

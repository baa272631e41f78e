"""The seeds' data as their users have it: every shipped config trains on sample data written in
its seed's layout (real PNG, 16-bit PNG, MP4 written with PyAV, .mat, HDF5, .npy files), and the
layout rules behind them: channel-first arrays, left-out splits, resized images, named outputs."""

import csv
import glob
import json
import os
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, blob_images, error_line, run_cli, run_job, write_npz
from trainer import config, datacheck, job, predict
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
    assert metrics["test"] and all(np.isfinite(v) for v in metrics["test"].values())
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
    predict.run(result.run_dir, [str(image)], str(out), batch_size=4)
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


def _contact_video(samples, cfg, result, metrics):
    """Seed 001: MP4 videos and a .mat vector, converted; the 0/1 labels are named."""
    assert metrics["confusion_matrix"]["labels"] == ["no_touch", "touch"]
    assert metrics["data"]["split_method"] == "group"
    frame = sorted(glob.glob(str(samples / "local/data/contact_folders/touch/*.png")))[0]
    rows = list(predict.predict(predict.load(result.run_dir), [frame]))
    assert rows[0][1] in ("no_touch", "touch")


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

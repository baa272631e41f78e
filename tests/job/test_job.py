"""The job end to end: demo accuracy, regression quality, artefacts, resume, repeatability."""

import csv
import json
import os

import numpy as np
import pytest

from trainer import config
from trainer.outputs import modelfile
from trainer.data import demo
from trainer.training.class_weights import class_weights

from conftest import blob_images, run_job, write_npz


def test_demo_reaches_95_percent_and_writes_every_artefact(tmp_path):
    result, cfg = run_job(tmp_path)
    run = tmp_path / "demo"
    assert result.metrics["test"]["accuracy"] >= 0.95
    for rel in ("model.h5", "config.yaml", "history.csv", "metrics.json", "plots/history.png",
                "plots/confusion_matrix.png", "checkpoints/state.json"):
        assert (run / rel).is_file(), rel
    assert any((run / "tensorboard" / "train").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    # Keras's figures, then the probabilities' (three classes: macro areas, calibration error)
    for split in ("val", "test"):
        assert set(metrics[split]) == {"loss", "accuracy", "roc_auc", "pr_auc", "ece"}, split
        assert set(metrics["per_class_auc"][split]) == {"circle", "square", "triangle"}
    assert metrics["confusion_matrix"]["labels"] == ["circle", "square", "triangle"]
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == metrics["data"]["test"]["samples"]
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    # the saved model needs nothing else: raw uint8 images in, class names from its metadata
    model, meta = modelfile.load(str(run / "model.h5"))
    x, y = demo.generate(20, (32, 32), seed=123)
    names = np.array(meta["class_names"])[model.predict(x.astype(np.float32), verbose=0).argmax(1)]
    assert (names == y).mean() >= 0.9
    assert "standardize" in [layer.name for layer in model.layers]
    assert "name: demo" in (run / "config.yaml").read_text()
    # config.yaml holds the values the run used, and loads back as the same config
    written = config.load(str(run / "config.yaml"))
    assert (written.train.loss, written.train.metrics, written.data.image_size) == (
        "sparse_categorical_crossentropy", ["accuracy"], [32, 32])
    assert written == cfg


def test_regression_beats_predicting_the_mean(tmp_path):
    x, _, target = blob_images(800, size=24, seed=5)
    write_npz(tmp_path / "d", "reg.npz", x, target)
    result, _ = run_job(tmp_path / "out", "name=reg", "task=regression", "data.format=npz",
                        f"data.train={tmp_path / 'd' / 'reg.npz'}", "model.name=hexagonal_cnn",
                        "model.dropout=0.0", "train.epochs=15", "train.batch_size=32")
    test_rmse = float(np.sqrt(result.metrics["test"]["mse"]))  # in the targets' units
    # RMSE of always predicting the mean target is the targets' standard deviation
    baseline = float(np.sqrt(((target - target.mean(axis=0)) ** 2).mean()))
    assert test_rmse < 0.5 * baseline, (test_rmse, baseline)


def _weights(path):
    model, _ = modelfile.load(path)
    return [w.copy() for w in model.get_weights()]


def test_resume_continues_from_the_last_checkpoint(tmp_path, blob_npz):
    common = ["name=r", "data.format=npz", f"data.train={blob_npz}", "model.name=tiny_cnn",
              "train.early_stopping_patience=0", "train.restore_best=false"]
    first, _ = run_job(tmp_path, *common, "train.epochs=2")
    rows_before = list(csv.DictReader(open(tmp_path / "r" / "history.csv")))
    second, _ = run_job(tmp_path, *common, "train.epochs=4")
    rows = list(csv.DictReader(open(tmp_path / "r" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == rows_before  # the first two epochs were not trained again
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["training"]["resumed_from_epoch"] == 2
    # training continued from trained weights: epoch 3 starts near where epoch 2 ended,
    # far below the untrained loss of epoch 1
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])
    state = json.loads((tmp_path / "r" / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 4 and state["last"] == "epoch-0004"
    files = sorted(os.listdir(tmp_path / "r" / "checkpoints"))
    assert not any(f.startswith("epoch-0002") for f in files), files  # old checkpoints pruned
    # a third run with the same epochs trains nothing and leaves the weights as they were
    before = _weights(str(tmp_path / "r" / "model.h5"))
    run_job(tmp_path, *common, "train.epochs=4")
    after = _weights(str(tmp_path / "r" / "model.h5"))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_same_seed_repeats_exactly_on_the_cpu(tmp_path, blob_npz):
    common = ["data.format=npz", f"data.train={blob_npz}", "model.name=shapes_cnn",
              "train.epochs=2", "train.seed=7"]
    run_job(tmp_path, "name=a", *common)
    run_job(tmp_path, "name=b", *common)
    run_job(tmp_path, "name=c", *common[:-1], "train.seed=8")
    a, b, c = (_weights(str(tmp_path / n / "model.h5")) for n in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_balanced_class_weights():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, 2)
    assert w[1] == pytest.approx(9 * w[0]) and w[0] * 90 + w[1] * 10 == pytest.approx(100)


def test_imbalanced_run_with_class_weights_and_string_labels(tmp_path, caplog):
    x, label, _ = blob_images(300, seed=11)
    keep = np.concatenate([np.where(label == 0)[0], np.where(label == 1)[0][:20]])
    names = np.where(label[keep] == 1, "touch", "no_touch")
    write_npz(tmp_path / "d", "s.npz", x[keep], names)
    common = ["data.format=npz", f"data.train={tmp_path / 'd' / 's.npz'}", "model.name=tiny_cnn",
              "train.epochs=3", "data.test_split=0.4", "output.plots=false", "output.report=false"]
    caplog.set_level("INFO", logger="trainer")
    weighted, _ = run_job(tmp_path / "out", "name=w", "train.class_weight=balanced", *common)
    _, meta = modelfile.load(weighted.outputs["model"])
    assert meta["class_names"] == ["no_touch", "touch"]
    # the weights are the training split's inverse class frequencies
    counts = json.loads(open(weighted.outputs["metrics"]).read())["data"]["train"]["per_class"]
    y = np.repeat([0, 1], [counts["no_touch"], counts["touch"]])
    expect = {name: round(w, 3) for name, w in zip(meta["class_names"], class_weights(y, 2).values())}
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("class weights")]
    assert logged == [f"class weights: {expect}"] and expect["touch"] > 4 * expect["no_touch"]
    # and training uses them: the same run without them ends as a model that gives the rare
    # class less probability, on its own images and on all
    plain, _ = run_job(tmp_path / "out", "name=p", "train.class_weight=none", *common)
    images = x[keep][..., np.newaxis]
    rare = label[keep] == 1
    found = {}
    for name, result in (("weighted", weighted), ("plain", plain)):
        model, _ = modelfile.load(result.outputs["model"])
        p_rare = model.predict(images, verbose=0)[:, 1]
        found[name] = (float(p_rare[rare].mean()), float(p_rare.mean()))
    assert found["weighted"][0] > found["plain"][0] and found["weighted"][1] > found["plain"][1], found


def test_npy_pairs_and_explicit_val_test(tmp_path):
    x, label, _ = blob_images(200, seed=2)
    parts = {"train/x0": slice(0, 70), "train/x1": slice(70, 140), "val/x": slice(140, 170),
             "test/x": slice(170, 200)}
    for name, sl in parts.items():
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        np.save(tmp_path / f"{name}.npy", x[sl])
        np.save(tmp_path / f"{name.replace('/x', '/y')}.npy", label[sl])
    result, _ = run_job(tmp_path / "out", "name=n", "data.format=npy",
                        f"data.train={tmp_path}/train/*.npy", f"data.val={tmp_path}/val/x.npy",
                        f"data.test={tmp_path}/test", "model.name=tiny_cnn", "train.epochs=1")
    data = json.loads(open(result.outputs["metrics"]).read())["data"]
    assert (data["train"]["samples"], data["val"]["samples"], data["test"]["samples"]) == (140, 30, 30)
    assert data["split_method"] == "given"
    # the image size the first image decided is written down, so a re-run resizes alike
    written = config.load(result.outputs["config"])
    assert written.data.image_size == [16, 16] and written.train.metrics == ["accuracy"]


def test_splits_are_reproducible_and_disjoint():
    from trainer.data import load_splits

    cfg = config.from_dict({"data": {"samples_per_class": 50}})
    a, b = load_splits(cfg), load_splits(cfg)
    assert np.array_equal(a.test.x, b.test.x) and np.array_equal(a.val.y, b.val.y)
    assert (len(a.train), len(a.val), len(a.test)) == (105, 30, 15)
    flat = lambda s: {row.tobytes() for row in s.x.reshape(len(s), -1)}  # noqa: E731
    assert not flat(a.train) & flat(a.test) and not flat(a.val) & flat(a.test)

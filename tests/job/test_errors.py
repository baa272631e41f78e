"""Each kind of bad input ends with exit status 2 and one `error: <what>, <where>, <expected>` line."""

import inspect
import os
import re

import numpy as np
import pytest

from trainer import task

from conftest import blob_images, error_line, run_cli, write_npz


def _run(capsys, tmp_path, *overrides, config=None):
    code = task.train(config, ["name=bad", "model.name=tiny_cnn", "train.epochs=1", *overrides],
                      str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 2, captured
    line = error_line(captured.err)
    assert not (tmp_path / "out" / "bad" / "model.h5").exists()
    return line


def _shard(tmp_path, name, n=40, size=16, y_len=None):
    x, label, _ = blob_images(n, size=size)
    return write_npz(tmp_path / "d", name, x, label[: y_len if y_len is not None else n])


def test_missing_path(capsys, tmp_path):
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={tmp_path}/nothing/*.npz")
    assert f"no files found, data.train={tmp_path}/nothing/*.npz, expected" in line


def test_empty_data(capsys, tmp_path):
    path = write_npz(tmp_path / "d", "empty.npz", np.zeros((0, 16, 16)), np.zeros((0,)))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert "no samples" in line and "empty.npz" in line


def test_x_y_length_mismatch(capsys, tmp_path):
    path = _shard(tmp_path, "short_y.npz", n=40, y_len=39)
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert "x has 40 samples but y has 39" in line and "short_y.npz" in line


def test_inconsistent_image_shapes(capsys, tmp_path):
    _shard(tmp_path, "a.npz", size=16)
    _shard(tmp_path, "b.npz", size=20)
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={tmp_path}/d/*.npz")
    assert "b.npz" in line and "(20, 20)" in line and "expected (16, 16)" in line


def test_too_few_samples_for_the_splits(capsys, tmp_path):
    path = _shard(tmp_path, "tiny.npz", n=4)
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={path}")
    assert "4 samples are too few" in line and "tiny.npz" in line


def test_unknown_model_name(capsys, tmp_path):
    line = _run(capsys, tmp_path, "model.name=resnet9000")
    assert "unknown model 'resnet9000', model.name" in line


@pytest.mark.parametrize("overrides, key", [
    (["model.name=shape_cnn"], "model.name"),  # one letter off: the nearest is suggested too
    (["model.name=resnet9000"], "model.name"),
    (["model.params={widht: 8}"], "model.params.widht"),
    (["model.name=shapes_cnn", "model.layer_param=8"], "model.layer_param"),
])
@pytest.mark.parametrize("data", ["absent", "unreadable"])
def test_the_model_is_checked_before_any_data_is_read(capsys, tmp_path, overrides, key, data):
    """A misspelt model name or parameter ends the run with one line naming the key and every
    name it could have been, before the data is touched: missing or unreadable, the data is
    never reached, and no run folder is left."""
    from trainer import models

    train = tmp_path / "d" / "x.npz"
    if data == "unreadable":
        train.parent.mkdir()
        train.write_bytes(b"not an npz file")
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={train}", *overrides)
    assert f", {key}, expected one of" in line, line
    name = next((o.split("=")[1] for o in overrides if o.startswith("model.name=")), "tiny_cnn")
    known = (list(models.REGISTRY) if key == "model.name" else
             [p for p in inspect.signature(models.REGISTRY[name]).parameters
              if p not in ("input_shape", "num_outputs")])
    assert known and all(k in line for k in known), line
    assert not (tmp_path / "out" / "bad").exists()


def test_missing_npy_partner(capsys, tmp_path):
    np.save(tmp_path / "x0.npy", np.zeros((10, 8, 8)))
    line = _run(capsys, tmp_path, "data.format=npy", f"data.train={tmp_path}/x*.npy")
    assert "y0.npy is missing" in line


def test_pickled_npy_is_refused(capsys, tmp_path):
    np.save(tmp_path / "x0.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y0.npy", np.zeros(10))
    line = _run(capsys, tmp_path, "data.format=npy", f"data.train={tmp_path}/x*.npy")
    assert "x0.npy" in line and "pickled objects are refused" in line


def test_diverging_loss_is_a_clear_error(capsys, tmp_path):
    x, _, target = blob_images(60)
    path = write_npz(tmp_path / "d", "big.npz", x * 1e4, target * 1e4)
    line = _run(capsys, tmp_path, "task=regression", "data.format=npz", f"data.train={path}",
                "data.standardize=false", "train.learning_rate=1e9", "train.epochs=3")
    assert re.search(r"loss became (nan|inf) in epoch 1", line) and "learning_rate" in line
    # the diverged weights were never checkpointed
    assert not (tmp_path / "out" / "bad" / "checkpoints" / "state.json").exists()


def test_label_unseen_in_training(capsys, tmp_path):
    x, label, _ = blob_images(60)
    write_npz(tmp_path / "d", "train.npz", x, label)
    write_npz(tmp_path / "t", "test.npz", x[:10], np.full(10, 7))
    line = _run(capsys, tmp_path, "data.format=npz", f"data.train={tmp_path}/d/train.npz",
                f"data.test={tmp_path}/t/test.npz")
    assert "label '7' does not occur in the training data" in line and "test.npz" in line


def test_real_command_line_exit_status_and_message(tmp_path):
    """The real process: exit status 2, one error line, no traceback, for config and data errors."""
    proc = run_cli("--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert error_line(proc.stderr) == f"error: file not found, {tmp_path / 'missing.yaml'}, expected an existing file"
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\ntrain:\n  epoch: 3\n")
    proc = run_cli("--config", str(bad))
    assert proc.returncode == 2
    assert error_line(proc.stderr) == (f"error: unknown key 'train.epoch', {bad}, "
                                        "did you mean 'train.epochs'?")
    path = _shard(tmp_path, "mismatch.npz", n=20, y_len=19)
    proc = run_cli("--set", "data.format=npz", "--set", f"data.train={path}",
                   "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2 and "mismatch.npz" in error_line(proc.stderr)
    assert not os.path.exists(tmp_path / "o")

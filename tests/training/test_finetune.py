"""Fine-tuning: `model.init_from` takes an earlier run's layers where they fit, the schedule
freezes them (or a backbone) for `train.freeze_epochs` and then unfreezes them, and a run
stopped on either side of the unfreeze resumes bit for bit on the CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trainer import backbones, config, models
from trainer.errors import UserError
from trainer.training import finetune
from trainer.training.preemption import RESTART_EXIT_CODE

from conftest import ROOT, blob_images, error_line, run_cli, write_npz
from preemption_runs import backup_position, weights

FAST = ["model.name=tiny_cnn", "train.batch_size=8", "train.steps_per_execution=1",
        "train.early_stopping_patience=0", "output.plots=false", "output.report=false",
        "data.format=npz"]


def _data(folder, classes, seed=0, size=16, n=64):
    x, _, target = blob_images(n, size=size, seed=seed)
    label = np.minimum((target[:, 0] * classes).astype(np.int64), classes - 1)
    return write_npz(folder, f"d{classes}-{size}.npz", x[..., None], label)


def _run(out, name, data, *extra):
    sets = [a for o in [f"name={name}", f"data.train={data}", *FAST, *extra] for a in ("--set", o)]
    proc = run_cli("--output_dir", str(out), *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / name, proc.stdout + proc.stderr


def _layer(weights, kind):
    return {k: v for k, v in weights.items() if f"/{kind}" in k and "/kernel" in k}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A finished two-class run: the model the new runs start from."""
    root = tmp_path_factory.mktemp("earlier")
    return _run(root, "a", _data(root, 2), "train.epochs=1")[0]


def test_init_from_takes_the_fitting_layers_and_a_new_head_learns_the_new_classes(
        earlier, tmp_path):
    run, said = _run(tmp_path, "b", _data(tmp_path, 3, seed=1), f"model.init_from={earlier}",
                     "train.epochs=1", "train.freeze_epochs=1", "output.report=true")
    got = json.loads((run / "metrics.json").read_text())["training"]["init_from"]
    assert got["source"] == str(earlier) and got["standardization"] == "the new data's"
    assert len(got["taken"]) == 1 and len(got["new"]) == 1  # the conv; the 3-class dense head
    before, after = weights(earlier / "model.h5"), weights(run / "model.h5")
    # Frozen for its one epoch: the taken convolution is the earlier run's, bit for bit.
    (old_conv,), (new_conv,) = _layer(before, "conv2d").values(), _layer(after, "conv2d").values()
    np.testing.assert_array_equal(old_conv, new_conv)
    (head,) = _layer(after, "dense").values()
    assert head.shape[-1] == 3
    said_line = f"init_from {earlier}: 1 layers took its weights ({got['taken'][0]}); 1 new"
    assert said_line in said
    assert "started from" in (run / "report.html").read_text()  # the report says it too


def test_a_best_epoch_from_the_frozen_phase_is_restored_after_the_unfreeze(earlier, tmp_path):
    # The fine-tuning phase's fresh optimizer holds its slots in another order than the frozen
    # phase's: the best epoch's weights must read back without them. A huge fine-tuning rate
    # wrecks epoch 2, so epoch 1, still frozen, is the best.
    run, _ = _run(tmp_path, "b", _data(tmp_path, 3, seed=1), f"model.init_from={earlier}",
                  "train.epochs=2", "train.freeze_epochs=1", "train.finetune_learning_rate=50")
    assert json.loads((run / "metrics.json").read_text())["training"]["best_epoch"] == 1
    (old_conv,), (new_conv,) = (_layer(weights(r / "model.h5"), "conv2d").values()
                                for r in (earlier, run))
    np.testing.assert_array_equal(old_conv, new_conv)  # epoch 1's: frozen, the earlier run's


def test_init_from_errors_are_one_line(earlier, tmp_path):
    cases = [
        ([f"model.init_from={tmp_path}/nothing"], "no model file at"),
        ([f"model.init_from={earlier}", f"data.train={_data(tmp_path, 2, size=20)}"],
         "expected the new data's shape"),
        ([f"model.init_from={earlier}", "model.name=blueprint_cnn",
          f"data.train={_data(tmp_path, 2, size=20)}"], None),
    ]
    for extra, words in cases:
        sets = [a for o in [f"data.train={_data(tmp_path, 2)}", *FAST, "train.epochs=1", *extra]
                for a in ("--set", o)]
        proc = run_cli("--output_dir", str(tmp_path / "runs"), *sets)
        line = error_line(proc.stderr)
        assert proc.returncode == 2 and "model.init_from=" in line
        assert words is None or words in line, line
    # A model of another architecture shares no layer: one line too (checked above with
    # 20 px data, where the shapes differ first); at the same shape nothing fits.
    sets = [a for o in [f"data.train={_data(tmp_path, 2)}", *FAST, "train.epochs=1",
                        f"model.init_from={earlier}", "model.name=hexagonal_cnn"]
            for a in ("--set", o)]
    proc = run_cli("--output_dir", str(tmp_path / "runs"), *sets)
    assert proc.returncode == 2 and "no layer of the earlier model fits" in error_line(proc.stderr)


def _interrupt(out, name, sig, when, extra):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "preempted_job.py"), sig, str(when),
         str(out), f"name={name}", *FAST, *extra],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=300)


def test_a_run_stopped_on_either_side_of_the_unfreeze_resumes_bit_for_bit(earlier, tmp_path):
    data = _data(tmp_path, 3, seed=1)
    extra = [f"data.train={data}", f"model.init_from={earlier}", "train.epochs=3",
             "train.freeze_epochs=1", "train.lr_schedule=cosine"]
    whole, _ = _run(tmp_path, "whole", data, *extra[1:])
    reference = weights(whole / "model.h5")
    # SIGTERM inside the frozen epoch (backup mid-epoch 1); SIGKILL inside epoch 2 (resumes from
    # the last frozen epoch's checkpoint, the unfreeze itself); SIGTERM inside epoch 2 (a backup
    # with the fine-tuning optimizer).
    for name, sig, when, epoch in (("frozen", "SIGTERM", 2, 1), ("boundary", "SIGKILL", 8, 2),
                                   ("tuned", "SIGTERM", 9, 2)):
        cut = _interrupt(tmp_path, name, sig, when, extra)
        assert cut.returncode in (RESTART_EXIT_CODE, -9), (name, cut.stderr[-2000:])
        if sig == "SIGTERM":  # a backup inside the frozen epoch, or inside the first tuned one
            assert backup_position(cut.stdout)[0] == epoch, cut.stdout[-2000:]
        resumed, said = _run(tmp_path, name, data, *extra[1:])
        if sig == "SIGKILL":  # from the last frozen epoch's checkpoint: the unfreeze itself
            assert "from epoch 1 (of 3)" in said, said[-2000:]
        assert f"init_from {earlier}: 1 layers" in said  # recalled from the checkpoint state
        got = weights(resumed / "model.h5")
        assert got.keys() == reference.keys()
        differ = [k for k in got if not np.array_equal(got[k], reference[k])]
        assert not differ, (name, differ)


def test_a_frozen_backbone_keeps_its_weights_and_trainable_from_unfreezes_the_top(tmp_path):
    small = "mobilenet_v3_small"
    file = str(tmp_path / "w.h5")
    backbones.construct(small, (32, 32)).save_weights(file)
    cfg = config.load(None, [f"model.name={small}", f"model.weights={file}",
                             "train.freeze_epochs=1", "model.trainable_from=expanded_conv_10/expand"])
    model = models.build_model(cfg, (16, 16, 1), 2)
    finetune.set_phase(model, cfg, frozen=True)
    assert [w.name for w in model.trainable_weights] == ["head/kernel:0", "head/bias:0"]
    finetune.set_phase(model, cfg, frozen=False)
    part = backbones.backbone_layers(model)
    names = [layer.name for layer in part]
    top = names.index("expanded_conv_10/expand")
    assert all(not layer.trainable for layer in part[:top])
    assert all(layer.trainable for layer in part[top:])
    tuned = {id(w) for layer in part[top:] for w in layer.trainable_weights}
    head = model.get_layer(small).get_layer(backbones.HEAD)
    assert {id(w) for w in model.trainable_weights} == tuned | {id(w) for w in head.weights}
    wrong = config.load(None, [f"model.name={small}", "model.trainable_from=expanded_conv_10/expnd"])
    with pytest.raises(UserError, match="did you mean 'expanded_conv_10/expand'"):
        finetune.set_phase(model, wrong, frozen=False)

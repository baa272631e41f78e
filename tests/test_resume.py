"""Resume with early stopping on: a restarted run must stop at the epoch, and keep the weights, of
the run it would have been. Early stopping's best value, wait count and best epoch survive an
epoch-checkpoint restart and a SIGTERM backup restart alike.

The setting makes early stopping fire early: `tiny_cnn` at a high learning rate on two-class
blobs reaches its best `val_loss` in epoch 4, and patience 2 stops it after epoch 6.
"""

import json

import numpy as np
import pytest

from conftest import blob_images, run_cli, run_job, write_npz
from test_preemption import assert_same_weights, backup_position, interrupt
from trainer.callbacks.early_stopping import ResumableEarlyStopping
from trainer.callbacks.pruning import PruneOnEpoch
from trainer.kerasflavor import keras
from trainer.training.preemption import RESTART_EXIT_CODE
from trainer.training.schedule import ResumablePlateau

STOPS_AFTER = 6
FIRING = ["model.name=tiny_cnn", "train.epochs=12", "train.early_stopping_patience=2",
          "train.lr_schedule=constant", "train.steps_per_execution=1",
          "train.learning_rate=0.05", "train.batch_size=32", "data.format=npz",
          "data.augment=[]", "output.plots=false", "output.report=false"]


def _train(out, *overrides):
    """The job in-process, its layer names fresh (the h5 files name the weights by layer)."""
    keras.backend.clear_session()
    run_job(out, *overrides)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    x, label, _ = blob_images(240, seed=3)
    return write_npz(tmp_path_factory.mktemp("blobs"), "a.npz", x, label)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, blobs):
    out = tmp_path_factory.mktemp("whole")
    _train(out, "name=whole", f"data.train={blobs}", *FIRING)
    return out / "whole"


def _state(run):
    return json.loads((run / "checkpoints" / "state.json").read_text())


def _scores(run, validation_only=False):
    """The checkpointed history without its wall-clock columns (or only the validation's)."""
    def kept(key):
        if validation_only:
            return key == "epoch" or key.startswith("val_")
        return key not in ("epoch_time_s", "samples_per_s")
    return [{k: v for k, v in row.items() if kept(k)} for row in _state(run)["history"]]


def test_the_uninterrupted_run_stops_early(uninterrupted):
    state = _state(uninterrupted)
    assert state["stopped_early"] and state["epoch"] == STOPS_AFTER
    assert state["best"]["epoch"] == STOPS_AFTER - 2


def test_an_epoch_checkpoint_restart_stops_where_the_whole_run_did(tmp_path, blobs, uninterrupted):
    common = ["name=r", f"data.train={blobs}", *FIRING]
    _train(tmp_path, *common, "train.epochs=5")  # one epoch without improvement so far
    assert not _state(tmp_path / "r")["stopped_early"]
    _train(tmp_path, *common)
    state = _state(tmp_path / "r")
    assert state["stopped_early"] and state["epoch"] == STOPS_AFTER
    assert _scores(tmp_path / "r") == _scores(uninterrupted)
    assert_same_weights(tmp_path / "r" / "model.h5", uninterrupted / "model.h5")


def test_a_sigterm_backup_restart_stops_where_the_whole_run_did(tmp_path, blobs, uninterrupted):
    overrides = [f"data.train={blobs}", *FIRING]
    steps = 6  # 168 training rows in batches of 32
    cut = interrupt(tmp_path, "t", "SIGTERM", (STOPS_AFTER - 1) * steps + 2, extra=overrides)
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    assert backup_position(cut.stdout) == (STOPS_AFTER, 3, steps)  # mid-epoch 6
    done = run_cli("--output_dir", str(tmp_path), "--set", "name=t",
                   *(arg for o in overrides for arg in ("--set", o)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"from its backup in epoch {STOPS_AFTER}, at batch 4 of {steps}" in done.stdout
    state = _state(tmp_path / "t")
    assert state["stopped_early"] and state["epoch"] == STOPS_AFTER
    # The resumed epoch's training loss averages only the batches after the backup; the
    # validation scores, which early stopping reads, are the whole run's.
    assert _scores(tmp_path / "t", True) == _scores(uninterrupted, True)
    assert_same_weights(tmp_path / "t" / "model.h5", uninterrupted / "model.h5")


def test_early_stopping_replays_the_history_it_resumes_from():
    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.2},
               {"epoch": 3, "val_loss": 0.3}]
    early = ResumableEarlyStopping(monitor="val_loss", patience=2, mode="min")
    early.resume_from(history)
    early.set_model(keras.Sequential([keras.layers.Dense(1)]))
    early.on_train_begin()
    assert (early.best, early.wait, early.best_epoch) == (0.2, 1, 1)
    assert early.stopped_epoch == 0
    early.on_epoch_end(3, {"val_loss": 0.25})  # epoch 4, second without improvement: stop
    assert early.stopped_epoch == 3


def test_the_plateau_schedule_replays_its_counters_and_keeps_the_restored_rate():
    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.6},
               {"epoch": 3, "val_loss": 0.7}, {"epoch": 4, "val_loss": 0.4},
               {"epoch": 5, "val_loss": 0.45}]
    plateau = ResumablePlateau(monitor="val_loss", mode="min", factor=0.2, patience=2)
    plateau.resume_from(history)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.0004), "mse")  # as restored: reduced once, after epoch 3
    plateau.set_model(model)
    plateau.on_train_begin()
    assert (plateau.best, plateau.wait) == (0.4, 1)
    assert float(keras.backend.get_value(model.optimizer.lr)) == pytest.approx(0.0004)
    plateau.on_epoch_end(5, {"val_loss": 0.41})  # epoch 6, second without improvement: reduce
    assert float(keras.backend.get_value(model.optimizer.lr)) == pytest.approx(0.00008)


def test_early_stopping_without_history_starts_fresh():
    early = ResumableEarlyStopping(monitor="val_accuracy", patience=3, mode="max")
    early.on_train_begin()
    assert early.best == -np.inf and early.wait == 0


def test_a_resumed_trial_reports_the_epochs_its_run_trained_before():
    import optuna

    study = optuna.create_study()
    prune = PruneOnEpoch(study.ask(), "val_loss")
    prune.resume_from([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.3}])
    prune.on_train_begin()
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.3}

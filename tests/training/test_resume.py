"""Resume with early stopping on: a restarted run must stop at the epoch, and keep the weights, of
the run it would have been. Early stopping's best value, wait count and best epoch survive an
epoch-checkpoint restart and a SIGTERM backup restart alike.

The setting makes early stopping fire early: `tiny_cnn` at a high learning rate on two-class
blobs reaches its best `val_loss` in epoch 4, and patience 2 stops it after epoch 6.
"""

import html
import json

import numpy as np
import pytest

from conftest import blob_images, run_cli, run_job, write_npz
from preemption_runs import assert_same_weights, backup_position, interrupt
from trainer.callbacks.early_stopping import ResumableEarlyStopping
from trainer.callbacks.pruning import PruneOnEpoch
from trainer.kerasflavor import keras
from trainer.training.preemption import RESTART_EXIT_CODE
from trainer.training.schedule import ResumablePlateau

STOPS_AFTER = 6
FIRING = ["model.name=tiny_cnn", "train.epochs=12", "train.early_stopping_patience=2",
          "train.lr_schedule=constant", "train.steps_per_execution=1",
          "train.learning_rate=0.05", "train.batch_size=32", "data.format=npz",
          "data.augment=[]", "output.plots=false", "output.report=false",
          "data.samples_per_class=160"]  # as preemption_runs.COMMON, which `interrupt` adds


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
        return key not in ("epoch_time_s", "train_samples_per_s", "epoch_samples_per_s")
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


# -- A re-run of the same name continues only the training it started ------------------------

SMALL = ["model.name=tiny_cnn", "train.early_stopping_patience=0", "data.format=npz",
         "output.plots=false"]


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_rerun_that_changes_what_was_trained_is_one_error_line(tmp_path, blobs):
    from conftest import error_line

    common = ["name=m", f"data.train={blobs}", *SMALL, "output.report=false"]
    _train(tmp_path, *common, "train.epochs=1")
    before = _files(tmp_path / "m")
    args = ["--output_dir", str(tmp_path)]
    for item in [*common, "train.epochs=2", "model.name=shapes_cnn", "model.dropout=0.3"]:
        args += ["--set", item]
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr[-3000:]
    line = error_line(done.stderr)
    assert "model.name tiny_cnn -> shapes_cnn" in line and "model.dropout" in line, line
    assert "--set name=" in line and "--output_dir" in line, line
    assert _files(tmp_path / "m") == before  # nothing touched


def test_data_of_another_shape_under_the_same_path_is_refused_before_any_weight(tmp_path):
    from trainer.errors import UserError

    x, label, _ = blob_images(120, seed=3)
    path = write_npz(tmp_path / "d", "a.npz", x, label)
    common = ["name=s", f"data.train={path}", *SMALL, "output.report=false"]
    _train(tmp_path, *common, "train.epochs=1")
    before = _files(tmp_path / "s")
    x, label, _ = blob_images(120, size=20, seed=3)
    write_npz(tmp_path / "d", "a.npz", x, label)
    with pytest.raises(UserError, match=r"input_shape \[16, 16, 1\] -> \[20, 20, 1\]"):
        _train(tmp_path, *common, "train.epochs=2")
    assert _files(tmp_path / "s") == before


def test_safe_changes_are_recorded_and_a_finished_rerun_keeps_its_figures(tmp_path, blobs):
    from trainer import config as config_module
    from trainer.data import load_splits
    from trainer.kerasflavor import tf
    from trainer.storage.rundir import RunDir
    from trainer.training.fit import build_and_restore
    from trainer.training.scaling import plan_scaling

    common = ["name=c", f"data.train={blobs}", *SMALL]
    _train(tmp_path, *common, "train.epochs=2", "train.learning_rate=0.001")
    report = (tmp_path / "c" / "report.html").read_text()
    assert "resumed from epoch" not in report  # a fresh run did not resume
    assert json.loads((tmp_path / "c" / "metrics.json").read_text()
                      )["training"]["resumed_from_epoch"] is None
    _train(tmp_path, *common, "train.epochs=3", "train.learning_rate=0.01")
    line = "from epoch 3: train.learning_rate 0.001 -> 0.01"
    text = (tmp_path / "c" / "config.yaml").read_text()
    assert f"# {line}" in text and "learning_rate: 0.01" in text
    assert "from epoch 3: train.epochs 2 -> 3" in text
    first = json.loads((tmp_path / "c" / "metrics.json").read_text())["training"]
    assert line in first["config_changes"] and first["resumed_from_epoch"] == 2
    assert line in html.unescape((tmp_path / "c" / "report.html").read_text())
    # the saved config still loads as a config
    assert config_module.load(str(tmp_path / "c" / "config.yaml")).train.learning_rate == 0.01

    # re-run when finished, with a rate no epoch will train at: the run's record stands
    _train(tmp_path, *common, "train.epochs=3", "train.learning_rate=0.5")
    again = json.loads((tmp_path / "c" / "metrics.json").read_text())["training"]
    assert again["wall_time_s"] == first["wall_time_s"]
    assert again["resumed_from_epoch"] == first["resumed_from_epoch"] == 2
    assert (tmp_path / "c" / "config.yaml").read_text() == text

    # and a restored optimizer trains at the re-run's rate, not the checkpoint's
    cfg = config_module.load(None, [*common, "train.epochs=4", "train.learning_rate=0.05"],
                             output_dir=str(tmp_path))
    splits = load_splits(cfg)
    strategy = tf.distribute.get_strategy()
    run = RunDir(cfg.output.dir, cfg.name)
    store, resumed, _ = build_and_restore(cfg, splits, run, strategy,
                                          plan_scaling(cfg.train, strategy), (None, None), 1)
    run.cleanup()
    assert resumed and float(store.model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    assert store.pending_changes[-1] == {"key": "train.learning_rate", "from": 0.01, "to": 0.05}


def test_a_checkpoint_without_its_config_that_does_not_fit_is_an_error(tmp_path, blobs):
    """A run recorded before the state held its config: the weights that do not fit are
    refused, not loaded into another shape."""
    from trainer.errors import UserError

    common = ["name=o", f"data.train={blobs}", *SMALL, "output.report=false"]
    _train(tmp_path, *common, "train.epochs=1")
    path = tmp_path / "o" / "checkpoints" / "state.json"
    state = json.loads(path.read_text())
    for key in ("config", "input_shape", "class_names"):
        del state[key]
    path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="its checkpoint does not fit this model"):
        _train(tmp_path, *common, "train.epochs=2", "model.name=shapes_cnn")

"""The search: the space file, pruning of a hopeless trial, and resumption after a real kill."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest

from trainer import config
from trainer.errors import UserError
from trainer.tune import results, space as space_mod, study as study_mod

from conftest import ROOT, blob_images, run_cli, write_npz

FAST = ["model.name=tiny_cnn", "train.early_stopping_patience=0", "output.plots=false",
        "output.report=false"]


def _space(params, **top):
    return space_mod.parse({"params": params, **top}, config.from_dict({}), "s.yaml")


def test_space_kinds_grid_and_defaults():
    space = _space({"train.learning_rate": {"log_uniform": [1e-4, 1e-2]},
                    "model.layer_param": {"uniform": [4, 16]},
                    "model.name": {"choice": ["tiny_cnn", "shapes_cnn"]},
                    "train.batch_size": [16, 32], "model.dropout": {"grid": [0.0, 0.5]}})
    kinds = {p.key: (p.kind, p.integer, p.log) for p in space.params}
    assert kinds["train.learning_rate"] == ("log_uniform", False, True)
    assert kinds["model.layer_param"] == ("uniform", True, False)
    assert kinds["train.batch_size"][0] == "grid"  # a bare list is a grid
    assert space.grid_points() == [
        {"train.batch_size": 16, "model.dropout": 0.0}, {"train.batch_size": 16, "model.dropout": 0.5},
        {"train.batch_size": 32, "model.dropout": 0.0}, {"train.batch_size": 32, "model.dropout": 0.5}]
    assert space.default_trials() == 10 and not space.grid_only
    assert (space.metric, space.direction) == ("val_loss", "minimize")
    grid = _space({"train.batch_size": [16, 32, 64]}, metric="val_accuracy")
    assert grid.default_trials() == 3 and grid.direction == "maximize"


@pytest.mark.parametrize("params, top, message", [
    ({"train.learning_rate": {"loguniform": [1, 2]}}, {}, "unknown kind 'loguniform' for parameter "
     "'train.learning_rate', s.yaml params, did you mean 'log_uniform'?"),
    ({"train.learning_rte": [0.1]}, {}, "unknown key 'train.learning_rte', s.yaml params.train."
     "learning_rte, did you mean 'train.learning_rate'?"),
    ({"train.epochs": [2, 2.5]}, {}, "invalid value 2.5 for 'train.epochs', s.yaml params.train.epochs"),
    ({"model.dropout": {"uniform": [0.5, 0.1]}}, {}, "expected low < high"),
    ({"train.learning_rate": {"log_uniform": [0, 1]}}, {}, "expected low > 0"),
    ({"train.seed": [1]}, {"metric": "accuracy"}, "metric 'accuracy', s.yaml, expected a validation"),
    ({"train.seed": [1]}, {"pruning": {"warmup": 1}}, "unknown key 'pruning.warmup'"),
    ({"name": ["a", "b"]}, {}, "parameter 'name', s.yaml params, expected a training setting"),
])
def test_space_errors_name_the_key(params, top, message):
    with pytest.raises(UserError) as exc:
        _space(params, **top)
    assert message in str(exc.value)


def test_parsing_a_space_loads_no_tensorflow(tmp_path):
    """The space, its direction and its Vertex AI translation are plain data: checking a space
    or printing a cloud job spec must not wait for TensorFlow to load."""
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.learning_rate: {log_uniform: [1.0e-4, 0.01]}\n")
    code = ("import sys; from trainer import config; from trainer.tune import space, vertex; "
            f"s = space.load({str(space)!r}, config.from_dict({{}})); "
            "print(s.direction, sorted(m for m in ('tensorflow', 'tf_keras', 'keras') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["minimize", "[]"]  # the default monitor is val_loss


def test_hopeless_trial_is_pruned(tmp_path):
    x, label, _ = blob_images(400, seed=8)
    path = write_npz(tmp_path / "d", "blobs.npz", x, label)
    base = config.load(None, ["data.format=npz", f"data.train={path}", "train.epochs=3",
                              "train.batch_size=16", *FAST], str(tmp_path))
    space = space_mod.parse({"metric": "val_loss", "pruning": {"startup_trials": 2, "warmup_epochs": 0},
                             "params": {"train.learning_rate": [0.01, 0.003, 1.0e-7]}}, base, "space")
    study_dir = str(tmp_path / "study")
    study = study_mod.search(study_dir, base, space, target=3, parallel=1)
    rows = results.ranked(study, space)
    states = {r["train.learning_rate"]: r["state"] for r in rows}
    assert states == {0.01: "complete", 0.003: "complete", 1e-7: "pruned"}, rows
    pruned = rows[-1]
    # stopped after its first epoch, while the others trained all three
    assert pruned["epochs"] == 1 and [r["epochs"] for r in rows[:2]] == [3, 3]
    assert pruned[space.metric] > max(r[space.metric] for r in rows[:2])
    # a pruned trial is still an ordinary run, with its artefacts
    history = list(csv.DictReader(open(os.path.join(study_dir, pruned["run"], "history.csv"))))
    assert len(history) == 1
    assert os.path.isfile(os.path.join(study_dir, pruned["run"], "model.h5"))
    results.plot(rows, space, str(tmp_path / "objective.png"))
    assert os.path.getsize(tmp_path / "objective.png") > 5000


def test_a_metric_keras_does_not_log_stops_the_search(tmp_path, blob_npz):
    base = config.load(None, ["data.format=npz", f"data.train={blob_npz}", "train.epochs=1",
                              *FAST], str(tmp_path))
    space = space_mod.parse({"metric": "val_acc", "params": {"train.batch_size": [16, 32]}},
                            base, "space")
    with pytest.raises(UserError, match="'val_acc' is not among the logged quantities, space "
                       "metric, expected one of .*val_accuracy"):
        study_mod.search(str(tmp_path / "study"), base, space, target=2, parallel=1)
    study = optuna.load_study(study_name=study_mod.STUDY_NAME,
                              storage=study_mod.storage_url(str(tmp_path / "study")))
    assert [t.state for t in study.trials if t.state != optuna.trial.TrialState.WAITING] == [
        optuna.trial.TrialState.FAIL]  # one trial, not one per grid point


def _wait_for(path, proc, seconds=240):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_search_resumes_after_a_real_kill(tmp_path):
    x, label, _ = blob_images(1500, seed=4)
    path = write_npz(tmp_path / "d", "blobs.npz", x, label)
    space = tmp_path / "space.yaml"
    space.write_text("pruning: false\nparams:\n  train.learning_rate: [0.01, 0.003, 0.001]\n")
    args = ["--space", str(space), "--output_dir", str(tmp_path / "out"),
            *[f"--set={o}" for o in ["data.format=npz", f"data.train={path}", "train.epochs=8",
                                      *FAST]]]
    study_dir = tmp_path / "out" / "demo-tune"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainer.tune", *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # kill it in the middle of the second trial, once that has a checkpoint
            _wait_for(study_dir / "trial-0001" / "checkpoints" / "state.json", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (study_dir / "trial-0000" / "model.h5").is_file()
    assert not (study_dir / "trial-0001" / "model.h5").exists()  # really interrupted
    finished_at = (study_dir / "trial-0000" / "model.h5").stat().st_mtime_ns

    second = run_cli(*args, "--parallel", "2", module="trainer.tune")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    out = second.stdout
    assert "trial 1 was interrupted; it will run again" in out
    assert "1 of 3 trials already taken" in out
    assert not re.search(r"^trial 0:", out, re.M)  # the finished trial was not repeated
    assert (study_dir / "trial-0000" / "model.h5").stat().st_mtime_ns == finished_at
    # the interrupted trial ran again under its own name, continuing from its checkpoint
    metrics = json.loads((study_dir / "trial-0001" / "metrics.json").read_text())
    assert metrics["training"]["resumed_from_epoch"] >= 1
    assert metrics["training"]["epochs_trained"] == 8
    rows = list(csv.DictReader(open(study_dir / "trials.csv")))
    assert sorted(r["run"] for r in rows) == ["trial-0000", "trial-0001", "trial-0002"]
    assert {float(r["train.learning_rate"]) for r in rows} == {0.01, 0.003, 0.001}
    assert all(r["state"] == "complete" for r in rows)
    assert all(r["run"] == f"trial-{int(r['trial']):04d}" for r in rows), rows  # numbers agree
    assert (study_dir / "objective.png").stat().st_size > 5000
    study = optuna.load_study(study_name=study_mod.STUDY_NAME,
                              storage=study_mod.storage_url(str(study_dir)))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]
    assert [t.number for t in failed] == [1] and len(retry) == 1
    assert retry[0].params == failed[0].params and retry[0].user_attrs["run_name"] == "trial-0001"


def test_bad_space_on_the_command_line(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.learning_rate: {uniform: [0.1]}\n")
    proc = run_cli("--space", str(space), "--output_dir", str(tmp_path), module="trainer.tune")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: uniform of 'train.learning_rate' is [0.1], {space} params, expected [low, high] "
        "numbers")


# -- Iterating on a search: a grown grid or choice continues the study -------------------------

def _grid_search(tmp_path, base, params, target, **top):
    space = space_mod.parse({"pruning": False, "params": params, **top}, base, "space")
    study = study_mod.search(str(tmp_path / "study"), base, space, target=target, parallel=1)
    return results.ranked(study, space)


def test_a_grown_grid_runs_only_its_new_combinations(tmp_path, blob_npz, capsys):
    base = config.load(None, ["data.format=npz", f"data.train={blob_npz}", "train.epochs=1",
                              "train.batch_size=32", *FAST], str(tmp_path))
    _grid_search(tmp_path, base, {"train.learning_rate": [0.01],
                                  "model.dropout": {"choice": [0.0]}}, 1)
    capsys.readouterr()
    # a value more in the grid, and in the choice (Optuna keeps a parameter's choices fixed)
    rows = _grid_search(tmp_path, base, {"train.learning_rate": [0.01, 0.003],
                                         "model.dropout": {"choice": [0.0, 0.1]}}, 2)
    out = capsys.readouterr().out
    assert re.findall(r"^trial \d+: train", out, re.M) == ["trial 1: train"], out
    assert sorted(r["train.learning_rate"] for r in rows) == [0.003, 0.01]
    assert all(r["model.dropout"] in (0.0, 0.1) for r in rows), rows
    # a trial killed mid-run (left running in the study) is re-run under its own number
    study = optuna.load_study(study_name=study_mod.STUDY_NAME,
                              storage=study_mod.storage_url(str(tmp_path / "study")))
    stuck = study.ask()
    for key, value in {"run_name": "trial-0002", "trial": 2,
                       "grid": {"train.learning_rate": 0.01, "train.batch_size": 16}}.items():
        stuck.set_user_attr(key, value)
    # a new grid key: earlier trials took the config's batch size (32); 16 is new
    rows = _grid_search(tmp_path, base, {"train.learning_rate": [0.01, 0.003],
                                         "model.dropout": {"choice": [0.0, 0.1]},
                                         "train.batch_size": [32, 16]}, 4)
    out = capsys.readouterr().out
    assert "trial 2 was interrupted" in out and "2 of 4 trials already taken" in out, out
    assert "trial 2 (re-run after an interruption): train.learning_rate=0.01, " in out
    assert len(re.findall(r"^trial \d+: val_loss", out, re.M)) == 2, out  # only the new two
    assert sorted((r["train.learning_rate"], r["train.batch_size"]) for r in rows) == [
        (0.003, 16), (0.003, 32), (0.01, 16), (0.01, 32)]
    assert all(r["run"] == f"trial-{r['trial']:04d}" for r in rows), rows
    assert all(r["state"] == "complete" for r in rows) and len(rows) == 4


def test_another_metric_is_refused_with_the_study_name_way_out(tmp_path):
    from conftest import error_line

    base = config.load(None, [], str(tmp_path / "out"))
    space = _space({"train.learning_rate": [0.01, 0.001]})
    study_dir = str(tmp_path / "out" / "demo-tune")
    os.makedirs(study_dir)
    study_mod.prepare(study_mod.open_study(study_dir, space), space, 2, base, study_dir)
    other = tmp_path / "space.yaml"
    other.write_text("metric: val_accuracy\nparams:\n  train.learning_rate: [0.01, 0.001]\n")
    proc = run_cli("--space", str(other), "--output_dir", str(tmp_path / "out"),
                   module="trainer.tune")
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "val_loss (minimize)" in line and "val_accuracy (maximize)" in line, line
    assert "--study_name" in line and str(other) in line, line


def test_a_trial_that_trained_all_its_epochs_is_never_pruned():
    from trainer.callbacks.pruning import PruneOnEpoch

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    early, last = (PruneOnEpoch(study.ask(), "val_loss") for _ in range(2))
    for callback in (early, last):
        callback.set_params({"epochs": 3})
        callback.model = type("M", (), {"stop_training": False})()
    early.on_epoch_end(0, {"val_loss": 1.0})
    last.on_epoch_end(2, {"val_loss": 1.0})
    assert early.pruned_at == 1 and early.model.stop_training
    assert last.pruned_at is None and not last.model.stop_training

"""The search: the space file, pruning of a hopeless trial, and resumption after a real kill."""

import collections
import csv
import json
import math
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
    assert list(space.grid_points()) == [
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


def test_the_blueprints_flat_grid_file_is_taken_as_the_grid_it_means():
    """Seed 003's grid file lists its parameters flat, by short names; each name that ends
    exactly one config key is that key's grid, whatever the key."""
    keys = list(config.flat(config.from_dict({}).to_dict()))
    leaves = collections.Counter(k.rsplit(".", 1)[-1] for k in keys)
    sections = {k.split(".")[0] for k in keys}
    unique = [k for k in keys if leaves[k.rsplit(".", 1)[-1]] == 1 and "." in k
              and k.rsplit(".", 1)[-1] not in {*space_mod._TOP_KEYS, *sections}]
    assert {"train.learning_rate", "train.batch_size", "train.epochs", "model.dropout"} <= set(unique)
    for key in unique:
        leaf = key.rsplit(".", 1)[-1]
        assert space_mod._raw_params({leaf: [1], "metric": "val_loss"}, config.from_dict({}),
                                     "g.yaml") == {key: [1]}
    seed = _flat({"learning_rate": [0.001, 0.0003], "batch_size": [64, 128], "epochs": [1, 2],
                  "dropout": [0.2, 0.5], "train.seed": [1]})
    assert [(p.key, p.kind, p.values) for p in seed.params] == [
        ("train.learning_rate", "grid", (0.001, 0.0003)), ("train.batch_size", "grid", (64, 128)),
        ("train.epochs", "grid", (1, 2)), ("model.dropout", "grid", (0.2, 0.5)),
        ("train.seed", "grid", (1,))]
    assert seed.grid_only and seed.default_trials() == 16
    # beside `params:`, both count
    both = _flat({"learning_rate": [0.01], "params": {"train.batch_size": {"choice": [8, 16]}}})
    assert [p.key for p in both.params] == ["train.batch_size", "train.learning_rate"]


def _flat(data):
    return space_mod.parse(data, config.from_dict({}), "g.yaml")


@pytest.mark.parametrize("data, message", [
    ({"name": ["tiny_cnn"]}, "key 'name' could be name or model.name, g.yaml, expected the full "
     "key under params:, e.g. params: {model.name: [...]}"),
    ({"train": {"learning_rate": [0.1]}}, "key 'train' could be data.train or the section "
     "train, g.yaml, expected the full key under params:, e.g. params: {train.<key>: [...]}"),
    ({"learnin_rate": [0.1]}, "unknown key 'learnin_rate', g.yaml, did you mean 'learning_rate'? "
     "(a parameter: params: {train.learning_rate: [...]})"),
    ({"optimizer": ["adam"]}, "unknown key 'optimizer', g.yaml, expected metric, direction, "
     "pruning, params, or a config key to search, under params:, e.g. params: "
     "{train.learning_rate: [0.001, 0.0003]}"),
    ({"metirc": "val_loss", "params": {"train.seed": [1]}}, "unknown key 'metirc', g.yaml, did "
     "you mean 'metric'?"),
    ({"learning_rate": [0.1], "params": {"train.learning_rate": [0.2]}}, "'learning_rate' and "
     "params.train.learning_rate both set train.learning_rate, g.yaml, expected it once"),
    ({"dir": ["elsewhere"]}, "parameter 'output.dir', g.yaml params, expected a training setting"),
])
def test_a_flat_key_that_is_not_one_config_key_shows_the_params_form(data, message):
    with pytest.raises(UserError) as exc:
        _flat(data)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize("params, top, pruning", [
    ({"train.learning_rate": [0.01, 0.001]}, {}, False),  # all grid: every combination, whole
    ({"learning_rate": [0.01, 0.001], "batch_size": [8, 16]}, {}, False),
    ({"train.learning_rate": [0.01, 0.001]}, {"pruning": True}, True),  # asked for
    ({"train.learning_rate": [0.01, 0.001]}, {"pruning": {"warmup_epochs": 2}}, True),
    ({"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}}, {}, True),  # a sampled search
    ({"train.batch_size": [8, 16], "model.dropout": {"choice": [0.0, 0.5]}}, {}, True),
    ({"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}}, {"pruning": False}, False),
])
def test_a_grid_is_pruned_only_when_asked(params, top, pruning):
    data = {**top, **({"params": params} if all("." in k for k in params) else params)}
    space = _flat(data)
    assert space.pruning.enabled is pruning
    assert isinstance(study_mod.pruner(space), optuna.pruners.NopPruner) is not pruning


def test_grid_points_are_taken_least_taken_first_in_grid_order_without_listing_the_grid():
    """The walk gives what taking the least-taken point, first in grid order, one at a time
    gives, for random grids and random counts of earlier trials."""
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
    def check(sizes, data):
        space = space_mod.Space(tuple(space_mod.Param(f"k{i}", "grid", tuple(range(n)))
                                      for i, n in enumerate(sizes)), "val_loss", "minimize")
        keys = [p.key for p in space.grid]
        points = list(space.grid_points())
        taken = collections.Counter({study_mod._point_key(q, keys): data.draw(st.integers(0, 3))
                                     for q in points})
        count = data.draw(st.integers(0, 3 * len(points)))
        naive, counts = [], collections.Counter(taken)
        for _ in range(count):
            best = min(points, key=lambda q: counts[study_mod._point_key(q, keys)])
            counts[study_mod._point_key(best, keys)] += 1
            naive.append(best)
        assert study_mod.least_taken(space, collections.Counter(taken), count) == naive

    check()


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


def test_a_grid_trains_every_combination_to_its_end(tmp_path):
    """The grid of the test above, without `pruning:`: the hopeless trial trains all its epochs
    too, and the table says of each trial whether it was pruned."""
    x, label, _ = blob_images(400, seed=8)
    path = write_npz(tmp_path / "d", "blobs.npz", x, label)
    base = config.load(None, ["data.format=npz", f"data.train={path}", "train.epochs=3",
                              "train.batch_size=16", *FAST], str(tmp_path))
    space = space_mod.parse({"metric": "val_loss", "learning_rate": [0.01, 0.003, 1.0e-7]},
                            base, "space")
    study = study_mod.search(str(tmp_path / "study"), base, space, target=3, parallel=1)
    rows = results.ranked(study, space)
    assert [(r["state"], r["epochs"]) for r in rows] == [("complete", 3)] * 3, rows
    assert results.table(rows).splitlines()[0].split()[:4] == ["rank", "trial", "run", "state"]


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


_GRID_VALUES = {"train.learning_rate": lambda i: 1e-4 * (i + 1), "train.batch_size": lambda i: i + 1,
                "train.epochs": lambda i: i + 1, "train.seed": lambda i: i,
                "model.layer_param": lambda i: i + 1}


@pytest.mark.parametrize("sizes", [(100, 100, 100, 100, 100), (2, 5001), (3, 7, 11, 5, 9)])
def test_a_grid_too_large_to_train_is_refused_by_its_count_under_a_memory_limit(tmp_path, sizes):
    """Its size is counted, never listed: 100^5 combinations fail at once with one line, in a
    process that could not hold them."""
    from conftest import error_line
    from test_hostile_input import _under_memory_limit

    keys = list(_GRID_VALUES)[:len(sizes)]
    space = tmp_path / "big.yaml"
    space.write_text("params:\n" + "".join(
        f"  {k}: [{', '.join(str(_GRID_VALUES[k](i)) for i in range(n))}]\n"
        for k, n in zip(keys, sizes)))
    out = tmp_path / "out"
    code = "import runpy\nsys.argv[0] = 'trainer.tune'\nrunpy.run_module('trainer.tune', run_name='__main__')\n"
    proc = _under_memory_limit(code, "--space", str(space), "--output_dir", str(out))
    count = math.prod(sizes)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert error_line(proc.stderr) == (
        f"error: the grid has {count:,} combinations "
        f"({' x '.join(f'{n} {k}' for k, n in zip(keys, sizes))}), {space} params, expected at "
        "most 10,000, since every combination is trained: shorten its lists, or make some keys "
        "{choice: [...]} to sample them (--trials N)")
    assert not out.exists()
    # at the bound, the count is the default number of trials
    at_bound = {k: list(range(1, 101)) for k in ("train.epochs", "model.layer_param")}
    assert _flat({"params": at_bound}).default_trials() == space_mod.MAX_GRID


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

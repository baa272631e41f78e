import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import config
from trainer.errors import UserError

from conftest import ROOT, error_line, run_cli


def test_defaults_are_the_demo():
    cfg = config.from_dict({})
    assert cfg.name == "demo" and cfg.data.format == "shapes" and cfg.task == "classification"


SHIPPED = sorted(glob.glob(os.path.join(ROOT, "local", "configs", "*.yaml")))
# Overrides that leave every carved split carved, whatever the shipped config gave.
CARVED = ["data.val=null", "data.test=null", "data.val_rows=null", "data.test_rows=null"]
# One broken rule each: the overrides that break it, and the one error it must give.
BROKEN_RULES = {
    "monitor": (["train.monitor=val_acuracy"],
                r"invalid value 'val_acuracy' for 'train.monitor', .*expected one of loss"),
    "monitor of the other task": (["task=regression", "train.metrics=null", "train.class_weight=none",
                                   "train.monitor=val_accuracy"],
                                  r"'train.monitor', .*expected one of loss, mse, mae"),
    "splits leave no training data": ([*CARVED, "data.validation_split=0.6", "data.test_split=0.4"],
                                      r"data.validation_split \+ data.test_split is 1.0, .*expected "
                                      "less than 1"),
    "files for a format that reads files": (["data.train=null"],
                                            r"no training data given, data.train, .*expected a path"),
    "files for the generated demo": (["data.format=shapes"],
                                     r"data.train is set but data.format=shapes draws its own data"),
    "groups of a format without them": ([*CARVED, "data.format=image_folder", "data.split_by=group"],
                                        r"no group per sample \(data.split_by=group\), "
                                        "data.format=image_folder, .*expected a format that carries "
                                        r"groups \(npz, npy, tfrecord, csv, hdf5\)"),
    "row range": (["data.train_rows=[5, 2]"],
                  r"invalid row range \[5, 2\], data.train_rows, .*expected \[start, stop\) "
                  "with 0 <= start < stop"),
    "overlapping rows": (["data.train_rows=null", "data.val=null", "data.test=null", "data.val_rows=[0, 10]",
                          "data.test_rows=[5, 20]"],
                         r"data.val_rows \[0, 10\] and data.test_rows \[5, 20\] overlap, .*expected "
                         "disjoint row ranges"),
    "a loss of one-hot labels": (["train.loss=categorical_crossentropy"],
                                 r"invalid value 'categorical_crossentropy' for 'train.loss', .*for "
                                 r"task=.* \(labels are "),
    "names of the other task's outputs": (["task=classification", "train.loss=null",
                                           "train.metrics=null", "train.monitor=val_loss",
                                           "data.class_names=null", "data.target_names=[a, b]"],
                                          r"invalid value \['a', 'b'\] for 'data.target_names', "
                                          r".*expected nothing for task=classification"),
    "class weights of a regression": (["task=regression", "train.metrics=null",
                                       "train.monitor=val_loss", "train.class_weight=balanced"],
                                      r"'train.class_weight', .*expected none for "
                                      "task=regression"),
    "label mixing of a regression": (["task=regression", "train.metrics=null",
                                      "train.monitor=val_loss", "train.class_weight=none",
                                      "data.augment=[flip_up_down, cutmix: 0.5]"],
                                     r"data.augment has cutmix, .*classification only"),
}


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_validates(path):
    cfg = config.load(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]
    # and a broken copy of it does not
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):
        config.load(path, ["train.epoch=3"])


@pytest.mark.parametrize("rule", sorted(BROKEN_RULES))
@pytest.mark.parametrize("path", SHIPPED)
def test_each_cross_field_rule_is_checked_when_loaded(path, rule):
    overrides, match = BROKEN_RULES[rule]
    with pytest.raises(UserError, match=match):
        config.load(path, overrides)


def test_monitor_typo_ends_the_command_before_any_data_is_read(tmp_path):
    proc = run_cli("--set", "train.monitor=val_acuracy", "--set", "data.samples_per_class=30",
                   "--set", "train.epochs=1", "--output_dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc.stderr)
    assert line == ("error: invalid value 'val_acuracy' for 'train.monitor', --set, expected one "
                    "of loss, accuracy, val_loss, val_accuracy (did you mean 'val_accuracy'?)")
    assert "data:" not in proc.stdout + proc.stderr and "poch" not in proc.stdout + proc.stderr
    assert not os.listdir(tmp_path)  # no run folder


@pytest.mark.parametrize("raw, monitor", [
    ({}, "val_accuracy"),
    ({}, "loss"),
    ({"task": "regression"}, "val_mae"),
    ({"task": "regression", "train": {"loss": "mse", "metrics": ["RootMeanSquaredError"]}},
     "val_root_mean_squared_error"),  # as tf-keras names a metric given by its class
    ({"train": {"metrics": ["accuracy", "SparseTopKCategoricalAccuracy"]}},
     "val_sparse_top_k_categorical_accuracy"),
])
def test_monitor_may_name_any_quantity_the_task_logs(raw, monitor):
    raw = {**raw, "train": {**raw.get("train", {}), "monitor": monitor}}
    assert config.from_dict(raw).train.monitor == monitor


@pytest.mark.parametrize("task, loss, metrics", [
    ("classification", "sparse_categorical_crossentropy", ["accuracy"]),
    ("regression", "rmse", ["mse", "mae"]),
])
def test_the_config_fills_in_the_defaults_it_uses(task, loss, metrics):
    cfg = config.from_dict({"task": task})
    assert (cfg.train.loss, cfg.train.metrics, cfg.data.image_size) == (loss, metrics, [32, 32])
    assert None not in config.parse_yaml(cfg.to_yaml(), "written")["train"].values()
    assert config.from_dict(config.parse_yaml(cfg.to_yaml(), "again")) == cfg
    # what the user gave stays as given
    loss, metric = config.TASK_LOSSES[task][-1], config.TASK_METRICS[task][-1]
    given = config.from_dict({"task": task, "train": {"loss": loss, "metrics": [metric],
                                                      "monitor": "loss"},
                              "data": {"image_size": [8, 12]}})
    assert (given.train.loss, given.train.metrics, given.data.image_size) == (loss, [metric], [8, 12])


def test_image_size_decided_by_the_data_is_recorded():
    cfg = config.from_dict({"data": {"format": "npz", "train": "a.npz"}})
    assert cfg.data.image_size is None  # the first image decides
    settled = cfg.with_data_shape((24, 16, 1))
    assert settled.data.image_size == [24, 16] and settled.train == cfg.train
    assert config.from_dict(config.parse_yaml(settled.to_yaml(), "again")) == settled
    given = config.from_dict({"data": {"format": "npz", "train": "a.npz", "image_size": [8, 8]}})
    assert given.with_data_shape((24, 16, 1)) == given


def test_format_names_come_from_the_one_registry():
    from trainer.data import formats

    field = {f.name: f for f in dataclasses.fields(config.DataConfig)}["format"]
    assert field.metadata["choices"] == formats.names()
    assert {"npz", "npy", "tfrecord", "image_folder", "csv", "hdf5", "shapes"} == set(formats.names())
    for name, entry in formats.FORMATS.items():  # each entry names a reader that exists
        assert callable(formats.reader(name))
        assert f"`{name}` ({entry.doc})" in field.metadata["doc"]  # and is documented


def test_config_loads_without_tensorflow():
    code = ("import sys, trainer.config as c; c.load(None, ['train.monitor=val_accuracy']); "
            "assert 'tensorflow' not in sys.modules and 'numpy' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'numpy'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shipped_configs_cover_every_seed_job():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "local", "configs", "*.yaml"))}
    assert {"contact.yaml", "hexagonal.yaml", "raccoon.yaml", "penguin.yaml", "digits.yaml",
            "shapes.yaml"} <= names


def test_unknown_key_names_the_nearest():
    with pytest.raises(UserError) as exc:
        config.from_dict({"train": {"learning_rte": 0.1}}, "my.yaml")
    msg = str(exc.value)
    assert "'train.learning_rte'" in msg and "my.yaml" in msg and "'train.learning_rate'" in msg


def test_unknown_top_level_key():
    with pytest.raises(UserError, match="unknown key 'modle', x.yaml, did you mean 'model'"):
        config.from_dict({"modle": {}}, "x.yaml")


@pytest.mark.parametrize("raw, match", [
    ({"train": {"epochs": "ten"}}, "'train.epochs'.*expected an integer"),
    ({"train": {"epochs": 0}}, "'train.epochs'.*expected >= 1"),
    ({"train": {"epochs": True}}, "'train.epochs'.*expected an integer"),
    ({"train": {"learning_rate": 0}}, "'train.learning_rate'.*expected > 0"),
    ({"data": {"validation_split": 1.5}}, "'data.validation_split'.*expected <= 0.9"),
    ({"task": "clasification"}, "expected one of classification, regression.*did you mean 'classification'"),
    ({"data": {"format": "zip"}}, "'data.format'.*expected one of"),
    ({"data": {"train": 5}}, "'data.train'.*expected a string or a list of a string"),
    ({"train": "fast"}, "key 'train' is a str.*expected a mapping"),
])
def test_wrong_types_and_ranges_are_rejected(raw, match):
    with pytest.raises(UserError, match=match):
        config.from_dict(raw, "c.yaml")


def test_overrides_parse_yaml_scalars_and_lists(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ntrain:\n  epochs: 5\n")
    cfg = config.load(str(path), ["train.epochs=3", "model.dropout=0.2", "data.train=[a.npz, b.npz]",
                                  "data.format=npz"], output_dir="/tmp/out")
    assert cfg.train.epochs == 3 and cfg.model.dropout == 0.2
    assert cfg.data.train == ["a.npz", "b.npz"] and cfg.output.dir == "/tmp/out"
    assert isinstance(cfg.train.learning_rate, float)
    # PyYAML reads 1e-3 as a string; the config takes it as the number it is
    assert config.load(None, ["train.learning_rate=1e-3"]).train.learning_rate == 0.001


def test_override_errors():
    with pytest.raises(UserError, match="not key=value"):
        config.load(None, ["train.epochs"])
    with pytest.raises(UserError, match="'name' is not a section"):
        config.load(None, ["name=a", "name.x=1"])


def test_yaml_of_the_wrong_shape(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match=f"config is a list, {path}, expected a mapping"):
        config.load(str(path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        config.load(str(bad))


def test_config_round_trips_through_yaml():
    cfg = config.from_dict({"name": "x", "train": {"epochs": 2}, "model": {"params": {"width": 3}}})
    again = config.from_dict(config.parse_yaml(cfg.to_yaml(), "round trip"))
    assert again == cfg


def test_docs_reference_matches_the_config_classes():
    reference = open(os.path.join(ROOT, "docs", "reference.md")).read()
    assert config.reference_markdown() in reference, (
        "docs/reference.md's configuration reference is stale: paste `python -c 'from trainer import "
        "config; print(config.reference_markdown())'` into it")
    assert config.resume_markdown() in reference, (
        "docs/reference.md's resume rules are stale: paste `python -c 'from trainer import "
        "config; print(config.resume_markdown())'` into it")


# ----------------------------------------------------------------------------------------------
# Bounds: a value no machine can hold or no run can finish ends the command when loaded.


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"batch_size": 2 * 10**8}}, "'train.batch_size', c.yaml, expected <= 65536"),
    ({"data": {"samples_per_class": 2 * 10**9}}, "'data.samples_per_class', c.yaml, expected <= "),
    ({"data": {"image_size": [10**5, 10**5]}}, "'data.image_size', c.yaml, expected <= 16384"),
    ({"data": {"image_size": [8, 10**5]}}, "'data.image_size', c.yaml, expected <= 16384"),
    ({"model": {"layer_param": 10**8}}, "'model.layer_param', c.yaml, expected <= 512"),
    ({"train": {"epochs": 10**21}}, "'train.epochs', c.yaml, expected <= "),
    ({"train": {"seed": 2**32}}, "'train.seed', c.yaml, expected <= 4294967295"),
    ({"train": {"seed": 2**64}}, "'train.seed', c.yaml, expected <= 4294967295"),
    ({"data": {"shuffle_window": 10**12}}, "'data.shuffle_window', c.yaml, expected <= "),
    ({"data": {"read_threads": 10**6}}, "'data.read_threads', c.yaml, expected <= 256"),
])
def test_sizes_beyond_any_machine_are_refused_when_loaded(raw, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        config.from_dict(raw, "c.yaml")


def test_the_largest_allowed_seed_loads():
    assert config.from_dict({"train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1


# ----------------------------------------------------------------------------------------------
# `name` is one path component inside the output folder.

NAME_EXPECTED = ("expected 1 to 128 letters, digits, '.', '_' or '-', starting with a letter, "
                 "digit or '_' (e.g. run-01)")


@pytest.mark.parametrize("name", ["a/b", "../x", "/abs/x", "x" * 300, "a\x00b", "", ".", "..",
                                  ".hidden", "a\\b", "a b", "-rf", "é", "x" * 129])
def test_names_that_are_not_one_safe_path_component(name):
    with pytest.raises(UserError) as exc:
        config.from_dict({"name": name}, "c.yaml")
    assert "for 'name', c.yaml, " + NAME_EXPECTED in str(exc.value)
    assert "\n" not in str(exc.value)


@settings(deadline=None, max_examples=60)
@given(st.text(max_size=140) | st.from_regex(r"[A-Za-z0-9._/-]{0,8}", fullmatch=True))
def test_any_accepted_name_stays_inside_the_output_folder(name):
    try:
        cfg = config.from_dict({"name": name})
    except UserError as exc:
        assert NAME_EXPECTED in str(exc)
        return
    root = "/runs"
    joined = os.path.normpath(os.path.join(root, cfg.name))
    assert os.path.dirname(joined) == root and os.path.basename(joined) == cfg.name
    assert 1 <= len(cfg.name) <= 128 and not cfg.name.startswith(".")


def test_a_bad_name_on_the_command_line_writes_nothing(tmp_path):
    out = tmp_path / "out" / "runs"
    proc = run_cli("--set", "name=../escaped", "--output_dir", str(out))
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert line == "error: invalid value '../escaped' for 'name', --set, " + NAME_EXPECTED
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# Config that cannot fail late: keys given twice, overlapping rows, losses of the other task.


@pytest.mark.parametrize("text, expected", [
    ("name: a\nname: b\n", "duplicate key 'name' on lines 1 and 2"),
    ("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 30\n", "duplicate key 'epochs' on lines 2 and 4"),
    ("train: {seed: 1}\ndata: {}\ntrain: {seed: 2}\n", "duplicate key 'train' on lines 1 and 3"),
    ("model:\n  params: {1: a, 1: b}\n", "duplicate key 1 on lines 2 and 2"),
])
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        config.load(str(path))
    assert str(exc.value) == f"{expected}, {path}, expected each key once (YAML keeps only the last)"


def test_merged_keys_may_still_be_overridden():
    text = "base: &b {epochs: 3, batch_size: 8}\ntrain:\n  <<: *b\n  epochs: 4\n"
    assert config.parse_yaml(text, "c.yaml")["train"] == {"epochs": 4, "batch_size": 8}


def test_a_key_given_twice_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 1\n  epochs: 100\n")
    proc = run_cli("--config", str(path), "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert error_line(proc.stderr) == (f"error: duplicate key 'epochs' on lines 3 and 4, {path}, "
                                       "expected each key once (YAML keeps only the last)")


@pytest.mark.parametrize("data, overlap", [
    ({"val_rows": [0, 10], "test_rows": [5, 20]}, "data.val_rows [0, 10] and data.test_rows [5, 20]"),
    ({"val_rows": [0, 10], "test_rows": [0, 10]}, "data.val_rows [0, 10] and data.test_rows [0, 10]"),
    ({"train_rows": [0, 100], "test_rows": [99, 120]},
     "data.train_rows [0, 100] and data.test_rows [99, 120]"),
    ({"val": "v.npz", "test": "v.npz", "val_rows": [3, 9], "test_rows": [0, 4]},
     "data.val_rows [3, 9] and data.test_rows [0, 4]"),
])
def test_overlapping_row_ranges_of_the_same_files_are_refused(data, overlap):
    raw = {"data": {"format": "npz", "train": "t.npz", **data}}
    with pytest.raises(UserError) as exc:
        config.from_dict(raw, "c.yaml")
    assert str(exc.value).startswith(f"{overlap} overlap, c.yaml, expected disjoint row ranges")


@pytest.mark.parametrize("data", [
    {"val_rows": [0, 10], "test_rows": [10, 20]},
    {"val": "v.npz", "val_rows": [0, 10], "test_rows": [5, 20]},  # rows of different files
    {"train_rows": [0, 100], "val_rows": [100, 120], "test_rows": [120, 130]},
])
def test_disjoint_row_ranges_load(data):
    """Disjoint ranges load as given, and a split given rows is read from them, not carved."""
    cfg = config.from_dict({"data": {"format": "npz", "train": "t.npz", **data}})
    assert {k: getattr(cfg.data, k) for k in data} == data
    assert config.carved_splits(cfg.data) == []


@pytest.mark.parametrize("task, train, key, name", [
    ("classification", {"loss": "categorical_crossentropy"}, "train.loss", "categorical_crossentropy"),
    ("classification", {"loss": "mse"}, "train.loss", "mse"),
    ("classification", {"loss": "binary_crossentropy"}, "train.loss", "binary_crossentropy"),
    ("classification", {"metrics": ["auc"]}, "train.metrics", "auc"),
    ("classification", {"metrics": ["accuracy", "precision_at_k"]}, "train.metrics", "precision_at_k"),
    ("classification", {"metrics": ["mae"]}, "train.metrics", "mae"),
    ("regression", {"loss": "sparse_categorical_crossentropy"}, "train.loss",
     "sparse_categorical_crossentropy"),
    ("regression", {"metrics": ["accuracy"]}, "train.metrics", "accuracy"),
])
def test_losses_and_metrics_must_fit_the_task_and_its_labels(task, train, key, name):
    with pytest.raises(UserError) as exc:
        config.from_dict({"task": task, "train": {**train, "monitor": "loss"}}, "c.yaml")
    labels = "class indices" if task == "classification" else "numbers"
    assert str(exc.value).startswith(f"invalid value '{name}' for '{key}', c.yaml, expected one of ")
    assert str(exc.value).endswith(f" for task={task} (labels are {labels})")


@settings(deadline=None, max_examples=50)
@given(st.lists(st.integers(0, 30), min_size=4, max_size=4), st.booleans())
def test_rows_load_exactly_when_no_sample_is_in_two_splits(bounds, same_file):
    val, test = sorted(bounds[:2]), sorted(bounds[2:])
    if val[0] == val[1] or test[0] == test[1]:
        return
    data = {"format": "npz", "train": "t.npz", "val_rows": val, "test_rows": test,
            **({} if same_file else {"test": "other.npz"})}
    shared = same_file and set(range(*val)) & set(range(*test))
    try:
        config.from_dict({"data": data})
    except UserError as exc:
        assert shared and "overlap" in str(exc)
        return
    assert not shared


@pytest.mark.parametrize("data, absent, monitor", [
    ({"validation_split": 0, "test_split": 0.3}, ["val"], "loss"),  # seed 004's 70/30
    ({"validation_split": 0.2, "test_split": 0}, ["test"], "val_loss"),
    ({"validation_split": 0, "test_split": 0}, ["val", "test"], "loss"),
    ({"validation_split": 0, "val": "v/*.npz", "test_split": 0}, ["test"], "val_loss"),
])
def test_a_split_of_zero_is_absent_and_the_monitor_follows(data, absent, monitor):
    cfg = config.from_dict({"data": {"format": "npz", "train": "t/*.npz", **data}})
    assert config.absent_splits(cfg.data) == absent
    assert cfg.train.monitor == monitor
    assert "val" not in config.carved_splits(cfg.data) or "val" not in absent


def test_a_left_out_validation_split_has_no_val_quantities_to_monitor():
    with pytest.raises(UserError, match=r"'train.monitor', .*expected one of loss, accuracy$"):
        config.from_dict({"data": {"format": "npz", "train": "t/*.npz", "validation_split": 0},
                          "train": {"monitor": "val_acc"}})

import glob
import os

import pytest

from trainer import config
from trainer.errors import UserError

from conftest import ROOT


def test_defaults_are_the_demo():
    cfg = config.from_dict({})
    assert cfg.name == "demo" and cfg.data.format == "shapes" and cfg.task == "classification"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "local", "configs", "*.yaml"))))
def test_every_shipped_config_validates(path):
    cfg = config.load(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]
    # and a broken copy of it does not
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):
        config.load(path, ["train.epoch=3"])


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

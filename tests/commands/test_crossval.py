"""Cross-validation: folds by group or by sample, each a run of its own, restartable, gathered
into crossval.json and crossval.html; and its Vertex AI form, one job per fold."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import blob_images, write_npz
from trainer import crossval
from trainer.data import folds as folds_mod


def test_folds_share_no_group_and_cover_every_sample_once():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, folds = int(rng.integers(10, 200)), int(rng.integers(2, 6))
        groups = rng.integers(0, int(rng.integers(folds, 30)), n).astype(str)
        groups[:folds] = [f"x{k}" for k in range(folds)]  # at least `folds` groups
        fold = folds_mod.assign(groups, n, folds, seed)
        assert fold.shape == (n,) and set(fold) == set(range(folds))  # each sample once, no empty fold
        for g in np.unique(groups):
            assert len(set(fold[groups == g])) == 1  # a group is in one fold only
        by_sample = folds_mod.assign(None, n, folds, seed)
        sizes = np.bincount(by_sample, minlength=folds)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
        assert (folds_mod.assign(groups, n, folds, seed) == fold).all()  # reproducible


def test_too_few_groups_for_the_folds_is_one_error_line(tmp_path, capsys):
    x, y, _ = blob_images(40, seed=1)
    write_npz(tmp_path / "data", "a.npz", x, y, group=np.repeat(["a", "b"], 20))
    code = crossval.main(["--folds", "3", "--set", "data.format=npz", "--set",
                          f"data.train={tmp_path}/data/*.npz", "--set", "data.split_by=group",
                          "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: 2 groups cannot make 3 folds") and \
        len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("metrics.json"))


def _grouped_data(tmp_path):
    x, y, _ = blob_images(160, seed=3)
    write_npz(tmp_path / "data", "a.npz", x, y, group=np.repeat([f"v{i}" for i in range(8)], 20))
    return ["--set", "data.format=npz", "--set", f"data.train={tmp_path}/data/*.npz",
            "--set", "data.split_by=group", "--set", "model.name=tiny_cnn", "--set",
            "train.epochs=1", "--set", "output.plots=false", "--set", "output.report=false",
            "--set", "output.saved_model=false", "--output_dir", str(tmp_path / "out")]


def test_each_fold_tests_on_its_own_groups_and_the_split_follows_the_fold(tmp_path):
    from trainer import config
    from trainer.data import load_splits

    args = _grouped_data(tmp_path)
    sets = [args[i + 1] for i in range(0, len(args) - 2, 2)]
    base = config.load(None, sets)
    seen = []
    for k in range(3):
        splits = load_splits(crossval.fold_config(base, k, 3))
        test = set(splits.test.view.groups)
        assert not test & set(splits.train.view.groups)
        assert not test & set(splits.val.view.groups)
        seen.append(sorted(test))
    assert sorted(g for part in seen for g in part) == [f"v{i}" for i in range(8)]
    assert seen == crossval.held_out_groups(crossval.fold_config(base, 0, 3))


def test_a_restart_skips_finished_folds_and_the_summary_gathers_them(tmp_path, capsys):
    args = _grouped_data(tmp_path)
    assert crossval.main(["--folds", "2", *args]) == 0
    folder = tmp_path / "out" / "demo-crossval"
    summary = json.loads((folder / "crossval.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    held = [g for f in summary["folds"] for g in f["held_out_groups"]]
    assert sorted(held) == [f"v{i}" for i in range(8)]
    for name, mean in summary["mean"].items():
        values = [f["metrics"][name] for f in summary["folds"]]
        assert mean == pytest.approx(np.mean(values))
        assert summary["std"][name] == pytest.approx(np.std(values, ddof=1))
    assert "test.accuracy" in (folder / "crossval.html").read_text()
    first = os.stat(folder / "fold-0" / "metrics.json").st_mtime_ns
    os.remove(folder / "fold-1" / "metrics.json")  # fold 1 interrupted before its end
    capsys.readouterr()
    assert crossval.main(["--folds", "2", *args]) == 0
    out = capsys.readouterr().out
    assert "fold 0 of 2: finished, skipped" in out and "fold 1 of 2: training" in out
    assert os.stat(folder / "fold-0" / "metrics.json").st_mtime_ns == first
    assert (folder / "fold-1" / "metrics.json").exists()


def test_submit_crossval_sends_one_job_per_fold(tmp_path, gcs, capsys):
    from google.cloud import aiplatform_v1 as v1

    from trainer import submit
    from vertex_recorder import Recorder

    config = tmp_path / "cv.yaml"
    config.write_text(f"name: cv\ndata:\n  format: npz\n  train: {gcs.url('data/*.npz')}\n")
    recorder = Recorder()
    try:
        code = submit.main(["--config", str(config), "--project", "my-project", "--region",
                            "europe-west4", "--staging_bucket", gcs.url("staging/cv"),
                            "--display_name", "cv-1", "--crossval", "3", "--api_endpoint",
                            recorder.endpoint])
        out = capsys.readouterr().out
        assert code == 0, out
        sent = [v1.CustomJob.from_json(r["body"]) for r in recorder.requests]
    finally:
        recorder.close()
    assert [j.display_name for j in sent] == ["cv-1-fold0", "cv-1-fold1", "cv-1-fold2"]
    for k, job in enumerate(sent):
        args = list(job.job_spec.worker_pool_specs[0].container_spec.args)
        assert args[args.index(f"data.fold=[{k}, 3]") - 1] == "--set"
        assert args[args.index("--output_dir") + 1] == gcs.url("staging/cv/jobs/cv-1/cv-crossval")
    assert f"--folds 3 --output_dir {gcs.url('staging/cv/jobs/cv-1')}" in out

"""Several runs side by side, from local folders and from a bucket."""

import csv
import json
import os

import pytest

from trainer import compare
from trainer.errors import UserError

from conftest import run_cli, run_job

COMMON = ["model.name=tiny_cnn", "data.samples_per_class=30", "output.report=false",
          "output.plots=false"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    run_job(out, "name=fast", "train.learning_rate=0.01", "train.epochs=2", *COMMON)
    run_job(out, "name=slow", "train.learning_rate=0.0001", "train.epochs=3", *COMMON)
    return out


def test_compare_on_the_command_line(two_runs, tmp_path):
    proc = run_cli(str(two_runs / "fast"), str(two_runs / "slow"), "--out", str(tmp_path),
                   module="trainer.compare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, fast, slow = proc.stdout.splitlines()[:3]
    assert header.split()[:5] == ["run", "model", "task", "epochs", "best_epoch"]
    assert fast.split()[:4] == ["fast", "tiny_cnn", "classification", "2"]
    assert slow.split()[:4] == ["slow", "tiny_cnn", "classification", "3"]
    # the config keys that differ between the runs, and only those (not name or output.dir)
    assert header.split()[5:7] == ["train.epochs", "train.learning_rate"], header
    assert fast.split()[5:7] == ["2", "0.01"] and slow.split()[5:7] == ["3", "0.0001"]
    assert "model.name" not in header and "name" not in header.split()
    rows = list(csv.DictReader(open(tmp_path / "compare.csv")))
    assert [r["run"] for r in rows] == ["fast", "slow"]
    assert {"val_accuracy", "test_accuracy", "val_loss", "test_loss", "wall_time_s",
            "train_samples_per_s"} <= set(rows[0])
    for row, run in zip(rows, ("fast", "slow")):  # the figures of the runs' metrics.json
        training = json.load(open(two_runs / run / "metrics.json"))["training"]
        assert float(row["train_samples_per_s"]) == pytest.approx(training["train_samples_per_s"])
        assert float(row["wall_time_s"]) == pytest.approx(training["wall_time_s"])
    assert float(rows[0]["test_accuracy"]) > float(rows[1]["test_accuracy"])  # lr 1e-2 vs 1e-4
    assert os.path.getsize(tmp_path / "compare.png") > 10_000


def test_compare_reads_and_writes_through_the_storage_layer(two_runs, gcs):
    """Runs in a bucket on the GCS emulator."""
    bucket = gcs.client().bucket(gcs.bucket)
    for name in ("fast", "slow"):
        for f in ("metrics.json", "config.yaml", "history.csv"):
            bucket.blob(f"compare/a/{name}/{f}").upload_from_filename(str(two_runs / name / f))
    bucket.blob("compare/b/fast/metrics.json").upload_from_filename(
        str(two_runs / "fast" / "metrics.json"))
    rows, written = compare.compare([gcs.url("compare/a/fast"), gcs.url("compare/a/slow/"),
                                     gcs.url("compare/b/fast")], gcs.url("compare/cmp"))
    assert [r["run"] for r in rows] == ["a/fast", "slow", "b/fast"]  # same names told apart
    assert rows[2]["epochs"] == 2 and rows[2]["model"] == ""  # no config.yaml there: still listed
    assert written == {"table": gcs.url("compare/cmp/compare.csv"),
                       "plot": gcs.url("compare/cmp/compare.png")}
    assert bucket.blob("compare/cmp/compare.png").download_as_bytes()[:4] == b"\x89PNG"
    table = bucket.blob("compare/cmp/compare.csv").download_as_text()
    assert [r["run"] for r in csv.DictReader(table.splitlines())] == ["a/fast", "slow", "b/fast"]


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match=f"no metrics.json in {tmp_path}, run directory"):
        compare.load_run(str(tmp_path))


def test_one_table_for_runs_and_trials(tmp_path):
    """compare and the search print through the same table: blanks for missing values."""
    from trainer.outputs.table import text_table, write_csv
    from trainer.tune import results

    rows = [{"run": "a", "val_loss": 0.123456, "error": ""},
            {"run": "long-name", "val_loss": float("nan"), "epochs": 3, "error": "boom"}]
    assert text_table(rows).splitlines() == ["run        val_loss  error  epochs",
                                             "a          0.1235",
                                             "long-name            boom   3"]
    assert results.table(rows) == text_table(rows, leave_out=("error",))
    assert results.table([]) == "no trials"
    write_csv(rows, str(tmp_path / "t.csv"))
    assert list(csv.DictReader(open(tmp_path / "t.csv")))[1] == {
        "run": "long-name", "val_loss": "nan", "error": "boom", "epochs": "3"}


def test_the_same_curves_in_a_runs_plot_and_in_the_comparison():
    from trainer.outputs.plots import curve_names

    history = [{"epoch": 1, "loss": 0.9, "val_loss": 1.0, "epoch_time_s": 2.0, "samples_per_s": 50.0},
               {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_accuracy": 0.7}]
    assert curve_names(history) == ["loss", "accuracy"]

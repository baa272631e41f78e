"""NaN and Inf image values: refused with one line (counts, split, first file and row), or
replaced with 0 under `data.nonfinite: zero`, in training, evaluation and prediction alike."""

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trainer import task
from trainer.data.finite import Tally, nonfinite_rows
from trainer.errors import UserError

from conftest import blob_images, error_line, run_cli, run_job, write_npz


def _data(tmp_path, bad: dict):
    """Tiny train/val/test npz files; `bad` maps split -> {row: value} written into pixels."""
    paths = {}
    for k, (split, n) in enumerate((("train", 48), ("val", 16), ("test", 16))):
        x, label, _ = blob_images(n, size=8, seed=k)
        for row, value in bad.get(split, {}).items():
            x[row, 1, 2] = value
        paths[split] = write_npz(tmp_path / "d", f"{split}.npz", x, label)
    return [f"data.{split}={path}" for split, path in paths.items()]


def _train(capsys, tmp_path, *overrides):
    code = task.train(None, ["name=nf", "model.name=tiny_cnn", "train.epochs=1",
                             "data.format=npz", "train.batch_size=16", *overrides],
                      str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 2, captured
    line = error_line(captured.err)
    assert not (tmp_path / "out" / "nf").exists()  # nothing half-written
    return line


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_nan_pixels_in_training_stop_with_counts_split_and_first_row(capsys, tmp_path,
                                                                      standardize):
    """Counted by the statistics pass, or (without standardisation) by the pipeline."""
    data = _data(tmp_path, {"train": {9: np.nan, 5: np.nan, 30: np.inf, 31: -np.inf}})
    line = _train(capsys, tmp_path, *data, f"data.standardize={standardize}")
    train = os.path.join(tmp_path, "d", "train.npz")
    assert (f"2 NaN and 2 Inf values in 4 samples of the train split, first at row 5 of {train}, "
            "data.nonfinite=error") in line, line


@pytest.mark.parametrize("split", ["val", "test"])
def test_nan_in_an_evaluation_split_only_is_caught_as_it_is_read(capsys, tmp_path, split):
    data = _data(tmp_path, {split: {3: np.nan, 11: np.nan}})
    line = _train(capsys, tmp_path, *data)
    path = os.path.join(tmp_path, "d", f"{split}.npz")
    assert f"2 NaN and 0 Inf values in 2 samples of the {split} split, first at row 3 of {path}" \
        in line, line


def test_an_unknown_policy_is_refused(capsys, tmp_path):
    line = _train(capsys, tmp_path, *_data(tmp_path, {}), "data.nonfinite=drop")
    assert "data.nonfinite" in line and "drop" in line


def test_nan_regression_targets_are_refused(capsys, tmp_path):
    x, _, target = blob_images(40, size=8)
    target[7, 1] = np.nan
    path = write_npz(tmp_path / "d", "r.npz", x, target)
    line = _train(capsys, tmp_path, f"data.train={path}", "task=regression",
                  "data.nonfinite=zero")
    assert "regression targets contain NaN or infinity" in line and "r.npz" in line


@pytest.fixture(scope="module")
def zeroed_model(tmp_path_factory):
    """A model trained on data whose every split has NaN and Inf pixels, under `zero`."""
    tmp = tmp_path_factory.mktemp("zero")
    bad = {split: {1: np.nan, 4: np.inf, 6: np.nan} for split in ("train", "val", "test")}
    bad["train"].update({row: np.nan for row in range(10, 40, 3)})
    result, _ = run_job(tmp / "out", "name=z", "model.name=tiny_cnn", "train.epochs=2",
                        "data.format=npz", "train.batch_size=16", "data.nonfinite=zero",
                        "train.histograms=true",
                        *_data(tmp, bad))
    return result, tmp


def test_zero_trains_a_model_whose_predictions_differ(zeroed_model):
    from trainer import predict

    result, tmp = zeroed_model
    assert all(np.isfinite(v) for split in ("val", "test") for v in result.metrics[split].values())
    saved = predict.load(result.run_dir)
    x, _, _ = blob_images(32, size=8, seed=9)
    out = saved.model.predict_on_batch(x[..., None])
    assert np.isfinite(out).all() and np.ptp(out[:, 1]) > 1e-4, out


def test_predict_refuses_a_nan_row_or_zeroes_it(zeroed_model, tmp_path):
    result, _ = zeroed_model
    x, label, _ = blob_images(5, size=8, seed=4)
    x[2, 0, 0] = np.nan
    inputs = write_npz(tmp_path, "new.npz", x, label)
    refused = run_cli("--model", result.run_dir, "--csv", str(tmp_path / "p.csv"), inputs,
                      module="trainer.predict")
    assert refused.returncode == 2
    line = error_line(refused.stderr)
    assert f"1 NaN and 0 Inf values in 1 samples of the inputs, first at {inputs}[2]" in line
    assert "--nonfinite=error" in line and not (tmp_path / "p.csv").exists()
    zeroed = run_cli("--model", result.run_dir, "--nonfinite=zero", inputs,
                     module="trainer.predict")
    assert zeroed.returncode == 0, zeroed.stderr
    rows = [line.split() for line in zeroed.stdout.splitlines()]
    assert len(rows) == 5 and all(np.isfinite(float(row[-1])) for row in rows), zeroed.stdout
    assert f"replaced 1 NaN and 0 Inf values in 1 samples of the inputs with 0 (first at " \
        f"{inputs}[2])" in zeroed.stderr


# ----------------------------------------------------------------------------------------------
# The check itself, on blocks of any shape and float type.


@settings(deadline=None, max_examples=25)
@given(n=st.integers(1, 12), shape=st.sampled_from([(3, 3), (4, 2, 3)]),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       bad=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf])),
                    max_size=6))
def test_counts_and_first_row_of_any_block(n, shape, dtype, bad):
    x = np.random.default_rng(0).normal(size=(n, *shape)).astype(dtype)
    flat = x.reshape(-1)
    for at, value in bad:
        flat[at % flat.size] = value
    original = x.copy()
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    rows = sorted({(at % flat.size) // (flat.size // n) for at, _ in bad})
    tally = Tally("train", "zero")
    out = tally.scan(x, lambda i: f"row {i}")
    assert (tally.nan, tally.inf, tally.samples) == (nan, inf, len(rows))
    assert np.array_equal(x, original, equal_nan=True)  # a reader's array is never written
    assert np.isfinite(out).all()
    assert tally.first == (f"row {rows[0]}" if rows else None)
    if bad:
        with pytest.raises(UserError, match=rf"{nan} NaN and {inf} Inf values in {len(rows)} "
                                            rf"samples of the val split, first at row {rows[0]}"):
            failing = Tally("val", "error")
            failing.scan(original, lambda i: f"row {i}")
            failing.check()


def test_huge_finite_values_and_integer_images_pass():
    assert nonfinite_rows(np.full((4, 8), 3e38, np.float32)) is None  # the sum overflows
    assert nonfinite_rows(np.full((4, 8), 255, np.uint8)) is None
    assert nonfinite_rows(np.zeros((0, 8), np.float32)) is None


@settings(deadline=None, max_examples=15)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=3), seed=st.integers(0, 99),
       keep=st.floats(0.3, 1.0), bad=st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_the_pipeline_checks_every_window_of_any_split(sizes, seed, keep, bad):
    """Shards, a carved split, shuffled windows smaller than the split, rows carried from one
    window to the next: the error names a bad row of the split; `zero` leaves none."""
    from trainer.data.windows import PipelineOptions, windows
    from trainer.data.source import Source, View, array_shard

    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, 3, 3)).astype(np.float32) for n in sizes]
    total = sum(sizes)
    rows = np.sort(rng.choice(total, max(1, int(total * keep)), replace=False))
    flat_rows = [rows[at % len(rows)] for at in bad]  # the split's rows that get a NaN
    offsets = np.cumsum([0] + sizes)
    for r in flat_rows:
        k = int(np.searchsorted(offsets, r, side="right")) - 1
        xs[k][r - offsets[k], 0, 1] = np.nan
    view = View(Source([array_shard(x, np.zeros(len(x)), f"s{k}.npz") for k, x in enumerate(xs)]),
                rows)
    named = {f"row {r - offsets[k]} of s{k}.npz" for r in flat_rows
             for k in [int(np.searchsorted(offsets, r, side="right")) - 1]}
    opts = PipelineOptions(batch_size=2, shuffle=True, seed=seed, window=4, block=3)
    with pytest.raises(UserError, match=r"NaN and 0 Inf values in \d+ samples of s0.npz") as err:
        list(windows(view, view.labels, opts, 0))
    assert str(err.value).split("first at ")[1].split(",")[0] in named
    tally = Tally("train", "zero")
    zero = dataclasses.replace(opts, nonfinite="zero")
    seen = [x.copy() for x, _ in windows(view, view.labels, zero, 0, tally=tally)]
    assert sum(map(len, seen)) == len(view) and all(np.isfinite(x).all() for x in seen)
    assert (tally.nan, tally.samples) == (len(set(flat_rows)), len(set(flat_rows)))

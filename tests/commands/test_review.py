"""predict --review (the frames worth a look), convert --review (corrections back) and --smooth.

The model here is built by hand, not trained: it averages a frame and turns the brightness into
the probability of class 1 (p = sigmoid(K * (mean - 128))), so each frame's probability is set
by the brightness it is written with, and a test knows which frames are uncertain.
"""

from __future__ import annotations

import csv
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from trainer import convert, predict, review_ranking, smoothing
from trainer.predict import Prediction
from trainer.predict import command as predict_command

from conftest import error_line, write_video

SIZE, GAIN, MIDDLE = 16, 0.08, 128.0


def _brightness_model(path: str) -> str:
    from trainer.kerasflavor import keras
    from trainer.outputs import modelfile

    inputs = keras.Input((SIZE, SIZE, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(2, activation="softmax")
    net = keras.Model(inputs, dense(mean))
    half = GAIN / 2  # softmax of (-h(m - c), h(m - c)) = sigmoid(2h(m - c)) for class 1
    dense.set_weights([np.array([[-half, half]]), np.array([half * MIDDLE, -half * MIDDLE])])
    modelfile.save(net, path, {"task": "classification", "class_names": ["0", "1"],
                               "input_shape": [SIZE, SIZE, 1], "num_outputs": 2})
    return path


def _video(path, levels) -> str:
    frames = np.repeat(np.asarray(levels, np.uint8)[:, None, None, None], SIZE, 1)
    return write_video(path, np.broadcast_to(frames, (len(levels), SIZE, SIZE, 3)).copy())


# Frames: dark (class 0, sure) or bright (class 1, sure); a few near the middle (unsure) and a
# one-frame bright flip inside a dark stretch.
UNSURE = {7: 126, 19: 131, 33: 124}
FLIP = 45
LEVELS = [40] * 12 + [220] * 14 + [40] * 30
for _f, _v in UNSURE.items():
    LEVELS[_f] = _v
LEVELS[FLIP] = 220


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    model = _brightness_model(str(root / "model.h5"))
    video = _video(root / "whisker 1.mp4", LEVELS)
    other = _video(root / "whisker2.mp4", [40] * 6 + [129] + [220] * 5)
    return SimpleNamespace(root=root, model=model, video=video, other=other)


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _review(setup, out, *extra):
    args = ["--model", setup.model, setup.video, setup.other, "--csv", str(out / "p.csv"),
            "--mat", str(out / "p.mat"), "--review", "6", "--review_out", str(out / "review"),
            "--batch_size", "8", *extra]
    assert predict_command.main(args) == 0
    return _rows(out / "review" / "review.csv"), _rows(out / "p.csv")


def test_the_least_certain_frames_come_first_and_matlab_indexes_them(setup, tmp_path, capsys):
    picked, everything = _review(setup, tmp_path)
    assert list(picked[0]) == ["input", "frame", "predicted", "probability", "score", "reason"]
    scores = [float(r["score"]) for r in picked]
    assert scores == sorted(scores, reverse=True) and len(picked) == 6
    # No frame left out is less certain than the last one picked (margin or flip in time).
    chosen = {(r["input"], int(r["frame"])) for r in picked}
    for row in everything:
        p1 = float(row["p_1"])
        if (row["input"], int(row["frame"])) not in chosen:
            assert 1 - abs(2 * p1 - 1) <= scores[-1] + 1e-6, row
    # Frame numbers as in predict's CSV: the same probability for the same frame.
    by_frame = {(r["input"], r["frame"]): r for r in everything}
    for r in picked:
        assert abs(float(by_frame[(r["input"], r["frame"])]["probability"])
                   - float(r["probability"])) < 1e-5
    ours = {int(r["frame"]) for r in picked if r["input"] == setup.video}
    assert set(UNSURE) | {FLIP} <= ours
    flip = next(r for r in picked if r["input"] == setup.video and int(r["frame"]) == FLIP)
    assert flip["reason"].startswith("disagrees with 4 of 4 neighbours")

    # review.mat: MATLAB's frames(:, :, m) for each row's m is the picked frame.
    mat = scipy.io.loadmat(tmp_path / "review" / "review.mat")
    assert sorted(k for k in mat if not k.startswith("__")) == ["whisker2", "whisker_1"]
    rows = mat["whisker_1"]
    assert rows.dtype == np.float64 and rows.shape == (len(ours), 2)
    frames = np.stack(list(predict.read_video(setup.video, (SIZE, SIZE, 1))))
    for m, label in rows:
        assert int(m) - 1 in ours
        assert abs(frames[int(m) - 1].mean() - LEVELS[int(m) - 1]) < 4
        assert label == float(by_frame[(setup.video, str(int(m) - 1))]["predicted"])
    sheets = sorted(os.listdir(tmp_path / "review"))
    assert sheets == ["review.csv", "review.mat", "sheet-001.png"]
    assert "6 frames picked for review" in capsys.readouterr().err


def test_the_review_is_deterministic_and_random_is_a_baseline(setup, tmp_path):
    first, _ = _review(setup, tmp_path / "a")
    again, _ = _review(setup, tmp_path / "b")
    assert first == again
    assert (open(tmp_path / "a" / "review" / "sheet-001.png", "rb").read()
            == open(tmp_path / "b" / "review" / "sheet-001.png", "rb").read())
    mats = [scipy.io.loadmat(tmp_path / k / "review" / "review.mat") for k in "ab"]
    for name in ("whisker_1", "whisker2"):  # (the header holds the time it was written)
        np.testing.assert_array_equal(mats[0][name], mats[1][name])
    randomly, _ = _review(setup, tmp_path / "c", "--review_by", "random")
    assert {r["reason"] for r in randomly} == {"random"}
    assert randomly == _review(setup, tmp_path / "d", "--review_by", "random")[0]


def _stream(rng, videos: int, frames: int) -> list[Prediction]:
    out = []
    for v in range(videos):
        p1 = rng.uniform(0, 1, frames)
        for t, p in enumerate(p1):
            k = int(p > 0.5)
            out.append(Prediction(f"v{v}.mp4", t, [str(k), max(p, 1 - p), 1 - p, p]))
    return out


def _brute_force(stream: list[Prediction], count: int, window: int) -> list[tuple]:
    scored = []
    for i, p in enumerate(stream):
        same = [q for q in stream if q.input == p.input and q is not p
                and abs(q.frame - p.frame) <= window]
        score = 1 - abs(p.values[2] - p.values[3])
        if same:
            score = max(score, sum(q.values[0] != p.values[0] for q in same) / len(same))
        scored.append((-score, i, (p.input, p.frame)))
    return [key for _, _, key in sorted(scored)[:count]]


@pytest.mark.parametrize("seed", range(4))
def test_the_streaming_ranking_equals_a_full_sort_in_state_bounded_by_n(seed):
    rng = np.random.default_rng(seed)
    stream = _stream(rng, videos=3, frames=int(rng.integers(5, 60)))
    count = int(rng.integers(1, 12))
    ranker = review_ranking.Ranker(count)
    for p in stream:
        ranker.add(p)
        assert ranker.state_size <= count + 2 * review_ranking.WINDOW + 1
    assert [(p.input, p.frame) for p in ranker.finish()] == _brute_force(stream, count,
                                                                         review_ranking.WINDOW)


def test_a_long_video_keeps_the_state_bounded():
    ranker, peak = review_ranking.Ranker(20), 0
    for t in range(30_000):  # a long video's predictions, generated
        p = 0.5 + 0.5 * np.sin(t / 50.0)
        ranker.add(Prediction("long.mp4", t, [str(int(p > 0.5)), max(p, 1 - p), 1 - p, p]))
        peak = max(peak, ranker.state_size)
    assert peak <= 20 + 2 * review_ranking.WINDOW + 1
    assert len(ranker.finish()) == 20


def test_regression_rows_rank_by_their_spread_under_augmentation(tmp_path):
    from trainer.kerasflavor import keras
    from trainer.outputs import modelfile

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(1)
    net = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.zeros((64, 1))
    weights[3 * 8 + 3] = 1.0  # the value is pixel (3, 3): a shift changes it where it is an edge
    dense.set_weights([weights, np.zeros(1)])
    modelfile.save(net, str(tmp_path / "model.h5"), {"task": "regression", "input_shape": [8, 8, 1],
                                                     "num_outputs": 1})
    x = np.full((12, 8, 8, 1), 5.0, np.float32)
    sharp = {2: 50.0, 9: 20.0}  # rows whose value a one-pixel shift changes, most for row 2
    for row, value in sharp.items():
        x[row, 3, 3, 0] = value
    np.savez(tmp_path / "rows.npz", x=x, y=np.zeros(12))
    assert predict_command.main(["--model", str(tmp_path / "model.h5"), str(tmp_path / "rows.npz"),
                         "--review", "3", "--review_out", str(tmp_path / "review")]) == 0
    rows = _rows(tmp_path / "review" / "review.csv")
    assert [r["input"] for r in rows[:2]] == [f"{tmp_path / 'rows.npz'}[{k}]" for k in sharp]
    assert all(r["reason"].startswith("spread") and r["frame"] == "" for r in rows)
    assert float(rows[1]["score"]) > 0 == float(rows[2]["score"])
    assert sorted(os.listdir(tmp_path / "review")) == ["review.csv", "sheet-001.png"]


# ----------------------------------------------------------------------------------------------
# Corrections back into training data.


def _corrected(setup, tmp_path):
    picked, everything = _review(setup, tmp_path)
    ours = [r for r in picked if r["input"] == setup.video]
    ours[0]["predicted"] = str(1 - int(ours[0]["predicted"]))  # a person's correction
    ours[1]["predicted"] = ""  # uncuratable: left out
    fixed = tmp_path / "fixed.csv"
    with open(fixed, "w", newline="") as f:
        writer = csv.DictWriter(f, list(picked[0]))
        writer.writeheader()
        writer.writerows(ours)  # the other video's rows deleted: not reviewed
    return ours, everything, str(fixed)


def _shard(folder):
    with np.load(os.path.join(folder, "train-00000.npz")) as shard:
        return shard["x"], shard["y"], shard["group"]


@pytest.mark.parametrize("unreviewed", ["skip", "predicted"])
def test_only_the_reviewed_frames_corrections_are_added(setup, tmp_path, unreviewed):
    ours, everything, fixed = _corrected(setup, tmp_path)
    extra = ["--labels", str(tmp_path / "p.mat")] if unreviewed == "predicted" else []
    assert convert.main(["--video", setup.video, "--review", fixed, "--unreviewed", unreviewed,
                         *extra, "--out", str(tmp_path / "shards"), "--to", "npz", "--set",
                         "data.color=grey"]) == 0
    x, y, group = _shard(tmp_path / "shards")
    frames = np.stack(list(predict.read_video(setup.video, (SIZE, SIZE, 1))))
    expected = {} if unreviewed == "skip" else {
        int(r["frame"]): int(r["predicted"]) for r in everything if r["input"] == setup.video}
    expected.update({int(r["frame"]): int(r["predicted"]) for r in ours if r["predicted"]})
    expected.pop(int(ours[1]["frame"]), None)
    kept = sorted(expected)
    assert list(y) == [expected[f] for f in kept] and set(group) == {setup.video}
    np.testing.assert_array_equal(x, frames[kept])


def test_a_corrected_review_mat_maps_matlab_frames_back(setup, tmp_path):
    _review(setup, tmp_path)
    mat = scipy.io.loadmat(tmp_path / "review" / "review.mat")
    rows = mat["whisker_1"].copy()
    rows[:, 1] = 1 - rows[:, 1]  # every reviewed label flipped, in MATLAB
    scipy.io.savemat(tmp_path / "fixed.mat", {"whisker_1": rows})
    assert convert.main(["--video", setup.video, "--review", str(tmp_path / "fixed.mat"),
                         "--out", str(tmp_path / "shards"), "--to", "npz", "--set",
                         "data.color=grey"]) == 0
    x, y, _ = _shard(tmp_path / "shards")
    frames = np.stack(list(predict.read_video(setup.video, (SIZE, SIZE, 1))))
    np.testing.assert_array_equal(x, frames[rows[:, 0].astype(int) - 1])
    assert list(y) == list(rows[:, 1].astype(int))


def test_bad_review_files_are_one_line(setup, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"input,frame,predicted\n{setup.video},x,1\n")
    assert convert.main(["--video", setup.video, "--review", str(bad), "--out",
                         str(tmp_path / "o")]) == 2
    assert "bad.csv line 2" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")
    assert predict_command.main(["--model", setup.model, setup.video, "--review_out",
                         str(tmp_path / "r")]) == 2
    assert "without --review" in error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------------------------
# Smoothing over time.


def _flipped(rng, frames: int):
    """Labels in long runs (touches of 15-40 frames), with confident one-frame flips."""
    truth, t = [], 0
    while len(truth) < frames:
        truth += [t % 2] * int(rng.integers(15, 40))
        t += 1
    truth = np.array(truth[:frames])
    seen = truth.copy()
    flips = rng.choice(np.arange(3, frames - 3), size=frames // 25, replace=False)
    flips = flips[np.all(truth[flips[:, None] + np.arange(-2, 3)] == truth[flips, None], axis=1)]
    seen[flips] = 1 - seen[flips]
    p1 = np.where(seen == 1, rng.uniform(0.7, 0.95, frames), rng.uniform(0.05, 0.3, frames))
    return np.stack([1 - p1, p1], axis=1), truth, flips


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("spec", ["median:5", "hmm:0.02"])
def test_smoothing_removes_isolated_flips(seed, spec):
    probs, truth, flips = _flipped(np.random.default_rng(seed), 400)
    assert len(flips) and np.any(probs.argmax(1)[flips] != truth[flips])
    smoothed = smoothing.parse(spec)(probs)
    assert np.all(smoothed.argmax(1)[flips] == truth[flips])
    assert np.allclose(smoothed.sum(1), 1.0)
    # A run of a touch is kept: away from its edges, every frame keeps its label.
    edges = np.flatnonzero(np.diff(truth)) + 1
    near = np.any(np.abs(np.arange(len(truth))[:, None] - edges[None]) <= 2, axis=1)
    assert np.all(smoothed.argmax(1)[~near] == truth[~near])


def test_the_smoothed_label_obeys_the_models_threshold():
    # eval.threshold stored in the model calls a frame touch from p(touch) >= 0.25: smoothed,
    # the frames with p(touch) 0.3 stay touch, as they are unsmoothed; without it, argmax.
    p1 = [0.3] * 6 + [0.1] * 6
    frames = [Prediction("v.mp4", k, ["0", 0.0, 1 - p, p]) for k, p in enumerate(p1)]
    smoother = smoothing.parse("median:3")
    called = [r.values[0] for r in smoothing.apply(frames, smoother, ["0", "1"], 0.25)]
    assert called == ["1"] * 6 + ["0"] * 6
    assert {r.values[0] for r in smoothing.apply(frames, smoother, ["0", "1"])} == {"0"}


def test_the_fit_prefers_smoothing_where_flips_are_noise():
    rng = np.random.default_rng(7)
    videos = [_flipped(rng, 300) for _ in range(2)]
    switch, after = smoothing.fit([v[0] for v in videos], [v[1].astype(float) for v in videos])
    assert after > smoothing.accuracy([v[0] for v in videos], [v[1].astype(float) for v in videos])
    assert switch < 0.3


def test_predict_and_curation_smooth_a_flip_away(setup, tmp_path):
    truth = np.array([float(v > MIDDLE) for v in LEVELS])
    truth[FLIP] = 0.0  # the flip is the model's error
    scipy.io.savemat(tmp_path / "truth.mat", {"whisker_1": truth[:, None]})
    fit = tmp_path / "run" / "smoothing.json"
    os.makedirs(fit.parent)
    model = str(fit.parent / "model.h5")
    os.link(setup.model, model)
    assert smoothing.main(["--model", model, "--video", setup.video, "--labels",
                           str(tmp_path / "truth.mat")]) == 0
    assert json.loads(fit.read_text())["accuracy_after"] == 1.0
    for spec in ("median:3", "hmm"):
        out = tmp_path / spec.replace(":", "")
        assert predict_command.main(["--model", model, setup.video, "--csv", str(out / "p.csv"),
                             "--smooth", spec]) == 0
        rows = _rows(out / "p.csv")
        assert [int(r["predicted"]) for r in rows] == list(truth.astype(int)), spec
    assert predict_command.main(["--model", model, setup.video, "--out", str(tmp_path / "batch"),
                         "--smooth", "median:3"]) == 0
    rows = _rows(tmp_path / "batch" / "whisker 1.mp4.csv")
    assert [int(r["predicted"]) for r in rows] == list(truth.astype(int))


@pytest.mark.parametrize("spec,message", [("median:0", "window '0'"), ("box:3", "unknown smoother"),
                                          ("hmm:2", "between 0 and 1"),
                                          ("hmm", "no fitted switching probability")])
def test_bad_smoothing_specs_are_one_line(setup, tmp_path, capsys, spec, message):
    assert predict_command.main(["--model", setup.model, setup.video, "--csv", str(tmp_path / "p.csv"),
                         "--smooth", spec]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "p.csv").exists()

"""Probabilities a user can act on: ROC and precision-recall areas, the decision threshold that
predict, curation and serving apply, and temperature scaling stored inside the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.evaluation import calibration, curves, thresholds


def _cases(count=12):
    """Scores with ties (rounded) and labels, of several sizes and balances."""
    for seed in range(count):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 60))
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        y[0], y[-1] = True, False  # both sides present
        scores = np.round(rng.random(n) * 0.5 + 0.5 * y * rng.random(n), int(rng.integers(1, 3)))
        yield scores, y


def test_roc_auc_is_the_chance_a_positive_outscores_a_negative():
    for scores, y in _cases():
        pos, neg = scores[y], scores[~y]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        assert curves.roc_auc(scores, y) == pytest.approx(wins / (len(pos) * len(neg)))


def test_pr_auc_is_the_mean_precision_at_each_positive():
    for scores, y in _cases():
        # average precision: at each positive's score, the precision of calling all >= it
        precisions = [(y & (scores >= s)).sum() / (scores >= s).sum() for s in scores[y]]
        assert curves.pr_auc(scores, y) == pytest.approx(np.mean(precisions))


def test_multiclass_areas_are_one_vs_rest_per_class():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 50)
    y = rng.integers(0, 3, 50)
    got = curves.areas(p, y, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        assert got["per_class"][name]["roc_auc"] == pytest.approx(curves.roc_auc(p[:, k], y == k))
    assert got["roc_auc"] == pytest.approx(np.mean([v["roc_auc"]
                                                    for v in got["per_class"].values()]))


def test_threshold_rules_meet_their_targets_on_validation():
    for scores, y in _cases():
        candidates = np.unique(scores)

        def at(t):
            called = scores >= t
            tp = (called & y).sum()
            precision, recall = tp / max(called.sum(), 1), tp / y.sum()
            return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)

        best_f1 = max(at(t)[2] for t in candidates)
        assert at(thresholds.choose("f1", scores, y)["value"])[2] == pytest.approx(best_f1)
        for target in (0.5, 0.8):
            chosen = thresholds.choose(f"recall@{target}", scores, y)
            assert at(chosen["value"])[1] >= target
            ok = [t for t in candidates if at(t)[1] >= target]
            assert chosen["value"] == max(ok)  # the most precise way to get that recall
            chosen = thresholds.choose(f"precision@{target}", scores, y)
            ok = [t for t in candidates if at(t)[0] >= target]
            if ok:
                assert at(chosen["value"])[0] >= target and chosen["value"] == min(ok)
            else:
                assert chosen["value"] == 0.5 and "note" in chosen
    assert thresholds.choose(0.3, None, None) == {"rule": "value", "value": 0.3}


def test_a_bad_threshold_is_refused_naming_the_key():
    from trainer import config
    from trainer.errors import UserError

    for bad in ("f2", "precision@1.5", "recall", 1.5, -0.1):
        with pytest.raises(UserError, match="eval.threshold"):
            config.from_dict({"eval": {"threshold": bad}})


def test_temperature_scaling_lowers_the_calibration_error_of_an_overconfident_model():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        true_logits = rng.normal(0, 1.5, (2000, 3))
        y = np.array([rng.choice(3, p=p) for p in calibration.softmax(true_logits)])
        overconfident = 4.0 * true_logits
        t = calibration.fit_temperature(overconfident[:1000], y[:1000])
        assert t == pytest.approx(4.0, rel=0.2)
        for part in (slice(0, 1000), slice(1000, None)):  # fitted on one half, held out too
            before = curves.ece(calibration.softmax(overconfident[part]), y[part])
            after = curves.ece(calibration.softmax(overconfident[part], t), y[part])
            assert after < before / 2
        assert calibration.fit_temperature(overconfident[:1000], y[:1000]) == t  # deterministic


@pytest.mark.parametrize("ends_in_softmax", [False, True])
def test_the_temperature_travels_inside_the_model_file(tmp_path, ends_in_softmax):
    from trainer.kerasflavor import keras
    from trainer.outputs import modelfile

    inputs = keras.Input((2, 2, 1), name="image")
    logits = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    out = (keras.layers.Softmax()(logits) if ends_in_softmax
           else keras.layers.Activation("softmax", name="probabilities")(logits))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).normal(size=(5, 2, 2, 1)).astype("float32")
    z = keras.Model(inputs, logits).predict(x, verbose=0)
    scaled = calibration.with_temperature(model, 2.5)
    path = str(tmp_path / "model.h5")
    modelfile.save(scaled, path, {"task": "classification", "class_names": ["a", "b"],
                                  "input_shape": [2, 2, 1], "num_outputs": 2})
    back, _ = modelfile.load(path)
    assert calibration.temperature_of(back) == pytest.approx(2.5)
    np.testing.assert_allclose(back.predict(x, verbose=0), calibration.softmax(z, 2.5), atol=1e-5)


def _one_frame_model(tmp_path, threshold):
    """A two-class model.h5 that gives every input P(class 1) = 0.7, storing `threshold`."""
    from trainer.kerasflavor import keras
    from trainer.outputs import modelfile

    inputs = keras.Input((2, 2, 1), name="image")
    dense = keras.layers.Dense(2)
    out = keras.layers.Activation("softmax", name="probabilities")(
        dense(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, out)
    dense.set_weights([np.zeros((4, 2), "float32"), np.array([0.0, np.log(0.7 / 0.3)], "float32")])
    meta = {"task": "classification", "class_names": ["no_touch", "touch"],
            "input_shape": [2, 2, 1], "num_outputs": 2, "threshold": threshold}
    path = tmp_path / f"model-{threshold}.h5"
    modelfile.save(model, str(path), meta)
    return model, meta, str(path)


def test_predict_and_serving_apply_the_stored_threshold(tmp_path):
    from trainer import predict
    from trainer.outputs import servable
    from trainer.kerasflavor import tf

    frames = np.zeros((3, 2, 2, 1), "float32")
    np.save(tmp_path / "frames.npy", frames)
    for threshold, label in ((0.5, "touch"), (0.8, "no_touch"), (0.65, "touch"), (None, "touch")):
        model, meta, path = _one_frame_model(tmp_path, threshold)
        saved = predict.load(path)
        rows = list(predict.predict_files(saved, [str(tmp_path / "frames.npy")]))
        assert [r.values[0] for r in rows] == [label] * 3
        assert rows[0].values[1] == pytest.approx(0.7 if label == "touch" else 0.3, abs=1e-5)
        if threshold not in (0.5, 0.8):
            continue  # serving: one threshold each way is enough (an export takes seconds)
        folder = str(tmp_path / f"served-{threshold}")
        assert servable.export(model, meta, folder) is None
        served = tf.saved_model.load(folder).signatures["predict_arrays"](images=tf.constant(frames))
        assert [v.decode() for v in served["predicted"].numpy()] == [label] * 3


def test_a_model_file_with_a_bad_threshold_is_refused(tmp_path):
    from trainer import predict
    from trainer.errors import UserError

    _, _, path = _one_frame_model(tmp_path, 0.5)
    import h5py
    with h5py.File(path, "a") as f:
        meta = json.loads(f.attrs["trainer_metadata"])
        f.attrs["trainer_metadata"] = json.dumps({**meta, "threshold": "high"})
    with pytest.raises(UserError, match="threshold"):
        predict.load(path)


def test_a_run_chooses_stores_and_reports_its_threshold_and_calibration(tmp_path, blob_npz):
    from conftest import run_job
    from trainer.outputs import modelfile

    result, _ = run_job(tmp_path / "out", "data.format=npz", f"data.train={blob_npz}",
                        "model.name=tiny_cnn", "train.epochs=2", "eval.threshold=f1",
                        "eval.calibrate=temperature")
    metrics = json.loads(open(result.outputs["metrics"]).read())
    for split in ("val", "test"):
        assert 0 <= metrics[split]["roc_auc"] <= 1 and 0 <= metrics[split]["pr_auc"] <= 1
        assert set(metrics["calibration"]["ece_before"]) == {"val", "test"}
    assert metrics["threshold"]["rule"] == "f1"
    model, meta = modelfile.load(result.outputs["model"])
    assert meta["threshold"] == metrics["threshold"]["value"]
    assert calibration.temperature_of(model) == pytest.approx(metrics["calibration"]["temperature"])
    for name in ("roc.png", "pr.png", "reliability.png"):
        assert (tmp_path / "out" / "demo" / "plots" / name).stat().st_size > 0
    assert "Probabilities: ranking" in open(result.outputs["report"]).read()

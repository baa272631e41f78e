"""`data.frame_context: K`: frames t-K..t+K of a video as the channels of frame t's sample, the
edge frame repeated at a video's edges, the same in training, prediction and serving."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import blob_images, write_npz
from trainer.data import context


def _reference(frames: np.ndarray, t: int, k: int) -> np.ndarray:
    """Frame t's sample by the definition: frames t-K..t+K, clamped to the video, as channels."""
    picked = [frames[min(max(t + d, 0), len(frames) - 1)] for d in range(-k, k + 1)]
    return np.concatenate(picked, axis=-1)


def test_neighbours_stay_in_their_video_and_repeat_its_edge_frames():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n, k = int(rng.integers(1, 60)), int(rng.integers(0, 4))
        groups = rng.choice(["a", "b", "c"], n)  # interleaved videos: order within each counts
        around = context.neighbours(groups, k)
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            for t, row in enumerate(rows):
                want = [rows[min(max(t + d, 0), len(rows) - 1)] for d in range(-k, k + 1)]
                assert list(around[row]) == want


def test_predict_streams_the_same_stacks_as_the_definition_and_serving():
    from trainer.kerasflavor import tf

    for seed in range(6):
        rng = np.random.default_rng(seed)
        n, k = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        frames = rng.normal(size=(n, 3, 2, 2)).astype(np.float32)
        items = [("v.mp4", t, frames[t]) for t in range(n)]
        got = list(context.stream(iter(items), k))
        assert [(name, t) for name, t, _ in got] == [("v.mp4", t) for t in range(n)]
        for t, (_, _, image) in enumerate(got):
            np.testing.assert_array_equal(image, _reference(frames, t, k))
        served = context.stack_tf(tf.constant(frames), k).numpy()
        np.testing.assert_array_equal(served, np.stack([g[2] for g in got]))


@pytest.mark.parametrize("channels_first", [False, True])
def test_training_samples_are_stacked_frames_of_one_video(tmp_path, channels_first):
    from trainer import config
    from trainer.data import load_splits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 4, 2)).astype(np.float32)
    groups = np.repeat(["v0", "v1", "v2"], 10)
    stored = np.moveaxis(x, -1, 1) if channels_first else x
    write_npz(tmp_path / "data", "a.npz", stored, np.arange(30) % 2, group=groups)
    cfg = config.load(None, ["data.format=npz", f"data.train={tmp_path}/data/*.npz",
                             "data.frame_context=2", "data.validation_split=0.3",
                             "data.test_split=0", f"data.channels={'first' if channels_first else 'last'}"])
    splits = load_splits(cfg)
    assert splits.input_shape == (4, 4, 10)
    for part in splits.present.values():
        got = part.view.array() if not channels_first else np.moveaxis(
            np.concatenate([part.view.read_stored(b) for b in part.view.blocks(7)]), 1, -1)
        for position, row in enumerate(part.view.rows):
            video = x[groups == groups[row]]
            t = row - np.flatnonzero(groups == groups[row])[0]
            np.testing.assert_array_equal(got[position], _reference(video, t, 2))
        np.testing.assert_array_equal(part.view.take([len(part) - 1, 0]), got[[len(part) - 1, 0]])


def test_a_model_trained_with_context_predicts_and_serves_with_it(tmp_path):
    from conftest import run_job
    from trainer import predict
    from trainer.outputs import modelfile
    from trainer.kerasflavor import tf

    x, y, _ = blob_images(80, seed=2)
    x = x[..., None]  # (N, H, W, 1)
    write_npz(tmp_path / "data", "a.npz", x, y, group=np.repeat(["v0", "v1", "v2", "v3"], 20))
    result, _ = run_job(tmp_path / "out", "data.format=npz", f"data.train={tmp_path}/data/*.npz",
                        "data.frame_context=1", "model.name=tiny_cnn", "train.epochs=1",
                        "data.split_by=group", "output.saved_model=true", "output.plots=false",
                        "output.report=false")
    model, meta = modelfile.load(result.outputs["model"])
    assert meta["frame_context"] == 1 and meta["input_shape"][-1] == 3 * x.shape[-1]
    video = x[:6]
    np.save(tmp_path / "video.npy", video)
    saved = predict.load(result.outputs["model"])
    rows = list(predict.predict_files(saved, [str(tmp_path / "video.npy")]))
    stacked = np.stack([_reference(video, t, 1) for t in range(len(video))])
    expected = model.predict(stacked, verbose=0)
    np.testing.assert_allclose([r.values[2:] for r in rows], expected, atol=1e-5)
    served = tf.saved_model.load(result.outputs["saved_model"]).signatures["predict_arrays"](
        images=tf.constant(video))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)

"""Review and smoothing on held-out whisker-like videos (figures, not tests).

    python benchmarks/review.py [--dir /tmp/trainer-review] [--frames 600] [--review 100]

Writes synthetic whisker videos (MP4, 32x32): a whisker whisks back and forth from the left edge
(cycles of 40 to 90 frames, each of its own amplitude) and touches a pole when its tip comes
within reach, so a touch lasts 5 to 20 frames and its edges are where a frame is hard to call;
one frame in 20 is a flash of sensor noise, a frame on its own. Six videos are
converted (`trainer.convert --video`) and train `tiny_cnn` (`trainer.task`); two others, unseen,
fit the HMM's switching probability (`python -m trainer.smoothing`); four more, unseen, are the
test. Then it prints:
- errors found per 100 frames reviewed: the `--review` frames ranked by `trainer.review`
  against `--review_by random`, on the test videos (goal: at least 5 times random);
- the smoothing table on the test videos: frame accuracy and touch-onset error (each true
  onset's distance in frames to the nearest predicted one), with no smoothing, `median:5`,
  `hmm` with the fitted switching probability, and `hmm:0.01`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIZE = 32
POLE = (11, 25)  # row, column of the pole


def whisker_video(path: str, frames: int, seed: int, occlusion: float = 0.0) -> np.ndarray:
    """Write one video; returns its touch labels (0/1 per frame). With `occlusion` > 0, that
    share of frames starts an occlusion of 1 to 3 frames (something passes in front of the camera
    and hides all but the whisker's base): such a frame alone cannot tell a touch, its
    neighbours can."""
    import av

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    base = rng.integers(20, 70, (SIZE, SIZE)).astype(np.float64)
    phase, amplitude, touch = rng.uniform(0, 2 * np.pi), 0.45, []
    length = 26 + rng.uniform(-2, 2)
    occluded = 0  # frames of the current occlusion left
    with av.open(path, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for _ in range(frames):
            step = 2 * np.pi / rng.uniform(40, 90)  # a whisk cycle of 40 to 90 frames
            if (phase % (2 * np.pi)) > ((phase + step) % (2 * np.pi)):
                amplitude = rng.uniform(0.3, 0.55)  # a new whisk: some reach the pole, some not
            phase += step
            angle = -0.3 + amplitude * np.sin(phase)
            tip = (16 - length * np.sin(angle), length * np.cos(angle))
            dist = np.hypot(tip[0] - POLE[0], tip[1] - POLE[1])
            touch.append(int(dist < 4.0))
            # One frame in 20 is a glitch (a flash of sensor noise): a frame on its own.
            img = base + rng.normal(0, 70 if rng.uniform() < 0.05 else 12, base.shape)
            t = np.linspace(0, 1, 60)[:, None]
            for r, c in zip(16 + (tip[0] - 16) * t[:, 0], tip[1] * t[:, 0]):
                img[int(round(r)) % SIZE, int(round(c)) % SIZE] = 230
            img[(rows - POLE[0]) ** 2 + (cols - POLE[1]) ** 2 <= 4] = 180
            if occlusion and not occluded and rng.uniform() < occlusion:
                occluded = int(rng.integers(1, 4))
            if occluded:
                img[:, 3:] = 120 + rng.normal(0, 12, (SIZE, SIZE - 3))
                occluded -= 1
            rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return np.array(touch)


def make_videos(folder: str, names: list[str], frames: int, seed: int,
                occlusion: float = 0.0) -> dict[str, np.ndarray]:
    import scipy.io

    os.makedirs(folder, exist_ok=True)
    labels = {}
    for k, name in enumerate(names):
        path = os.path.join(folder, name + ".mp4")
        labels[path] = whisker_video(path, frames, seed + k, occlusion)
        scipy.io.savemat(os.path.join(folder, name + ".mat"),
                         {"touch": labels[path][:, None].astype(float)})
    return labels


def train(folder: str, videos: dict, epochs: int, settings: tuple = (), name: str = "whisker",
          convert_videos: bool = True) -> str:
    """Convert the videos to shards (unless `convert_videos` is false: done before) and train
    a run `name` on them, with `settings` (`--set` lines) added; returns the run folder."""
    from trainer import config, convert, job
    from trainer.runtime.platform import Platform

    if convert_videos:
        argv = ["--out", os.path.join(folder, "shards"), "--to", "npz", "--set", "data.color=grey"]
        for path in videos:
            argv += ["--video", path, "--labels", path[:-4] + ".mat"]
        assert convert.main(argv) == 0
    cfg = config.load(None, [f"name={name}", "model.name=tiny_cnn", "data.format=npz",
                             f"data.train={folder}/shards/train-*.npz", f"train.epochs={epochs}",
                             "train.learning_rate=0.003", "output.report=false",
                             "output.plots=false", "output.saved_model=false", *settings],
                      output_dir=os.path.join(folder, "runs"))
    return job.run(cfg, Platform()).run_dir


def onsets(labels: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.diff(np.concatenate([[0], labels])) == 1)


def onset_error(truth: np.ndarray, predicted: np.ndarray) -> list[float]:
    found = onsets(predicted)
    return [float(np.min(np.abs(found - t))) if len(found) else float(len(truth))
            for t in onsets(truth)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/trainer-review")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--review", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    start = time.perf_counter()

    from trainer import predict, review_ranking, smoothing

    train_videos = make_videos(os.path.join(args.dir, "train"),
                               [f"train{k}" for k in range(6)], args.frames, 100)
    val_videos = make_videos(os.path.join(args.dir, "val"), ["val0", "val1"], args.frames, 200)
    test_videos = make_videos(os.path.join(args.dir, "test"),
                              [f"test{k}" for k in range(4)], args.frames, 300)
    run = train(args.dir, train_videos, args.epochs)
    model = os.path.join(run, "model.h5")
    fit = smoothing.fit_videos(model, list(val_videos), [v[:-4] + ".mat" for v in val_videos],
                               None, None)
    saved = predict.load(model)
    predictions = list(predict.predict(saved, list(test_videos)))
    truth = {(p.input, p.frame): int(test_videos[p.input][p.frame]) for p in predictions}
    wrong = {k for k, p in zip(truth, predictions) if int(p.values[0]) != truth[k]}

    found = {}
    for by in review_ranking.RANKINGS:
        ranker = review_ranking.Ranker(args.review, by)
        for p in predictions:
            ranker.add(p)
        picks = ranker.finish()
        found[by] = 100.0 * sum((p.input, p.frame) in wrong for p in picks) / len(picks)
    frames = len(predictions)
    print(f"test: {len(test_videos)} held-out videos, {frames} frames, {len(wrong)} frames the "
          f"model gets wrong ({100.0 * len(wrong) / frames:.1f} per 100); model tiny_cnn, "
          f"{args.epochs} epochs on {len(train_videos)} other videos")
    print(f"errors found per 100 frames reviewed ({args.review} reviewed):")
    expected = 100.0 * len(wrong) / frames  # what random review finds on average
    print(f"  ranked (trainer.review):     {found['uncertainty']:6.1f}")
    print(f"  random (--review_by random): {found['random']:6.1f} (one draw; on average random "
          f"review finds the error rate, {expected:.1f})")
    if expected:
        print(f"  ranked / random: {found['uncertainty'] / expected:.1f}x the expected random "
              "rate (goal: at least 5x)")
    else:
        print("  ranked / random: no errors to find")

    print(f"\nsmoothing (switching probability {fit['switch_probability']:.3g} fitted on "
          f"{len(val_videos)} validation videos):")
    print("| smoothing | frame accuracy | touch-onset error, frames (mean) | onsets found/true |")
    print("| --- | ---: | ---: | ---: |")
    smoothers = {"none": None, "median:5": smoothing.parse("median:5"),
                 "hmm (fitted)": smoothing.Smoother("hmm", switch=fit["switch_probability"]),
                 "hmm:0.01": smoothing.parse("hmm:0.01")}
    for name, smoother in smoothers.items():
        right = total = 0
        errors, found_onsets, true_onsets = [], 0, 0
        for path, labels in test_videos.items():
            probs = np.array([p.values[2:] for p in predictions if p.input == path])
            label = (smoother(probs) if smoother else probs).argmax(axis=1)
            right += int(np.sum(label == labels))
            total += len(labels)
            errors += onset_error(labels, label)
            found_onsets += len(onsets(label))
            true_onsets += len(onsets(labels))
        print(f"| {name} | {right / total:.4f} | {np.mean(errors):.2f} | "
              f"{found_onsets}/{true_onsets} |")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

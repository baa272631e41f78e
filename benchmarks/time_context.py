"""Time as context on held-out whisker videos: `data.frame_context` against `predict --smooth`
(figures, not tests).

    python benchmarks/time_context.py [--dir /tmp/trainer-context] [--quick]

The videos are `benchmarks/review.py`'s whisker videos (a touch lasts 5 to 20 frames, one frame
in 20 is a flash of sensor noise) with occlusions added: one frame in 25 starts 1 to 3 frames
in which something passes in front of the camera and hides all but the whisker's base, so that
frame alone cannot tell a touch. Six videos train `tiny_cnn` through the job (`trainer.job`), once per
frame context K (`data.frame_context=K`; 0 is the plain model); two others fit each model's HMM
(`trainer.smoothing.fit_videos`, which writes `smoothing.json` beside the model); four more are
the test, predicted by `trainer.predict`'s `run` as the command does it (the context model's
frames stacked by predict itself), with and without `--smooth`. With `--threshold`, one more
plain model trains with `eval.threshold=f1` (chosen on its validation split).

Prints one table row per model and smoothing: frame accuracy, the touch class's F1, the
touch-onset error (each true onset's distance in frames to the nearest predicted one; a touch
missed counts the distance to the next onset predicted, so the mean mixes timing and misses),
the true onsets with a predicted one within 2 frames, and the onsets predicted against the true
ones; then the time taken and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import review  # noqa: E402  (benchmarks/review.py: the videos, the training, the onsets)


def scores(truth: np.ndarray, label: np.ndarray) -> tuple[int, int, int]:
    """Right frames, true touch frames called touch, frames called touch or truly touch."""
    return (int(np.sum(label == truth)), int(np.sum((label == 1) & (truth == 1))),
            int(np.sum(label == 1) + np.sum(truth == 1)))


def measure(model: str, videos: dict, smooth) -> dict:
    """Predict the videos as `python -m trainer.predict --model M VIDEOS --smooth S` does."""
    from trainer.predict import command

    with contextlib.redirect_stdout(io.StringIO()):  # the command's one line per frame
        results = command.run(model, list(videos), None, 256, smooth=smooth)
    right = total = hits = called = found = true = 0
    errors: list[float] = []
    for path, truth in videos.items():
        label = np.asarray(results.labels[path], dtype=np.int64)
        assert len(label) == len(truth), (path, len(label), len(truth))
        r, h, c = scores(truth, label)
        right, hits, called, total = right + r, hits + h, called + c, total + len(truth)
        errors += review.onset_error(truth, label)
        found += len(review.onsets(label))
        true += len(review.onsets(truth))
    return {"accuracy": right / total, "f1": 2 * hits / called if called else 1.0,
            "onset_mean": float(np.mean(errors)), "near": int(np.sum(np.array(errors) <= 2)),
            "found": found, "true": true}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/trainer-context",
                        help="a new folder for the videos, shards and runs")
    parser.add_argument("--frames", type=int, default=600, help="frames per video")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--contexts", default="1,2", help="the frame contexts K to train, besides 0")
    parser.add_argument("--occlusion", type=float, default=0.04,
                        help="the share of frames that start an occlusion of 1 to 3 frames")
    parser.add_argument("--threshold", action="store_true",
                        help="also train the plain model with eval.threshold=f1")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws other videos (their seeds + 1000 x this) and sets train.seed")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 120 frames per video, 1 epoch, K=1 only")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.epochs, args.contexts = 120, 1, "1"
    try:
        contexts = [0] + [int(k) for k in args.contexts.split(",") if k.strip()]
    except ValueError:
        print(f"error: --contexts={args.contexts}, expected whole numbers K >= 1, e.g. 1,2",
              file=sys.stderr)
        return 2
    if os.path.exists(args.dir) and os.listdir(args.dir):
        print(f"error: --dir={args.dir} is not empty, expected a new folder (runs of the same "
              "name in it would resume)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    from trainer import smoothing

    def videos(split: str, count: int, seed: int) -> dict:
        return review.make_videos(os.path.join(args.dir, split),
                                  [f"{split}{k}" for k in range(count)], args.frames,
                                  seed + 1000 * args.seed,
                                  args.occlusion)

    train_videos, val_videos, test_videos = videos("train", 6, 100), videos("val", 2, 200), \
        videos("test", 4, 300)
    models = [(f"K={k}" if k else "none", f"context{k}", (f"data.frame_context={k}",))
              for k in contexts]
    if args.threshold:
        models.append(("none, eval.threshold=f1", "threshold", ("eval.threshold=f1",)))
    rows, seconds = [], {}
    for n, (context, name, settings) in enumerate(models):
        began = time.perf_counter()
        run = review.train(args.dir, train_videos, args.epochs,
                           (*settings, f"train.seed={args.seed}"), name, n == 0)
        seconds[name] = time.perf_counter() - began
        model = os.path.join(run, "model.h5")
        if name == "threshold":  # the threshold the job chose on its validation split
            with open(os.path.join(run, "metrics.json")) as f:
                context += f" ({json.load(f)['threshold']['value']:.2f})"
        fit = smoothing.fit_videos(model, list(val_videos),
                                   [v[:-4] + ".mat" for v in val_videos], None, None)
        for smooth in (None, "median:5", "hmm"):
            shown = f"hmm (fitted, P = {fit['switch_probability']:.2g})" if smooth == "hmm" \
                else smooth or "none"
            rows.append((context, shown, measure(model, test_videos, smooth)))

    frames = sum(map(len, test_videos.values()))
    print(f"test: {len(test_videos)} held-out videos, {frames} frames; tiny_cnn, {args.epochs} "
          f"epochs on {len(train_videos)} other videos ({args.frames} frames each, occlusion "
          f"{args.occlusion}, seed {args.seed}); HMM fitted on {len(val_videos)} more")
    print("| frame context | smoothing | frame accuracy | touch F1 | touch-onset error, frames "
          "(mean) | true onsets found within 2 frames | onsets predicted/true |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for context, shown, m in rows:
        print(f"| {context} | {shown} | {m['accuracy']:.4f} | {m['f1']:.3f} | "
              f"{m['onset_mean']:.2f} | {m['near']}/{m['true']} | {m['found']}/{m['true']} |")
    print("training, s: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"({time.perf_counter() - start:.0f} s in all; load average "
          + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())

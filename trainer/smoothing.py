"""`predict --smooth`: a video's per-frame probabilities smoothed over time.

A whisker touch (seed 001) lasts many frames, so a label that flips for one frame in the middle
of a touch is almost always the model's error. Two smoothers:

- `median:K`: the median of each class's probability over a window of K frames centred on the
  frame (the edge frame repeated at a video's ends), renormalised to sum to 1; regression
  values are median-filtered alike.
- `hmm`: a hidden Markov model with one state per class, whose only parameter is the switching
  probability between frames (its cost, -log p, is what a label pays to change). The model's
  per-frame probabilities are the emissions; forward-backward gives each frame's posterior.
  `hmm:P` gives P itself; `hmm` reads it from `smoothing.json` beside the model, which
  `python -m trainer.smoothing --model RUN --video V --labels L.mat` fits on labelled videos
  that training did not see (the validation videos): it predicts them and picks the P, on a
  grid, under which the smoothed probabilities give their labels the least log loss.

Why a command, not training: training sees frames as samples (shards keep a frame's video as its
group, not its place in time), so the fit needs the videos themselves, in order, with labels.

A video's probabilities (C numbers per frame, not its frames) are held until its last frame,
then smoothed and passed on; other inputs (images, shards) pass through untouched.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.errors import UserError

FIT_FILE = "smoothing.json"
# Switching probabilities `fit` tries: one switch per 10,000 frames to one per 3.
GRID = tuple(float(p) for p in np.logspace(-4, np.log10(0.3), 16))
SPEC_HELP = ("median:K (a K-frame median window), hmm:P (switching probability P per frame) or "
             f"hmm (P from {FIT_FILE} beside the model, written by python -m trainer.smoothing)")


@dataclass(frozen=True)
class Smoother:
    """How a video's probabilities are smoothed: `kind` median (`window` frames) or hmm
    (`switch` probability per frame)."""

    kind: str
    window: int = 1
    switch: float = 0.0

    def __str__(self) -> str:
        return f"median:{self.window}" if self.kind == "median" else f"hmm:{self.switch:.3g}"

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(T, C) probabilities (or regression values) -> the smoothed (T, C)."""
        if self.kind == "median":
            return median(values, self.window)
        return hmm(values, self.switch)


def median(values: np.ndarray, window: int) -> np.ndarray:
    """Each column median-filtered over `window` frames (the edge frame repeated); for
    probabilities (rows summing to 1) the rows are renormalised."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    half = window // 2
    padded = np.concatenate([np.repeat(values[:1], half, 0), values,
                             np.repeat(values[-1:], window - 1 - half, 0)])
    out = np.median(np.lib.stride_tricks.sliding_window_view(padded, window, axis=0), axis=-1)
    sums = values.sum(axis=1)
    if values.shape[1] > 1 and np.allclose(sums, 1.0, atol=1e-4) and np.all(values >= 0):
        out = out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
    return out


def hmm(probs: np.ndarray, switch: float) -> np.ndarray:
    """Posterior class probabilities of a C-state HMM (stay 1-`switch`, move to each other state
    `switch`/(C-1)) whose emissions are `probs`, by scaled forward-backward."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-9, None)
    frames, states = probs.shape
    if frames == 0 or states < 2:
        return probs
    trans = np.full((states, states), switch / (states - 1))
    np.fill_diagonal(trans, 1.0 - switch)
    alpha = np.empty_like(probs)
    a = probs[0] / probs[0].sum()
    alpha[0] = a
    for t in range(1, frames):
        a = (a @ trans) * probs[t]
        a /= a.sum()
        alpha[t] = a
    post = np.empty_like(probs)
    post[-1] = alpha[-1]
    b = np.ones(states)
    for t in range(frames - 2, -1, -1):
        b = trans @ (probs[t + 1] * b)
        b /= b.sum()
        p = alpha[t] * b
        post[t] = p / p.sum()
    return post


def parse(spec: str, model_path: Optional[str] = None) -> Smoother:
    """`--smooth`'s value; `hmm` alone reads the fitted P beside `model_path`."""
    kind, _, arg = spec.partition(":")
    bad = f"--smooth={spec}, expected {SPEC_HELP}"
    if kind == "median":
        if not arg.isdigit() or int(arg) < 1:
            raise UserError(f"window {arg!r} is not a whole number of frames of at least 1, {bad}")
        return Smoother("median", window=int(arg))
    if kind != "hmm":
        raise UserError(f"unknown smoother {kind!r}, {bad}")
    if arg:
        try:
            switch = float(arg)
        except ValueError:
            switch = -1.0
        if not 0.0 < switch < 1.0:
            raise UserError(f"switching probability {arg!r} is not between 0 and 1, {bad}")
        return Smoother("hmm", switch=switch)
    return Smoother("hmm", switch=read_fit(fit_path(model_path or "")))


def fit_path(model_path: str) -> str:
    """Where the fitted switching probability lives: `smoothing.json` beside `model.h5`."""
    folder = model_path.rsplit("/", 1)[0] if "/" in model_path else "."
    return storage.join(folder, FIT_FILE)


def read_fit(path: str) -> float:
    if not storage.exists(path):
        raise UserError(f"no fitted switching probability, {path}, expected `python -m "
                        "trainer.smoothing --model RUN --video V --labels L.mat` run first on "
                        "labelled videos training did not see (or --smooth hmm:P)")
    try:
        switch = float(json.loads(storage.read_text(path))["switch_probability"])
    except (ValueError, KeyError, TypeError):
        switch = -1.0
    if not 0.0 < switch < 1.0:
        raise UserError(f"no switching probability between 0 and 1, {path}, expected the JSON "
                        "that python -m trainer.smoothing writes")
    return switch


def check(smoother: Smoother, classification: bool) -> None:
    if smoother.kind == "hmm" and not classification:
        raise UserError("--smooth=hmm with a regression model, command line, expected a "
                        "classification model (or --smooth median:K)")


def smooth(predictions: Iterable, smoother: Smoother, class_names: Optional[Sequence[str]],
           threshold: Optional[float] = None) -> Iterator:
    """The predictions with each video's values smoothed over its frames (see the module
    docstring); other inputs pass through as they come. A two-class model's `threshold`
    (`eval.threshold`) calls the smoothed label as it calls an unsmoothed one."""
    from trainer.evaluation import thresholds
    from trainer.predict import Prediction

    held: list = []

    def flush() -> Iterator:
        if not held:
            return
        if class_names:
            values = smoother(np.array([p.values[2:] for p in held]))
            k = thresholds.decide(values, threshold)
            rows = [[class_names[c], float(v[c]), *map(float, v)] for c, v in zip(k, values)]
        else:
            rows = smoother(np.array([p.values for p in held])).tolist()
        for p, row in zip(held, rows):
            yield Prediction(p.input, p.frame, row, p.spread)
        held.clear()

    for prediction in predictions:
        if held and (prediction.frame is None or prediction.input != held[0].input):
            yield from flush()
        if prediction.frame is None:
            yield prediction
        else:
            held.append(prediction)
    yield from flush()


# ----------------------------------------------------------------------------------------------
# Fitting the switching probability on labelled videos.


def accuracy(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             smoother: Optional[Smoother] = None) -> float:
    """Frame accuracy over videos (label NaN: frame left out), smoothed or not."""
    right = total = 0
    for p, y in zip(probs, labels):
        pred = (smoother(p) if smoother else p).argmax(axis=1)
        keep = np.isfinite(y)
        right += int(np.sum(pred[keep] == y[keep]))
        total += int(keep.sum())
    return right / max(total, 1)


def log_loss(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             smoother: Optional[Smoother] = None) -> float:
    """Mean -log of the (smoothed) probability of each frame's true class (NaN: left out)."""
    total, count = 0.0, 0
    for p, y in zip(probs, labels):
        p = smoother(p) if smoother else p
        keep = np.isfinite(y)
        picked = p[np.flatnonzero(keep), y[keep].astype(int)]
        total += float(-np.log(np.clip(picked, 1e-9, 1.0)).sum())
        count += int(keep.sum())
    return total / max(count, 1)


def fit(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[float, float]:
    """The switching probability of `GRID` under which the smoothed probabilities give the
    labelled frames (class indices per frame) the least log loss: the likelihood fit of the
    HMM's one parameter, which, unlike accuracy, also weighs how sure the smoothed frames are.
    Returns it and the frame accuracy it gives."""
    losses = {switch: log_loss(probs, labels, Smoother("hmm", switch=switch)) for switch in GRID}
    switch = min(GRID, key=lambda s: (losses[s], -s))
    return switch, accuracy(probs, labels, Smoother("hmm", switch=switch))


FLAGS = cli.new_flags()
flags.DEFINE_string("model", None, "model.h5 (or its run folder) whose predictions are smoothed.",
                    flag_values=FLAGS)
flags.DEFINE_multi_string("video", [], "A labelled video file training did not see (repeat).",
                          flag_values=FLAGS)
flags.DEFINE_multi_string("labels", [], "MATLAB .mat file of the videos' labels, once for all or "
                          "once per --video, as trainer.convert --labels reads them.",
                          flag_values=FLAGS)
flags.DEFINE_string("labels_key", None, "Variable in --labels holding the labels.",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, f"File to write the fit to, local or gs:// (default: {FIT_FILE} "
                    "beside the model, where predict --smooth hmm reads it).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 256, "Frames per prediction batch.", lower_bound=1,
                     flag_values=FLAGS)


def fit_videos(model: str, videos: Sequence[str], labels: Sequence[str],
               labels_key: Optional[str], out: Optional[str], batch_size: int = 256) -> dict:
    """Predict the labelled videos, fit the switching probability, write it as JSON; returns it."""
    from trainer import predict
    from trainer.data import video

    model_path = predict.model_file(model)
    out = out or fit_path(model_path)
    predict.check_output_path(out, "out")
    segments = video.label_segments(videos, labels, labels_key)
    saved = predict.load(model_path)
    if not saved.class_names:
        raise UserError(f"a regression model, --model={model}, expected a classification model "
                        "(the HMM has one state per class)")
    probs, truth = [], []
    for paths, vector, labels_path in segments:
        rows = [p.values[2:] for p in predict.predict_files(saved, paths, batch_size)]
        if len(rows) != len(vector):
            raise UserError(f"{len(vector)} labels but {len(rows)} frames, {labels_path}, "
                            f"expected one label per frame of {', '.join(paths)}")
        index = {name: k for k, name in enumerate(saved.class_names)}
        y = np.array([index.get(_class_name(v), np.nan) if np.isfinite(v) else np.nan
                      for v in vector], dtype=np.float64)
        probs.append(np.array(rows))
        truth.append(y)
    switch, after = fit(probs, truth)
    result = {"switch_probability": switch, "videos": list(videos),
              "frames": int(sum(np.isfinite(y).sum() for y in truth)),
              "accuracy_before": accuracy(probs, truth), "accuracy_after": after}
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, FIT_FILE)
        with open(local, "w") as f:
            json.dump(result, f, indent=2)
        storage.put_file(local, out)
    print(f"switching probability {switch:.3g}: frame accuracy {result['accuracy_before']:.4f} "
          f"-> {after:.4f} on {result['frames']} frames, written to {out}", file=sys.stderr)
    return result


def _class_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fit_from_flags(args: list[str]) -> int:
    if not FLAGS.model or not FLAGS.video or not FLAGS.labels:
        raise UserError("missing --model, --video or --labels, command line, expected a model "
                        "and labelled videos it was not trained on")
    fit_videos(FLAGS.model, FLAGS.video, FLAGS.labels, FLAGS.labels_key, FLAGS.out,
               FLAGS.batch_size)
    return 0


main = cli.Command(_fit_from_flags, FLAGS)

if __name__ == "__main__":
    main.run()


def for_model(spec: Optional[str], model_path: str, saved) -> Optional[Smoother]:
    """`--smooth` for this model (None without it)."""
    if not spec:
        return None
    smoother = parse(spec, model_path)
    check(smoother, bool(saved.class_names))
    return smoother


def apply(predictions: Iterable, smoother: Optional[Smoother],
          class_names: Optional[Sequence[str]], threshold: Optional[float] = None) -> Iterable:
    return smooth(predictions, smoother, class_names, threshold) if smoother else predictions

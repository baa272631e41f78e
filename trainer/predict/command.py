"""`python -m trainer.predict --model MODEL INPUTS... [--csv OUT.csv] [--mat OUT.mat]`: use a saved model.

Seeds 000 and 004 ended with a hand-written cell that loads the model, rescales a new image and
looks up the class name. None of that is needed here: the standardisation is a layer inside
`model.h5` and the class names travel in its `trainer_metadata`, so the model file alone is
enough. Inputs are image files, videos, folders of them, or `.npz`/`.npy` shards, local or `gs://`.
Image files go through training's own decoder (`trainer.data.images`) to the model's input shape,
so a file gives the model the values it was trained on (16-bit ones included); video frames are
decoded as `trainer.convert --video` decodes them (`trainer.data.video.decode_frames`), and
`--mat` writes each video's per-frame labels in the layout `trainer.convert --labels` reads
(seed 001's curation of new videos).
Inputs are read one at a time and predicted in batches, so a large input never sits in memory
whole: a video costs one batch of frames, however long it is. Every input (every frame of a
video) gives one line on stdout and one CSV row; a long video's progress goes to stderr.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from typing import Optional, Sequence

from absl import flags

from trainer import cli, curation, review, smoothing, storage
from trainer.data import video
from trainer.data.finite import Tally
from trainer.errors import UserError
from trainer.predict.batching import format_row, predict_files
from trainer.predict.inputs import input_files
from trainer.predict.model import SavedModel, load, model_file
from trainer.predict.readers import Progress
from trainer.predict.results import Results, check_output_path
from trainer.runtime import memory
from trainer.runtime.platform import detect


FLAGS = cli.new_flags()
flags.DEFINE_string("model", None, "model.h5 written by trainer.task (or its run folder): local "
                    "path or gs:// URL.", flag_values=FLAGS)
flags.DEFINE_string("csv", None, "Also write the predictions as CSV here (local or gs://).",
                    flag_values=FLAGS)
flags.DEFINE_string("mat", None, "Also write each video's per-frame labels to this MATLAB file, "
                    "one vector per video named after its file, as `trainer.convert --labels` "
                    "reads them (local or gs://).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Batch curation: write each input's results to this folder "
                    "(local or gs://), `<name>.csv` and, for a video, `<name>.mat`, each whole; "
                    "inputs whose results exist are skipped, and the replicas of a job "
                    "(CLUSTER_SPEC or TF_CONFIG) share the inputs out.", flag_values=FLAGS)
flags.DEFINE_float("poll_seconds", 30.0, "With --out on several replicas: how often replica 0, "
                   "which ends the job, checks whether the others' results are all there.",
                   lower_bound=0.0, flag_values=FLAGS)
MAX_BATCH = 1 << 16
flags.DEFINE_integer("batch_size", 256, "Images (or video frames) per prediction batch (at most "
                     f"{MAX_BATCH}, and what fits in memory).", lower_bound=1,
                     upper_bound=MAX_BATCH, flag_values=FLAGS)
flags.DEFINE_integer("progress_every", 1000, "A progress line on stderr every this many frames "
                     "of a video.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum("nonfinite", "error", ["error", "zero"], "What an input with NaN or Inf "
                  "values gets: `error` (stop with one line naming the input) or `zero` (replace "
                  "them with 0, as `data.nonfinite: zero` does in training, and say how many).",
                  flag_values=FLAGS)
flags.DEFINE_bool("allow_unsafe_model", False, "Load a model even if it has Lambda layers (Python "
                  "code stored in the file) or layer classes Keras does not know, importing the "
                  "builder module its metadata names. Only for model files you trust.",
                  flag_values=FLAGS)
flags.DEFINE_integer("review", None, "Also pick the N frames (or images) most likely wrong, for a "
                     "person to check: review.csv, review.mat and contact sheets in --review_out "
                     "(see trainer.review).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("review_out", None, "Folder for --review's files (local or gs://).",
                    flag_values=FLAGS)
flags.DEFINE_enum("review_by", "uncertainty", ["uncertainty", "random"], "How --review ranks: "
                  "where the model is least sure or its label flips in time (regression: its "
                  "spread under test-time augmentation), or at random (a baseline).",
                  flag_values=FLAGS)
flags.DEFINE_string("smooth", None, "Smooth each video's per-frame probabilities over time: "
                    "median:K, hmm:P or hmm (see trainer.smoothing).", flag_values=FLAGS)


def run(model_path: str, inputs: Sequence[str], csv_path: Optional[str], batch_size: int,
        allow_unsafe: bool = False, nonfinite: str = "error", mat_path: Optional[str] = None,
        progress_every: int = 1000, smooth: Optional[str] = None,
        review_options=None) -> "Results":
    """Predict and print; returns the results (their counts; the files are gone). Inputs with
    NaN or Inf stop it under `nonfinite="error"` (before the CSV is written); under `zero`
    stderr says how many values were replaced. Nothing is written unless every input was
    predicted."""
    for path, flag in ((csv_path, "csv"), (mat_path, "mat")):
        if path:
            check_output_path(path, flag)
    model_path = model_file(model_path)
    files = input_files(inputs)
    videos = [f for f in files if video.is_video(f)]
    if mat_path and not videos:
        raise UserError(f"no videos among the inputs, --mat={mat_path}, expected video files "
                        f"({', '.join(video.VIDEO_EXTENSIONS)}) to write per-frame labels for")
    if review_options:
        review.check_out(review_options)
    saved = load(model_path, allow_unsafe)
    check_batch(saved, batch_size)
    tally = Tally("the inputs", nonfinite, "--nonfinite")
    smoother = smoothing.for_model(smooth, model_path, saved)
    with tempfile.TemporaryDirectory() as tmp:
        results = Results(saved, tmp, frames=bool(videos))
        ranker = review.ranker(review_options, saved)
        predictions = predict_files(saved, files, batch_size, tally, Progress(progress_every),
                                    review.spread_for(ranker))
        for prediction in smoothing.apply(predictions, smoother, saved.class_names,
                                          saved.threshold):
            print(format_row(prediction, bool(saved.class_names)), flush=False)
            results.add(prediction)
            if ranker:
                ranker.add(prediction)
        results.publish(csv_path, mat_path)
        if ranker:
            results.reviewed = review.publish(ranker, review_options, saved, files)
    if tally.found:
        print(tally.summary(), file=sys.stderr)
    return results


def check_batch(saved: SavedModel, batch_size: int) -> None:
    """Refuse a `--batch_size` whose batch (held twice while stacked) would not fit in memory."""
    nbytes = 2 * batch_size * math.prod(int(d or 1) for d in saved.input_shape) * 4
    memory.check_fits(nbytes, f"a batch of {batch_size} inputs of shape {saved.input_shape} in "
                      "float32 (twice, while stacked)", f"--batch_size={batch_size}")


def predict_from_flags(inputs: list[str]) -> int:
    if not FLAGS.model:
        raise UserError("no model given, --model, expected the path or gs:// URL of a model.h5")
    if not inputs:
        raise UserError("no inputs given, command line, expected image files, videos, folders or "
                        ".npz/.npy shards after the flags")
    if FLAGS.out:
        print(curate_from_flags(inputs), file=sys.stderr)
        return 0
    results = run(FLAGS.model, inputs, FLAGS.csv, FLAGS.batch_size, FLAGS.allow_unsafe_model,
                  FLAGS.nonfinite, FLAGS.mat, FLAGS.progress_every, FLAGS.smooth,
                  review.options_from(FLAGS.review, FLAGS.review_out, FLAGS.review_by))
    written = [p for p in (FLAGS.csv, FLAGS.mat) if p]
    print(results.summary() + (f", written to {' and '.join(written)}" if written else ""),
          file=sys.stderr)
    if results.reviewed:
        print(results.reviewed, file=sys.stderr)
    return 0


def curate_from_flags(inputs: list[str]) -> str:
    """`--out`: this replica's share of the inputs, each input's results published whole."""
    curation.check_out(FLAGS.out, FLAGS.csv, FLAGS.mat)
    if FLAGS.review is not None:
        raise UserError(f"--review with --out={FLAGS.out}, command line, expected --review with "
                        "--csv/--mat (one run over the inputs), not with batch curation")
    model_path = model_file(FLAGS.model)
    files = input_files(inputs)
    platform = detect()
    saved = load(model_path, FLAGS.allow_unsafe_model)
    check_batch(saved, FLAGS.batch_size)
    tally = Tally("the inputs", FLAGS.nonfinite, "--nonfinite")
    summary = curation.curate(saved, files, FLAGS.out, platform.replica_index,
                              platform.replica_count, FLAGS.batch_size, tally,
                              Progress(FLAGS.progress_every), FLAGS.poll_seconds,
                              smoothing.for_model(FLAGS.smooth, model_path, saved))
    return summary + (f"; {tally.summary()}" if tally.found else "")


main = cli.Command(predict_from_flags, FLAGS, takes_args=True)

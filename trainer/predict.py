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

import csv
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, TextIO

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.data.finite import Tally
from trainer.errors import UserError
from trainer.data import context
from trainer.evaluation import thresholds

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

SHARD_EXTENSIONS = (".npz", ".npy")


@dataclass(frozen=True)
class SavedModel:
    """A loaded model with what its metadata says about inputs and outputs."""

    model: object
    task: str
    class_names: Optional[list[str]]
    input_shape: tuple[int, ...]  # (H, W, C)
    target_names: Optional[list[str]] = None  # regression: the targets' names, as trained
    threshold: Optional[float] = None  # two classes: the second's probability that calls it
    frame_context: int = 0  # data.frame_context: frames t-K..t+K stacked as channels

    @property
    def value_columns(self) -> list[str]:
        if self.class_names:
            return ["predicted", "probability", *[f"p_{c}" for c in self.class_names]]
        outputs = int(self.model.output_shape[-1])
        return self.target_names or [f"output_{k}" for k in range(outputs)]

    @property
    def columns(self) -> list[str]:
        return ["input", *self.value_columns]

    def label(self, values: list):
        """A prediction as one number for a MATLAB label vector: the class itself where the
        class names are numbers (seed 001's 0/1 contacts), else its index among the class
        names; the predicted values for regression."""
        if not self.class_names:
            return values
        try:
            return float(values[0])
        except ValueError:
            return float(self.class_names.index(values[0]))


def model_file(path: str) -> str:
    """The model file `path` names: itself, or its run directory's `model.h5`; it must exist."""
    if not path.endswith(".h5") and storage.exists(storage.join(path, "model.h5")):
        storage.confine(storage.join(path, "model.h5"), path, f" (--model={path})")
        path = storage.join(path, "model.h5")  # a run directory names its model
    if storage.is_local(path) and os.path.exists(path) and not os.path.isdir(path):
        storage.check_regular(path)  # a device or a pipe (behind a link too): says which
    if not storage.exists(path) or (storage.is_local(path) and not os.path.isfile(path)):
        raise UserError(f"file not found, --model={path}, expected a model.h5 written by "
                        "trainer.task")
    return path


def load(path: str, allow_unsafe: bool = False) -> SavedModel:
    """Load `model.h5` (or a run directory's) from a local path or a bucket.

    Models with code in them are refused unless `allow_unsafe` (see `trainer.outputs.modelfile`).
    """
    path = model_file(path)
    from trainer.outputs import modelfile  # TensorFlow, imported only once the inputs look right

    model, meta = modelfile.load(path, allow_unsafe)
    if "task" not in meta:
        raise UserError(f"model has no trainer_metadata, --model={path}, expected a model.h5 "
                        "written by trainer.task (it carries the task and class names)")
    shape = tuple(meta.get("input_shape") or model.input_shape[1:])
    return SavedModel(model, meta["task"], meta.get("class_names"), shape,
                      meta.get("target_names"), thresholds.from_metadata(meta, path),
                      context.from_metadata(meta, shape, path))


# ----------------------------------------------------------------------------------------------
# Inputs: (input, frame, image) triples, read lazily; `frame` is None but for video frames.


def input_files(inputs: Sequence[str]) -> list[str]:
    """Every image, video or shard named by the inputs; folders and globs are searched for them."""
    from trainer.data import images, litter, video

    found: list[str] = []
    for item in inputs:
        files = storage.expand(item, "input", skip=litter.is_litter)
        if storage.is_local(item) and not os.path.isabs(item):
            files = [os.path.relpath(f) for f in files]  # name inputs as the user did
        picked = [f for f in files if images.is_image(f) or video.is_video(f)
                  or f.lower().endswith(SHARD_EXTENSIONS)]
        # In a folder of x*.npy/y*.npy pairs the y files are labels, not images.
        names = {os.path.basename(f) for f in picked}
        picked = [f for f in picked if not (os.path.basename(f).startswith("y")
                                            and f.endswith(".npy")
                                            and "x" + os.path.basename(f)[1:] in names)]
        if not picked:
            raise UserError(f"no images, videos or shards, input={item}, expected image files "
                            f"({', '.join(images.IMAGE_EXTENSIONS)}), videos "
                            f"({', '.join(video.VIDEO_EXTENSIONS)}), a folder of them, or "
                            ".npz/.npy shards")
        found.extend(picked)
    return found


def _image_spec(path: str, shape: tuple[int, ...]):
    """What the image decoder makes of a file (or frame) for a model of input `shape`."""
    from trainer.data import images

    height, width, channels = shape
    if channels not in (1, 3):
        raise UserError(f"model takes {channels}-channel images, {path}, expected a model of "
                        "1 or 3 channels for image files and videos (use .npy/.npz shards)")
    return images.ImageSpec((height, width), channels)


def read_image(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """One image file as the model's input, decoded exactly as training decoded its images:
    the same decoder, to the height, width and channels the model was trained on."""
    from trainer.data import images

    return images.decode(storage.read_bytes(path, what="an image"), _image_spec(path, shape),
                         path)


def read_video(path: str, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A video's frames as the model's input, one at a time, decoded exactly as
    `trainer.convert --video` decodes the frames a model is trained on."""
    from trainer.data import video

    for frame in video.decode_frames(path, _image_spec(path, shape)):
        yield frame.astype(np.float32)


def read_shard(path: str, shape: tuple[int, ...], block: int = 256
               ) -> Iterator[tuple[str, np.ndarray]]:
    """Images of an .npz (array `x`) or .npy shard, a block of rows at a time; a single image in
    a file is allowed too. Headers are checked against the file's size before anything is read,
    and pickled objects are refused (`trainer.data.npyfile`)."""
    from trainer.data.npyfile import open_npy, open_npz

    arr = open_npy(path) if path.endswith(".npy") else open_npz(path, ("x",))["x"]
    if arr.dtype.kind not in "biuf":
        raise UserError(f"array of dtype {arr.dtype}, {path}, expected a numeric .npz/.npy array "
                        "of images")
    image_shapes = {tuple(shape), tuple(shape[:2])} if shape[2] == 1 else {tuple(shape)}
    first = (shape[2], *shape[:2])  # channel-first (C, H, W), as PyTorch keeps images
    if tuple(arr.shape) in image_shapes:
        yield f"{path}[0]", np.asarray(arr.load(), dtype=np.float32).reshape(shape)
        return
    channel_first = tuple(arr.shape[1:]) == first and first != tuple(shape)
    if not channel_first and tuple(arr.shape[1:]) not in image_shapes:
        raise UserError(f"images of shape {tuple(arr.shape[1:])}, {path}, expected {tuple(shape)} "
                        "as the model was trained on")
    read = arr.reader()
    for start in range(0, arr.shape[0], block):
        rows = read(start, min(arr.shape[0], start + block))
        if channel_first:
            rows = np.moveaxis(rows, 1, -1)
        for i, image in enumerate(rows):
            yield f"{path}[{start + i}]", np.asarray(image, dtype=np.float32).reshape(shape)


Item = tuple[str, Optional[int], np.ndarray]  # input, frame of a video (or None), image


def read_inputs(files: Sequence[str], shape: tuple[int, ...],
                progress: Optional["Progress"] = None) -> Iterator[Item]:
    from trainer.data import video

    for path in files:
        if path.lower().endswith(SHARD_EXTENSIONS):
            yield from ((name, None, image) for name, image in read_shard(path, shape))
        elif video.is_video(path):
            for frame, image in enumerate(read_video(path, shape)):
                if progress:
                    progress.frame(path, frame)
                yield path, frame, image
        else:
            yield path, None, read_image(path, shape)


class Progress:
    """A line on `stream` every `every` frames of a video: where it is, how fast it goes."""

    def __init__(self, every: int, stream: Optional[TextIO] = None):
        self.every, self.stream = every, stream
        self._started: dict[str, float] = {}
        self._total: dict[str, Optional[int]] = {}

    def frame(self, path: str, index: int) -> None:
        if index == 0:
            from trainer.data import video

            self._started[path], self._total[path] = time.monotonic(), video.frame_count(path)
        if index and index % self.every == 0:
            rate = index / max(time.monotonic() - self._started[path], 1e-9)
            total = f" of {self._total[path]}" if self._total[path] else ""
            print(f"progress: {path} frame {index}{total} ({rate:.0f} frames/s)",
                  file=self.stream or sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Prediction, batched.


@dataclass(frozen=True)
class Prediction:
    """One input's (or one video frame's) prediction: [class, probability, p_class...] or the
    regression values."""

    input: str
    frame: Optional[int]
    values: list

    @property
    def name(self) -> str:
        return self.input if self.frame is None else f"{self.input}[{self.frame}]"


def _batches(items: Iterable[Item], size: int) -> Iterator[tuple[list, np.ndarray]]:
    """At most `size` items held at once: the only frames or images in memory."""
    keys, images = [], []
    for name, frame, image in items:
        keys.append((name, frame))
        images.append(image)
        if len(keys) == size:
            yield keys, np.stack(images)
            keys, images = [], []
    if keys:
        yield keys, np.stack(images)


def predict(saved: SavedModel, inputs: Sequence[str], batch_size: int = 256,
            tally: Optional[Tally] = None, progress: Optional[Progress] = None
            ) -> Iterator[Prediction]:
    """One prediction per input (per frame of a video). An input with NaN or Inf stops
    prediction, naming it, or is zeroed (`tally`'s policy; default error) before the batch that
    holds it is predicted."""
    return predict_files(saved, input_files(inputs), batch_size, tally, progress)


def predict_files(saved: SavedModel, files: Sequence[str], batch_size: int = 256,
                  tally: Optional[Tally] = None, progress: Optional[Progress] = None
                  ) -> Iterator[Prediction]:
    """`predict` on files `input_files` has found already (not listed again)."""
    tally = tally or Tally("the inputs", "error", "--nonfinite")
    # Each frame read alone, then stacked with its neighbours (data.frame_context).
    shape = context.frame_shape(saved.input_shape, saved.frame_context)
    items = context.stream_files(files, lambda path: read_inputs([path], shape, progress),
                                 saved.frame_context)
    for keys, x in _batches(items, batch_size):
        x = tally.scan(x, lambda i: Prediction(*keys[i], []).name, writable=True)
        tally.check()
        out = np.asarray(saved.model.predict_on_batch(x), dtype=np.float64)
        labels = thresholds.decide(out, saved.threshold)
        for (name, frame), row, k in zip(keys, out, labels):
            if saved.class_names:
                k = int(k)
                values = [saved.class_names[k], float(row[k]), *map(float, row)]
            else:
                values = list(map(float, row))
            yield Prediction(name, frame, values)


def format_row(prediction: Prediction, classification: bool) -> str:
    values = prediction.values
    if classification:
        return f"{prediction.name}  {values[0]}  {values[1]:.4f}"
    return f"{prediction.name}  " + "  ".join(f"{v:.6g}" for v in values)


# ----------------------------------------------------------------------------------------------
# Results: a CSV and a MATLAB file, finished locally and published whole.


class Results:
    """The predictions of a run, written to local files as they come (frames' labels are kept
    as one number each per video for the .mat), then published whole with `publish`."""

    def __init__(self, saved: SavedModel, tmp: str, frames: bool):
        self.saved, self.frames, self.count = saved, frames, 0
        self.csv_path = os.path.join(tmp, "predictions.csv")
        self.mat_path = os.path.join(tmp, "labels.mat")
        self._file = open(self.csv_path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["input", "frame", *saved.value_columns] if frames
                              else saved.columns)
        self.labels: dict[str, list] = {}

    def add(self, prediction: Prediction) -> None:
        frame = [] if not self.frames else ["" if prediction.frame is None else prediction.frame]
        name = prediction.name if prediction.frame is None else prediction.input
        self._writer.writerow([name, *frame, *prediction.values])
        if prediction.frame is not None:
            self.labels.setdefault(prediction.input, []).append(self.saved.label(prediction.values))
        self.count += 1

    def summary(self) -> str:
        frames = sum(map(len, self.labels.values()))
        if not frames:
            return f"{self.count} inputs predicted"
        others = f" and {self.count - frames} other inputs" if self.count > frames else ""
        videos = f"{len(self.labels)} video{'s' if len(self.labels) > 1 else ''}"
        return f"{frames} frames of {videos}{others} predicted"

    def publish(self, csv_dest: Optional[str], mat_dest: Optional[str]) -> None:
        """Copy the finished files to their destinations, each whole (never streamed there)."""
        from trainer.data import video

        self._file.close()
        if mat_dest:
            video.write_mat(self.mat_path, {k: np.asarray(v) for k, v in self.labels.items()})
        # The CSV last: in a folder of results per input, an input whose CSV exists is done.
        for local, dest, flag in ((self.mat_path, mat_dest, "mat"),
                                  (self.csv_path, csv_dest, "csv")):
            if not dest:
                continue
            try:
                storage.put_file(local, dest)
            except OSError as exc:  # the folder changed, or the disk filled, while predicting
                raise UserError(f"cannot write the predictions ({exc.strerror or exc}), "
                                f"--{flag}={dest}, expected a file name in a folder this process "
                                "can write to") from None


def run(model_path: str, inputs: Sequence[str], csv_path: Optional[str], batch_size: int,
        allow_unsafe: bool = False, nonfinite: str = "error", mat_path: Optional[str] = None,
        progress_every: int = 1000) -> "Results":
    """Predict and print; returns the results (their counts; the files are gone). Inputs with
    NaN or Inf stop it under `nonfinite="error"` (before the CSV is written); under `zero`
    stderr says how many values were replaced. Nothing is written unless every input was
    predicted."""
    from trainer.data import video

    for path, flag in ((csv_path, "csv"), (mat_path, "mat")):
        if path:
            check_output_path(path, flag)
    model_path = model_file(model_path)
    files = input_files(inputs)
    videos = [f for f in files if video.is_video(f)]
    if mat_path and not videos:
        raise UserError(f"no videos among the inputs, --mat={mat_path}, expected video files "
                        f"({', '.join(video.VIDEO_EXTENSIONS)}) to write per-frame labels for")
    saved = load(model_path, allow_unsafe)
    check_batch(saved, batch_size)
    tally = Tally("the inputs", nonfinite, "--nonfinite")
    with tempfile.TemporaryDirectory() as tmp:
        results = Results(saved, tmp, frames=bool(videos))
        for prediction in predict_files(saved, files, batch_size, tally, Progress(progress_every)):
            print(format_row(prediction, bool(saved.class_names)), flush=False)
            results.add(prediction)
        results.publish(csv_path, mat_path)
    if tally.found:
        print(tally.summary(), file=sys.stderr)
    return results


def check_batch(saved: SavedModel, batch_size: int) -> None:
    """Refuse a `--batch_size` whose batch (held twice while stacked) would not fit in memory."""
    from trainer.runtime import memory

    nbytes = 2 * batch_size * math.prod(int(d or 1) for d in saved.input_shape) * 4
    memory.check_fits(nbytes, f"a batch of {batch_size} inputs of shape {saved.input_shape} in "
                      "float32 (twice, while stacked)", f"--batch_size={batch_size}")


def check_output_path(path: str, flag: str = "csv") -> None:
    """Refuse a `--csv` (or `--mat`) the predictions could not be written to, before any is
    made: a folder, a path under a file, or a folder this process cannot write to (probed by
    writing there). A bucket's permissions show only when the file is uploaded."""
    expected = f"--{flag}={path}, expected a file name in a folder this process can write to"
    if path.endswith(("/", os.sep)) or (storage.is_local(path) and os.path.isdir(path)):
        raise UserError(f"path is a directory, {expected}")
    storage.check_output(path, f"--{flag}={path}")
    if not storage.is_local(path):
        return
    folder = os.path.dirname(os.path.abspath(path.removeprefix("file://")))
    while not os.path.lexists(folder):  # the folders put_file will create: probe the first one up
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a directory, {expected}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write there ({exc.strerror or exc}), {expected}") from None


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
                  FLAGS.nonfinite, FLAGS.mat, FLAGS.progress_every)
    written = [p for p in (FLAGS.csv, FLAGS.mat) if p]
    print(results.summary() + (f", written to {' and '.join(written)}" if written else ""),
          file=sys.stderr)
    return 0


def curate_from_flags(inputs: list[str]) -> str:
    """`--out`: this replica's share of the inputs, each input's results published whole."""
    from trainer import curation
    from trainer.runtime.platform import detect

    curation.check_out(FLAGS.out, FLAGS.csv, FLAGS.mat)
    model_path = model_file(FLAGS.model)
    files = input_files(inputs)
    platform = detect()
    saved = load(model_path, FLAGS.allow_unsafe_model)
    check_batch(saved, FLAGS.batch_size)
    tally = Tally("the inputs", FLAGS.nonfinite, "--nonfinite")
    summary = curation.curate(saved, files, FLAGS.out, platform.replica_index,
                              platform.replica_count, FLAGS.batch_size, tally,
                              Progress(FLAGS.progress_every), FLAGS.poll_seconds)
    return summary + (f"; {tally.summary()}" if tally.found else "")


main = cli.Command(predict_from_flags, FLAGS, takes_args=True)

if __name__ == "__main__":
    main.run()

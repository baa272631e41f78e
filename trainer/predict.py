"""`python -m trainer.predict --model MODEL.h5 INPUTS... [--csv OUT.csv]`: use a saved model.

Seeds 000 and 004 ended with a hand-written cell that loads the model, rescales a new image and
looks up the class name. None of that is needed here: the standardisation is a layer inside
`model.h5` and the class names travel in its `trainer_metadata`, so the model file alone is
enough. Inputs are image files, folders of them, or `.npz`/`.npy` shards, local or `gs://`.
Image files go through training's own decoder (`trainer.data.images`) to the model's input shape,
so a file gives the model the values it was trained on (16-bit ones included).
They are read one at a time and predicted in batches, so a large input never sits in memory
whole; every input gives one line on stdout (and one CSV row).
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.data.finite import Tally
from trainer.errors import UserError

FLAGS = cli.new_flags()
flags.DEFINE_string("model", None, "model.h5 written by trainer.task: local path or gs:// URL.",
                    flag_values=FLAGS)
flags.DEFINE_string("csv", None, "Also write the predictions as CSV here (local or gs://).",
                    flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 256, "Images per prediction batch.", lower_bound=1,
                     flag_values=FLAGS)
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

    @property
    def columns(self) -> list[str]:
        if self.class_names:
            return ["input", "predicted", "probability", *[f"p_{c}" for c in self.class_names]]
        outputs = int(self.model.output_shape[-1])
        return ["input", *(self.target_names or [f"output_{k}" for k in range(outputs)])]


def load(path: str, allow_unsafe: bool = False) -> SavedModel:
    """Load `model.h5` (or a run directory's) from a local path or a bucket.

    Models with code in them are refused unless `allow_unsafe` (see `trainer.outputs.modelfile`).
    """
    if not path.endswith(".h5") and storage.exists(storage.join(path, "model.h5")):
        path = storage.join(path, "model.h5")  # a run directory names its model
    if not storage.exists(path) or (storage.is_local(path) and not os.path.isfile(path)):
        raise UserError(f"file not found, --model={path}, expected a model.h5 written by "
                        "trainer.task")
    from trainer.outputs import modelfile  # TensorFlow, imported only once the inputs look right

    model, meta = modelfile.load(path, allow_unsafe)
    if "task" not in meta:
        raise UserError(f"model has no trainer_metadata, --model={path}, expected a model.h5 "
                        "written by trainer.task (it carries the task and class names)")
    shape = tuple(meta.get("input_shape") or model.input_shape[1:])
    return SavedModel(model, meta["task"], meta.get("class_names"), shape,
                      meta.get("target_names"))


# ----------------------------------------------------------------------------------------------
# Inputs: (name, image) pairs, read lazily.


def input_files(inputs: Sequence[str]) -> Iterator[str]:
    """Every image or shard named by the inputs; folders and globs are searched for both."""
    from trainer.data import images

    for item in inputs:
        files = storage.expand(item, "input")
        if storage.is_local(item) and not os.path.isabs(item):
            files = [os.path.relpath(f) for f in files]  # name inputs as the user did
        picked = [f for f in files if images.is_image(f) or f.lower().endswith(SHARD_EXTENSIONS)]
        # In a folder of x*.npy/y*.npy pairs the y files are labels, not images.
        names = {os.path.basename(f) for f in picked}
        picked = [f for f in picked if not (os.path.basename(f).startswith("y")
                                            and f.endswith(".npy")
                                            and "x" + os.path.basename(f)[1:] in names)]
        if not picked:
            raise UserError(f"no images or shards, input={item}, expected image files "
                            f"({', '.join(images.IMAGE_EXTENSIONS)}), a folder of them, or "
                            ".npz/.npy shards")
        yield from picked


def read_image(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """One image file as the model's input, decoded exactly as training decoded its images:
    the same decoder, to the height, width and channels the model was trained on."""
    from trainer.data import images

    height, width, channels = shape
    if channels not in (1, 3):
        raise UserError(f"model takes {channels}-channel images, {path}, expected a model of "
                        "1 or 3 channels for image files (use .npy/.npz shards)")
    return images.decode(storage.read_bytes(path), images.ImageSpec((height, width), channels),
                         path)


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


def read_inputs(inputs: Sequence[str], shape: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray]]:
    for path in input_files(inputs):
        if path.lower().endswith(SHARD_EXTENSIONS):
            yield from read_shard(path, shape)
        else:
            yield path, read_image(path, shape)


# ----------------------------------------------------------------------------------------------
# Prediction, batched.


def _batches(items: Iterable[tuple[str, np.ndarray]], size: int):
    names, images = [], []
    for name, image in items:
        names.append(name)
        images.append(image)
        if len(names) == size:
            yield names, np.stack(images)
            names, images = [], []
    if names:
        yield names, np.stack(images)


def predict(saved: SavedModel, inputs: Sequence[str], batch_size: int = 256,
            tally: Optional[Tally] = None) -> Iterator[list]:
    """One row per input: [name, class, probability, p_class...] or [name, value...]. An input
    with NaN or Inf stops prediction, naming it, or is zeroed (`tally`'s policy; default error)
    before the batch that holds it is predicted."""
    tally = tally or Tally("the inputs", "error", "--nonfinite")
    for names, x in _batches(read_inputs(inputs, saved.input_shape), batch_size):
        x = tally.scan(x, names.__getitem__, writable=True)
        tally.check()
        out = np.asarray(saved.model.predict_on_batch(x), dtype=np.float64)
        for name, row in zip(names, out):
            if saved.class_names:
                k = int(row.argmax())
                yield [name, saved.class_names[k], float(row[k]), *map(float, row)]
            else:
                yield [name, *map(float, row)]


def format_row(row: list, classification: bool) -> str:
    if classification:
        return f"{row[0]}  {row[1]}  {row[2]:.4f}"
    return f"{row[0]}  " + "  ".join(f"{v:.6g}" for v in row[1:])


def run(model_path: str, inputs: Sequence[str], csv_path: Optional[str], batch_size: int,
        allow_unsafe: bool = False, nonfinite: str = "error") -> int:
    """Predict and print; returns the number of inputs. Inputs with NaN or Inf stop it under
    `nonfinite="error"` (before the CSV is written); under `zero` stderr says how many values
    were replaced."""
    if csv_path:
        check_csv_path(csv_path)
    saved = load(model_path, allow_unsafe)
    tally = Tally("the inputs", nonfinite, "--nonfinite")
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        local_csv = os.path.join(tmp, "predictions.csv")
        with open(local_csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(saved.columns)
            for row in predict(saved, inputs, batch_size, tally):
                print(format_row(row, bool(saved.class_names)), flush=False)
                writer.writerow(row)
                count += 1
        if csv_path:
            try:
                storage.put_file(local_csv, csv_path)  # whole, never streamed into the bucket
            except OSError as exc:  # the folder changed, or the disk filled, while predicting
                raise UserError(f"cannot write the predictions ({exc.strerror or exc}), "
                                f"--csv={csv_path}, expected a file name in a folder this process "
                                "can write to") from None
    if tally.found:
        print(tally.summary(), file=sys.stderr)
    return count


def check_csv_path(path: str) -> None:
    """Refuse a `--csv` the predictions could not be written to, before any is made: a folder,
    a path under a file, or a folder this process cannot write to (probed by writing there).
    A bucket's permissions show only when the file is uploaded."""
    expected = f"--csv={path}, expected a file name in a folder this process can write to"
    if path.endswith(("/", os.sep)) or (storage.is_local(path) and os.path.isdir(path)):
        raise UserError(f"path is a directory, {expected}")
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
        raise UserError("no inputs given, command line, expected image files, folders or "
                        ".npz/.npy shards after the flags")
    count = run(FLAGS.model, inputs, FLAGS.csv, FLAGS.batch_size, FLAGS.allow_unsafe_model,
                FLAGS.nonfinite)
    print(f"{count} inputs predicted" + (f", written to {FLAGS.csv}" if FLAGS.csv else ""),
          file=sys.stderr)
    return 0


main = cli.Command(predict_from_flags, FLAGS, takes_args=True)

if __name__ == "__main__":
    main.run()

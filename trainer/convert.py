"""`python -m trainer.convert`: any supported layout -> TFRecord or npz shards plus a manifest.

    python -m trainer.convert --config my.yaml --out gs://bucket/shards --to tfrecord --shard_size 10000
    python -m trainer.convert --video a.mp4 --video b.mp4 --labels labels.mat --out shards/
    python -m trainer.convert --video a.mp4 --labels a.mat --video b.mp4 --labels b.mat --out shards/
    python -m trainer.convert --video new.mp4 --labels curated.mat --like shards/ --out shards2/

With `--config`, the config's data section is read exactly as training reads it (format, paths, row
ranges, carved splits) and each split is written as `<split>-NNNNN.<ext>`. With `--video`, the
frames of the videos, labelled by the .mat vector, become the `train` split, each frame's video
recorded as its group (so `data.split_by: group` keeps a video on one side); one `--labels` serves
all videos, or each video has its own, paired in order (`trainer.data.video.label_segments`);
frames keep their own size unless `data.image_size` asks for one, and a resize is said in one
line. `--like` takes the format, image size and colour of earlier shards or of a run, so the new
shards train together with the earlier ones. Groups of the input are
carried into the shards (`group` array or feature). Images are checked for NaN and Inf as
training checks them (`data.nonfinite`), and the manifest is strict JSON. Beside the shards, `manifest.json` gives counts,
shapes, dtypes, class names, groups per split and the training split's per-channel mean and std,
computed in the same streaming pass. Memory holds one block and one npz shard at most, whatever the
input's size. Each shard is finished locally and copied whole; on an error every file written so far
is removed, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from absl import flags

from trainer import cli, storage
from trainer.config import Config
from trainer.data import images
from trainer.data.stats import RunningStats
from trainer.errors import UserError

FLAGS = cli.new_flags()
cli.define_config_flags(FLAGS, "The YAML config file whose data section names the input.")
flags.DEFINE_string("out", None, "Output folder: local path, gs:// URL or /gcs/ path.",
                    flag_values=FLAGS)
flags.DEFINE_enum("to", "tfrecord", ["tfrecord", "npz"], "Shard format to write (default: "
                  "--like's, else tfrecord).", flag_values=FLAGS)
flags.DEFINE_integer("shard_size", 10000, "Samples per shard.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("gzip", False, "GZIP-compress TFRecord shards.", flag_values=FLAGS)
flags.DEFINE_multi_string("video", [], "A video file (repeat, in label order) instead of --config.",
                          flag_values=FLAGS)
flags.DEFINE_multi_string("labels", [], "MATLAB .mat file with one label per video frame: once "
                          "for all videos, or once per --video (paired in order).",
                          flag_values=FLAGS)
flags.DEFINE_string("labels_key", None, "Variable in --labels holding the labels (default: "
                    "the only one, or those named after the videos).", flag_values=FLAGS)
flags.DEFINE_string("like", None, "Earlier shards (their manifest.json or its folder) or a run "
                    "folder, read for their format, image size and colour: the new shards take "
                    "them, so that both train together.", flag_values=FLAGS)
flags.DEFINE_string("review", None, "A corrected review.csv or review.mat (predict --review): "
                    "its frames' labels replace the --labels ones.", flag_values=FLAGS)
flags.DEFINE_enum("unreviewed", "skip", ["skip", "predicted"], "With --review: the frames it "
                  "does not list are left out (skip) or keep their --labels (predicted).",
                  flag_values=FLAGS)


CHUNK = 256  # rows per read: the unit of streaming


Chunk = tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]  # images, labels, groups or None


class ShardWriter:
    """Cuts a stream of (x, y, groups) chunks into shards of `shard_size`, publishing each full one."""

    def __init__(self, out: str, split: str, to: str, shard_size: int, gz: bool, tmp: str,
                 published: list[str]):
        self.out, self.split, self.to, self.shard_size, self.gz = out, split, to, shard_size, gz
        self.tmp, self.published = tmp, published
        self.shards: list[dict] = []
        self._rows = 0
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._g: list[np.ndarray] = []
        self._tf = None

    def write(self, x: np.ndarray, y: np.ndarray, g: Optional[np.ndarray] = None) -> None:
        while len(x):
            room = self.shard_size - self._rows
            self._add(x[:room], y[:room], None if g is None else g[:room])
            x, y, g = x[room:], y[room:], None if g is None else g[room:]
            if self._rows == self.shard_size:
                self._finish()

    def close(self) -> None:
        if self._rows:
            self._finish()

    def _name(self) -> str:
        ext = {"npz": "npz", "tfrecord": "tfrecord.gz" if self.gz else "tfrecord"}[self.to]
        return f"{self.split}-{len(self.shards):05d}.{ext}"

    def _add(self, x: np.ndarray, y: np.ndarray, g: Optional[np.ndarray]) -> None:
        self._rows += len(x)
        if self.to == "npz":
            self._x.append(x)
            self._y.append(y)
            if g is not None:
                self._g.append(g)
            return
        from trainer.data import tfrecords

        if self._tf is None:
            self._tf = tfrecords.Writer(os.path.join(self.tmp, "shard"), compress=self.gz)
        for i, (image, label) in enumerate(zip(x, y)):
            self._tf.write(tfrecords.example(image, label, None if g is None else g[i]))

    def _finish(self) -> None:
        local = os.path.join(self.tmp, "shard")
        if self.to == "npz":
            groups = {"group": np.concatenate(self._g)} if self._g else {}
            with open(local, "wb") as f:
                np.savez(f, x=np.concatenate(self._x), y=np.concatenate(self._y), **groups)
            self._x, self._y, self._g = [], [], []
        else:
            self._tf.close()
            self._tf = None
        dest = storage.join(self.out, self._name())
        storage.put_file(local, dest)
        self.published.append(dest)
        os.unlink(local)
        self.shards.append({"file": self._name(), "count": self._rows})
        self._rows = 0


def _label_kind(y: np.ndarray) -> str:
    return {"i": "int64", "u": "int64", "b": "int64", "f": "float32"}.get(y.dtype.kind, "string")


def convert(splits: dict[str, Iterable[Chunk]], out: str, to: str,
            shard_size: int, gz: bool = False, source: str = "",
            like: Optional["Like"] = None) -> dict:
    """Write every split's chunks as shards plus `manifest.json`; returns the manifest. With
    `like`, samples of another shape than its shards' are refused before anything is written."""
    published: list[str] = []
    classes: set = set()
    manifest: dict = {"format": to, "compression": "gzip" if gz and to == "tfrecord" else None,
                      "source": source, "splits": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
            for split, chunks in splits.items():
                writer = ShardWriter(out, split, to, shard_size, gz, tmp, published)
                stats = RunningStats() if split == "train" else None
                groups: set[str] = set()
                for x, y, g in chunks:
                    x = x if x.ndim == 4 else x[..., np.newaxis]
                    manifest.setdefault("sample_shape", list(x.shape[1:]))
                    if like is not None and list(x.shape[1:]) != like.shape:
                        raise UserError(f"samples of shape {tuple(x.shape[1:])}, {source}, expected "
                                        f"{tuple(like.shape)} like the shards of --like={like.path}")
                    manifest.setdefault("dtype", x.dtype.name)
                    manifest.setdefault("label_dtype", _label_kind(y))
                    manifest.setdefault("label_shape", list(y.shape[1:]))
                    if y.ndim == 1 and y.dtype.kind in "iuUSb":
                        classes.update(y.tolist())
                    if stats is not None:
                        stats.update(x)
                    if g is not None:
                        groups.update(g.tolist())
                    writer.write(x, y, g)
                writer.close()
                entry = {"count": sum(s["count"] for s in writer.shards), "shards": writer.shards}
                if groups:
                    entry["groups"] = len(groups)
                if stats is not None and stats.count:
                    entry["mean"] = stats.mean.tolist()
                    entry["std"] = np.sqrt(stats.variance).tolist()
                manifest["splits"][split] = entry
            if classes:
                manifest["class_names"] = [str(v) for v in sorted(classes)]
            manifest_path = os.path.join(tmp, "manifest.json")
            try:
                text = json.dumps(manifest, indent=2, allow_nan=False)  # strict JSON only
            except ValueError:
                raise UserError(f"the training split's mean or std is not finite (values too large "
                                f"for float64?), {source}, expected finite statistics") from None
            with open(manifest_path, "w") as f:
                f.write(text)
            storage.put_file(manifest_path, storage.join(out, "manifest.json"))
    except BaseException:
        for path in published:
            storage.remove(path)
        raise
    return manifest


def config_splits(config: Config, notes: Optional[list[str]] = None
                  ) -> tuple[dict[str, Iterator], str]:
    """The config's splits, each streamed in file order in chunks of `CHUNK` rows, checked as
    training checks them (`checked`); what `data.nonfinite: zero` replaced goes to `notes`."""
    from trainer.data.dataset import split_views

    views, _, _ = split_views(config)
    notes = [] if notes is None else notes
    return ({k: checked(views[k], k, config.data.nonfinite, notes)
             for k in ("train", "val", "test") if k in views},
            views["train"].name)  # a split the config leaves out (a fraction of 0) is not written


def checked(view, split: str, policy: str, notes: list[str]) -> Iterator[Chunk]:
    """The view's chunks, NaN and Inf counted as training counts them (`data.nonfinite`):
    under `error` the split is refused with training's line once it is counted whole, and no
    chunk after the first bad one is written; under `zero` they become 0 and `notes` says how
    many. A label that is NaN or infinite is refused, as training refuses it."""
    from trainer.data.finite import Tally

    tally, at = Tally(split, policy), 0
    for x, y, g in view.iter_grouped(CHUNK):
        x = tally.scan(x, lambda i, start=at: view.locate(start + i))
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            bad = int(np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).any(axis=1))[0])
            raise UserError(f"label {y[bad].tolist()} is not finite, {view.locate(at + bad)}, "
                            "expected finite labels or targets (training refuses them too)")
        at += len(x)
        if tally.policy == "zero" or not tally.found:
            yield x, y, g
    tally.check()
    if tally.found:
        notes.append(tally.summary())


def video_splits(videos: Sequence[str], labels: Union[str, Sequence[str]], key: Optional[str],
                 config: Config, sizes: Optional[dict] = None, review_path: Optional[str] = None,
                 unreviewed: str = "skip") -> dict[str, Iterator]:
    """The `train` split of the videos' frames; `labels`: one .mat for all, or one per video.
    Frames are `data.image_size` (empty: the first frame's size) and `data.color`; `sizes`
    counts them by their own size (`video.resize_line`)."""
    from trainer.data import video

    labels = [labels] if isinstance(labels, str) else labels
    if review_path:  # a person's corrections (trainer.review_corrections)
        from trainer import review_corrections

        segments = review_corrections.corrected_segments(videos, labels, key, review_path, unreviewed)
    else:
        segments = video.label_segments(videos, labels, key)
    spec = video.settled(segments, images.spec_from_config(config.data))
    return {"train": video.frames(segments, spec, CHUNK, sizes)}


@dataclass(frozen=True)
class Like:
    """What `--like` asks of new shards: the format, compression and sample shape of earlier
    shards (their manifest) or of the shards a run trained on (its input shape)."""

    path: str
    to: str
    gz: bool
    shape: list[int]  # (H, W, C)

    @property
    def color(self) -> str:
        return "grey" if self.shape[2] == 1 else "rgb"


def _read_json(path: str) -> dict:
    from trainer.cloud.registry import _json

    return _json(path, "--like", "the manifest.json or metrics.json that convert or a run wrote")


def like(path: str) -> Like:
    """`--like PATH`: a `manifest.json`, the folder of shards holding one, or a run folder (its
    `metrics.json` gives the model's input shape, its `config.yaml` the format it read)."""
    manifest = path if path.endswith(".json") else storage.join(path, "manifest.json")
    if storage.exists(manifest):
        m = _read_json(manifest)
        to, shape, gz = m.get("format"), m.get("sample_shape"), m.get("compression") == "gzip"
        where = manifest
    elif storage.exists(storage.join(path, "metrics.json")):
        where = storage.join(path, "metrics.json")
        shape = (_read_json(where).get("data") or {}).get("input_shape")
        from trainer import config as config_mod

        raw, _ = config_mod.load_raw(storage.join(path, "config.yaml"))
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        to = data.get("format") if data.get("format") in ("npz", "tfrecord") else "tfrecord"
        gz = to == "tfrecord" and ".gz" in str(data.get("train"))
    else:
        raise UserError(f"no manifest.json or metrics.json, --like={path}, expected earlier "
                        "shards (their manifest.json or its folder) or a run folder")
    if (to not in ("npz", "tfrecord") or not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in shape) or shape[2] not in (1, 3)):
        raise UserError(f"format {to!r} and sample shape {shape!r}, {where}, expected npz or "
                        "tfrecord shards of (H, W, 1) or (H, W, 3) images")
    return Like(path, to, gz, shape)


def _settings(match: Like, to: Optional[str], gz: Optional[bool], asked: dict
              ) -> tuple[str, bool, list[str]]:
    """`--to`, `--gzip` and the image overrides that `--like` gives; one it contradicts is an
    error, since the shards would not train together."""
    size, theirs = asked.get("image_size"), match.shape[:2]
    for name, given, wanted in (("--to", to, match.to), ("--gzip", gz, match.gz),
                                ("data.image_size", size, theirs),
                                ("data.color", asked.get("color", "auto"), match.color)):
        if given is not None and given != wanted and not (name == "data.color" and given == "auto"):
            raise UserError(f"{name}={given} but the shards of --like={match.path} have "
                            f"{wanted}, command line, expected {name} left out with --like (or "
                            "the same)")
    return match.to, match.gz, [f"data.image_size=[{theirs[0]}, {theirs[1]}]",
                                f"data.color={match.color}"]


def run(config_path: Optional[str], overrides: Sequence[str], out: Optional[str],
        to: Optional[str], shard_size: int, gz: Optional[bool], videos: Sequence[str],
        labels: Sequence[str], labels_key: Optional[str], like_path: Optional[str] = None,
        review_path: Optional[str] = None, unreviewed: str = "skip") -> int:
    """The command. `to` and `gz` None: not given (then `--like`'s, else tfrecord, no GZIP)."""
    from trainer import config as config_mod

    notes: list[str] = []
    try:
        if not out:
            raise UserError("no output folder, --out, expected a local path or gs:// URL")
        storage.check_writable(out)  # a file, device or pipe there: one line, before any work
        raw, _ = config_mod.load_raw(config_path, overrides)
        asked = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        match = like(like_path) if like_path else None
        if match is not None:
            to, gz, extra = _settings(match, to, gz, asked)
            overrides = [*overrides, *extra]
        to, gz = to or "tfrecord", bool(gz)
        cfg = config_mod.load(config_path, overrides)
        if videos:
            if not labels and not review_path:
                raise UserError("no labels for the videos, --labels, expected a .mat file with one "
                                "label per frame (or --review)")
            if asked.get("image_size") is None and match is None:  # not the demo's 32x32
                cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=None))
            sizes: dict = {}
            splits = video_splits(videos, labels, labels_key, cfg, sizes, review_path, unreviewed)
            source = ", ".join(videos)
        else:
            if labels or review_path:
                flag = "--labels" if labels else "--review"
                raise UserError(f"{flag} without --video, command line, expected a --video for "
                                "the labels' frames (or --config without --labels)")
            if not config_path and not overrides:
                raise UserError("nothing to convert, --config, expected a config file or --video")
            splits, source = config_splits(cfg, notes)
        manifest = convert(splits, out, to, shard_size, gz, source, match)
    except UserError as exc:
        cli.print_error(exc)
        return exc.exit_code
    for split, entry in manifest["splits"].items():
        groups = f" from {entry['groups']} groups" if "groups" in entry else ""
        print(f"{split}: {entry['count']} samples in {len(entry['shards'])} shards{groups}")
    if videos and "sample_shape" in manifest:
        from trainer.data import video

        line = video.resize_line(sizes, manifest["sample_shape"][:2])
        notes += [line] if line else []
    for note in notes:
        print(f"warning: {note}" if "resized" in note else note)
    print(f"manifest: {storage.join(out, 'manifest.json')}")
    return 0


def _convert_from_flags(args: list[str]) -> int:
    return run(FLAGS.config, FLAGS.set, FLAGS.out, FLAGS.to if FLAGS["to"].present else None,
               FLAGS.shard_size, FLAGS.gzip if FLAGS["gzip"].present else None,
               FLAGS.video, FLAGS.labels, FLAGS.labels_key, FLAGS.like, FLAGS.review,
               FLAGS.unreviewed)


main = cli.Command(_convert_from_flags, FLAGS)

if __name__ == "__main__":
    main.run()

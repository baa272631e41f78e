"""`predict --review N --review_out DIR`: the N frames most worth a person's look, and back.

Seed 001's curation saves human time only if the person checks the frames where the model is
likely wrong, not every frame. Every frame (image, shard row) of every input gets a score:

- classification: the larger of `1 - margin` (margin: the top class's probability less the
  second's) and the fraction of its neighbours in time (`WINDOW` frames each side, same video)
  whose label differs from its own (a one-frame flip inside a touch scores 1);
- regression: the spread (standard deviation, averaged over outputs) of the model's values over
  the frame and its copies shifted by one pixel each way (test-time augmentation);
- `--review_by random`: a uniform number drawn from the frame's name, the baseline to compare.

The ranking streams: a heap of the N best so far (ties: the earlier frame first), plus the
`2 * WINDOW + 1` latest predictions of the video at hand, so memory does not grow with a
video's length. Its output, in DIR:

- `review.csv`: `input, frame, predicted, probability, score, reason`, best first; `frame`
  numbered as in predict's CSV (from 0);
- `review.mat`: per video, the variable `predict --mat` names, an N x 2 double matrix of
  [frame from 1 as MATLAB indexes, predicted label], in frame order;
- `sheet-001.png`...: contact sheets of the picked frames as the model saw them, each tile
  labelled with its video, frame (as in review.csv) and probability. Their images are read
  again after the ranking (a second decode of the videos that have picks, up to the last one).

`convert --review` reads the corrected file back (`corrections`).
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from trainer import storage
from trainer.errors import UserError

WINDOW = 2  # neighbours each side that a frame's label is compared with
RANKINGS = ("uncertainty", "random")
TILE = 128  # pixels of a contact sheet tile's image
COLUMNS, ROWS = 6, 5


@dataclass(frozen=True)
class Options:
    """What `--review`, `--review_out` and `--review_by` ask."""

    count: int
    out: str
    by: str = "uncertainty"


@dataclass(frozen=True)
class Pick:
    """A frame picked for review, with why."""

    input: str
    frame: Optional[int]
    values: list
    score: float
    reason: str
    order: int  # its place in the stream: ties go to the earlier frame

    def row(self, classification: bool) -> list:
        if classification:
            predicted, probability = self.values[0], f"{self.values[1]:.6f}"
        else:
            predicted, probability = " ".join(f"{v:.6g}" for v in self.values), ""
        return [self.input, "" if self.frame is None else self.frame, predicted, probability,
                f"{self.score:.6f}", self.reason]


def random_score(name: str, frame: Optional[int]) -> float:
    """A number in [0, 1) that only the frame's name decides: the same every run."""
    digest = hashlib.blake2b(f"{name}\0{frame}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def margin_score(values: list) -> tuple[float, str]:
    probs = sorted(values[2:], reverse=True)
    margin = probs[0] - (probs[1] if len(probs) > 1 else 0.0)
    return 1.0 - margin, f"low margin {margin:.3f}"


class Ranker:
    """Keeps the `count` frames most likely wrong among those it is given, in bounded memory."""

    def __init__(self, count: int, by: str = "uncertainty", classification: bool = True,
                 window: int = WINDOW):
        if by not in RANKINGS:
            raise UserError(f"unknown ranking {by!r}, --review_by, expected one of "
                            f"{', '.join(RANKINGS)}")
        self.count, self.by, self.classification, self.window = count, by, classification, window
        self._heap: list[tuple[float, int, Pick]] = []
        self._recent: list = []  # the latest predictions of the video at hand
        self._next = 0  # index in `_recent` of the next one to score
        self._order = 0

    @property
    def state_size(self) -> int:
        """Predictions held: at most `count` picks plus `2 * window + 1` recent frames."""
        return len(self._heap) + len(self._recent)

    def add(self, prediction) -> None:
        """One prediction (predict's `Prediction`), in stream order."""
        if self._recent and (prediction.frame is None or prediction.input != self._recent[0].input):
            self._drain(final=True)
        if prediction.frame is None or not self.classification or self.by == "random":
            self._score(prediction, [])
            return
        self._recent.append(prediction)
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        w = self.window
        while self._next < len(self._recent) and (final or len(self._recent) - self._next > w):
            at = self._next
            neighbours = self._recent[max(0, at - w):at] + self._recent[at + 1:at + w + 1]
            self._score(self._recent[at], neighbours)
            self._next += 1
            if self._next > w:
                self._recent.pop(0)
                self._next -= 1
        if final:
            self._recent, self._next = [], 0

    def _score(self, prediction, neighbours: list) -> None:
        if self.by == "random":
            score, reason = random_score(prediction.input, prediction.frame), "random"
        elif not self.classification:
            score = float(prediction.spread or 0.0)
            reason = f"spread {score:.4g} under test-time augmentation"
        else:
            score, reason = margin_score(prediction.values)
            if neighbours:
                differ = sum(n.values[0] != prediction.values[0] for n in neighbours)
                if differ / len(neighbours) > score:
                    score = differ / len(neighbours)
                    reason = f"disagrees with {differ} of {len(neighbours)} neighbours"
        pick = Pick(prediction.input, prediction.frame, list(prediction.values), float(score),
                    reason, self._order)
        self._order += 1
        entry = (pick.score, -pick.order, pick)
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def finish(self) -> list[Pick]:
        """The picks, most likely wrong first (ties: the earlier frame first)."""
        self._drain(final=True)
        return [p for _, _, p in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


def spread(model, x: np.ndarray) -> np.ndarray:
    """Each row's spread under test-time augmentation: the standard deviation of the model's
    values over the image and its copies shifted by one pixel up, down, left and right
    (edge rows repeated), averaged over the outputs."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    views = [x] + [padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                   for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    outs = np.stack([np.asarray(model.predict_on_batch(np.ascontiguousarray(v)), np.float64)
                     for v in views])
    return outs.std(axis=0).mean(axis=-1)


# ----------------------------------------------------------------------------------------------
# Writing the review: CSV, MATLAB file, contact sheets.


COLUMNS_CSV = ["input", "frame", "predicted", "probability", "score", "reason"]


def check_out(options: Options) -> None:
    if not options.out:
        raise UserError(f"--review={options.count} without --review_out, command line, expected "
                        "a folder for review.csv, review.mat and the contact sheets")
    storage.check_writable(options.out)


def write(picks: Sequence[Pick], options: Options, saved, files: Sequence[str]) -> list[str]:
    """review.csv, review.mat (when videos were among the inputs) and the contact sheets, each
    finished locally and copied whole into `options.out`; returns what was written."""
    from trainer.data import video

    classification = bool(saved.class_names)
    videos = [f for f in files if video.is_video(f)]
    with tempfile.TemporaryDirectory(prefix="review-") as tmp:
        made = []
        path = os.path.join(tmp, "review.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS_CSV)
            writer.writerows(p.row(classification) for p in picks)
        made.append(path)
        if videos:
            path = os.path.join(tmp, "review.mat")
            write_mat(path, picks, videos, saved)
            made.append(path)
        made += contact_sheets(picks, saved, files, tmp)
        written = []
        for local in made:
            dest = storage.join(options.out, os.path.basename(local))
            storage.put_file(local, dest)
            written.append(dest)
    return written


def write_mat(path: str, picks: Sequence[Pick], videos: Sequence[str], saved) -> None:
    """Each video's picks as [frame from 1, label] rows in frame order, named as predict --mat
    names the video's labels (a video without picks: 0 x 2)."""
    import scipy.io

    from trainer.data import video

    rows: dict[str, list] = defaultdict(list)
    for p in picks:
        if p.frame is not None:
            label = saved.label(p.values)
            rows[p.input].append([p.frame + 1, *np.atleast_1d(label)])
    width = 2 if saved.class_names else 1 + int(saved.model.output_shape[-1])
    arrays = {name: np.array(sorted(rows[v]), dtype=np.float64).reshape(-1, width)
              for name, v in zip(video.variable_names(videos), videos)}
    scipy.io.savemat(path, arrays, do_compression=True)


def _images(picks: Sequence[Pick], saved, files: Sequence[str]) -> dict[tuple, np.ndarray]:
    """The picked frames' images, read again; each file read up to its last pick only."""
    from trainer.predict import read_inputs

    wanted: dict[str, set] = defaultdict(set)
    known = set(files)
    for p in picks:
        shard_row = p.input not in known and "[" in p.input  # `shard.npz[3]`: its file
        source = p.input[:p.input.rindex("[")] if shard_row else p.input
        wanted[source].add((p.input, p.frame))
    found = {}
    for source in files:
        keys = wanted.get(source)
        if not keys:
            continue
        for name, frame, image in read_inputs([source], saved.input_shape):
            if (name, frame) in keys:
                found[(name, frame)] = image
                if all(k in found for k in keys):
                    break
    return found


def _tile(image: np.ndarray, caption: list[str]):
    from PIL import Image, ImageDraw

    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi > 255 or lo < 0:  # not 8-bit values: stretched to show
        x = (x - lo) / max(hi - lo, 1e-12) * 255
    x = np.clip(x, 0, 255).astype(np.uint8)
    x = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
    picture = Image.fromarray(x).convert("RGB")
    scale = TILE / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)),
                              max(1, round(picture.height * scale))), Image.NEAREST)
    tile = Image.new("RGB", (TILE + 8, TILE + 12 * len(caption) + 8), "white")
    tile.paste(picture, (4, 4))
    draw = ImageDraw.Draw(tile)
    for k, line in enumerate(caption):
        draw.text((4, TILE + 6 + 12 * k), line, fill="black")
    return tile


def contact_sheets(picks: Sequence[Pick], saved, files: Sequence[str], folder: str) -> list[str]:
    """PNG grids of `COLUMNS` x `ROWS` tiles in rank order: sheet-001.png, sheet-002.png..."""
    from PIL import Image

    images = _images(picks, saved, files)
    per = COLUMNS * ROWS
    written = []
    for s in range(math.ceil(len(picks) / per)):
        tiles = []
        for rank, p in enumerate(picks[s * per:(s + 1) * per], start=s * per + 1):
            name = os.path.basename(p.input)
            where = f"frame {p.frame}" if p.frame is not None else ""
            value = (f"-> {p.values[0]} p={p.values[1]:.3f}" if saved.class_names
                     else f"spread {p.score:.3g}")
            tiles.append(_tile(images[(p.input, p.frame)],
                               [f"#{rank} {name[-20:]}", f"{where} {value}".strip()]))
        tw, th = tiles[0].size
        size = (tw * min(COLUMNS, len(tiles)), th * math.ceil(len(tiles) / COLUMNS))
        sheet = Image.new("RGB", size, "white")
        for k, tile in enumerate(tiles):
            sheet.paste(tile, ((k % COLUMNS) * tw, (k // COLUMNS) * th))
        path = os.path.join(folder, f"sheet-{s + 1:03d}.png")
        sheet.save(path)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# Corrections back into training: `convert --review FILE --unreviewed predicted|skip`.


UNREVIEWED = ("skip", "predicted")


def corrections(path: str, videos: Sequence[str]) -> dict[str, dict[int, float]]:
    """{video: {frame from 0: corrected label}} of a corrected review.csv or review.mat; a
    label left empty or NaN marks a frame as uncuratable (left out). Rows of other inputs
    (images) are ignored; a video the file names but `videos` lacks is an error."""
    from trainer.data import video

    names = dict(zip(video.variable_names(videos), videos))
    lookup = {**names, **{v: v for v in videos}, **{os.path.basename(v): v for v in videos}}
    out: dict[str, dict[int, float]] = {v: {} for v in videos}
    if path.lower().endswith(".mat"):
        contents = video._load_mat(path)
        for key, value in contents.items():
            if key not in names:
                raise UserError(f"variable {key!r} names no --video, {path}, expected one "
                                f"variable per video named as predict --mat names them "
                                f"({', '.join(names)})")
            if (not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf"
                    or value.ndim != 2 or (value.size and value.shape[1] != 2)):
                raise UserError(f"variable {key!r} is not an N x 2 numeric matrix, {path}, "
                                "expected [frame from 1, label] rows as predict --review writes")
            for frame, label in value.reshape(-1, 2):
                _add(out[names[key]], frame - 1, label, f"variable {key!r}", path, frame)
        return out
    text = storage.read_text(path, what="a review CSV")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"input", "frame", "predicted"} <= set(reader.fieldnames):
        raise UserError(f"columns {reader.fieldnames}, {path}, expected the review.csv that "
                        "predict --review writes (input, frame, predicted, ...)")
    for line, row in enumerate(reader, start=2):
        if row["frame"] in ("", None):
            continue  # an image or shard row: not a video frame
        if row["input"] not in lookup:
            raise UserError(f"input {row['input']!r} is no --video, {path} line {line}, expected "
                            "the videos of the review given with --video")
        try:
            frame = float(row["frame"])
            label = float(row["predicted"]) if row["predicted"].strip() else float("nan")
        except (ValueError, AttributeError):
            raise UserError(f"frame {row['frame']!r} or label {row['predicted']!r} is not a "
                            f"number, {path} line {line}, expected a frame number and the "
                            "corrected label (the class as a number; empty: left out)") from None
        _add(out[lookup[row["input"]]], frame, label, f"line {line}", path, row["frame"])
    return out


def _add(frames: dict, frame: float, label: float, where: str, path: str, shown) -> None:
    if not float(frame).is_integer() or frame < 0:
        raise UserError(f"frame {shown} is not a frame number, {path} {where}, expected a whole "
                        "number (from 0 in review.csv, from 1 in review.mat)")
    frames[int(frame)] = float(label)


def corrected_segments(videos: Sequence[str], labels: Sequence[str], key: Optional[str],
                       review_path: str, unreviewed: str) -> list:
    """The label segments `convert --video` trains on, from a corrected review: each video's
    reviewed frames take their corrected labels; the others keep their predicted labels from
    `labels` (`unreviewed="predicted"`) or are left out (`"skip"`: NaN)."""
    from trainer.data import video

    if unreviewed not in UNREVIEWED:
        raise UserError(f"--unreviewed={unreviewed}, expected one of {', '.join(UNREVIEWED)}")
    fixes = corrections(review_path, videos)
    if labels:
        base = video.label_segments(videos, labels, key)
    elif unreviewed == "predicted":
        raise UserError("--unreviewed=predicted without --labels, command line, expected the "
                        ".mat of predicted labels that predict --mat wrote for the videos")
    else:
        base = [([v], np.full(frame_count(v), np.nan), review_path) for v in videos]
    segments = []
    for paths, vector, where in base:
        vector = np.asarray(vector, dtype=np.float64).copy()
        if unreviewed == "skip":
            vector[:] = np.nan
        at = 0
        for v in paths:
            count = frame_count(v) if len(paths) > 1 else len(vector)
            for frame, label in fixes[v].items():
                if frame >= count:
                    raise UserError(f"frame {frame} of {v} is past its last frame ({count - 1}), "
                                    f"{review_path}, expected frames of the video as predict "
                                    "numbered them")
                vector[at + frame] = label
            at += count
        segments.append((paths, vector, f"{where} corrected by {review_path}"))
    return segments


def frame_count(path: str) -> int:
    """The frames a video decodes to (counted by decoding: containers' counts can be wrong)."""
    import av

    try:
        with storage.open_read(path) as f, av.open(f) as container:
            return sum(1 for _ in container.decode(video=0))
    except av.error.FFmpegError as exc:
        raise UserError(f"cannot decode video ({exc}), {path}, expected a video file FFmpeg "
                        "reads") from None


def summary(picks: Sequence[Pick], written: Iterable[str]) -> str:
    reasons = defaultdict(int)
    for p in picks:
        reasons[p.reason.split(" ")[0]] += 1
    why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return f"{len(picks)} frames picked for review ({why}), written to {', '.join(written)}"


# ----------------------------------------------------------------------------------------------
# predict's calls.


def options_from(count: Optional[int], out: Optional[str], by: str) -> Optional[Options]:
    """`--review`, `--review_out`, `--review_by` as Options (None without `--review`)."""
    if count is None:
        if out:
            raise UserError(f"--review_out={out} without --review, command line, expected "
                            "--review N (the frames to pick)")
        return None
    return Options(count, out or "", by)


def ranker(options: Optional[Options], saved) -> Optional[Ranker]:
    return Ranker(options.count, options.by, bool(saved.class_names)) if options else None


def spread_for(ranking: Optional[Ranker]):
    """The test-time augmentation `predict_files` runs: for a regression model's review only."""
    if ranking is None or ranking.classification or ranking.by == "random":
        return None
    return spread


def publish(ranking: Ranker, options: Options, saved, files: Sequence[str]) -> str:
    """Write the review; returns the line that says what it holds."""
    picks = ranking.finish()
    return summary(picks, write(picks, options, saved, files))

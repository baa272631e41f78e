"""`convert --review FILE --unreviewed predicted|skip`: a corrected review.csv or review.mat
(what `predict --review` wrote, its labels fixed by a person) read back into the label segments
`convert --video` trains on."""

from __future__ import annotations

import csv
import io
import os
from typing import Optional, Sequence

import numpy as np

from trainer import storage
from trainer.errors import UserError


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


"""The predictions as files: a CSV, and each video's per-frame labels as a MATLAB file, both
finished locally and published whole."""

from __future__ import annotations

import csv
import os
from typing import Optional

import numpy as np

from trainer import storage
from trainer.data import video
from trainer.errors import UserError
from trainer.predict.batching import Prediction
from trainer.predict.model import SavedModel


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
        self.reviewed: Optional[str] = None  # what `--review` wrote, in a line

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


def check_output_path(path: str, flag: str = "csv") -> None:
    """Refuse a `--csv` (or `--mat`) the predictions could not be written to, before any is
    made: a folder, a device, a path under a file, or a folder (a bucket) this process cannot
    write to (storage's write probe, as for a run's folder)."""
    expected = f"--{flag}={path}, expected a file name in a folder this process can write to"
    if path.endswith(("/", os.sep)) or (storage.is_local(path) and os.path.isdir(path)):
        raise UserError(f"path is a directory, {expected}")
    storage.check_output(path, f"--{flag}={path}")
    reason = storage.unwritable(storage.parent(path))
    if reason:
        raise UserError(f"cannot write there ({reason}), {expected}")

"""`trainer.predict --out FOLDER`: batch curation, each input's results a whole file of their own.

Seed 001's users curate thousands of new videos at a time, on several machines that may be
preempted. So in this mode every input (a video, an image file, a shard) gets its own results in
the output folder, named after the input's path below the inputs' common folder:
`<name>.csv` (one row per frame, image or shard row) and, for a video, `<name>.mat` (its per-frame
labels, the layout `trainer.convert --labels` reads). Each is finished locally and published
whole, the `.mat` first: an input whose CSV exists is done.

With several replicas (a Vertex AI job's CLUSTER_SPEC, or TF_CONFIG), replica i of n takes
every n-th input from the i-th, in the sorted order all replicas see alike. A restarted or
preempted replica skips the inputs whose results exist, so a Spot job finishes however often it
is preempted. Replica 0 reports for the whole job on Vertex AI (the job ends when it ends), so
it waits, after its own share, until every input has its results.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from trainer import smoothing, storage
from trainer.data import video
from trainer.data.finite import Tally
from trainer.errors import UserError
from trainer.predict.batching import predict_files
from trainer.predict.model import SavedModel
from trainer.predict.readers import Progress
from trainer.predict.results import Results


def result_names(files: Sequence[str]) -> dict[str, str]:
    """Each input's name in the output folder: its path below the inputs' common folder."""
    parts = [f.split("/") for f in files]
    common = os.path.commonprefix([p[:-1] for p in parts])
    return {f: "/".join(p[len(common):]) for f, p in zip(files, parts)}


def share(files: Sequence[str], index: int, count: int) -> list[str]:
    """Replica `index` of `count`: every `count`-th input from the `index`-th."""
    return list(files[index::count])


@dataclass
class _Counts:
    predicted: int = 0
    frames: int = 0
    skipped: int = 0


def curate(saved: SavedModel, files: Sequence[str], out: str, replica: int = 0, replicas: int = 1,
           batch_size: int = 256, tally: Optional[Tally] = None,
           progress: Optional[Progress] = None, poll_seconds: float = 30.0,
           smoother=None) -> str:
    """Predict this replica's share of `files` into `out`, input by input; returns a summary."""
    files = list(dict.fromkeys(files))  # an input two patterns match is still one input
    names = result_names(files)
    counts = _Counts()
    for path in share(files, replica, replicas):
        csv_dest = storage.join(out, names[path] + ".csv")
        if storage.exists(csv_dest):
            print(f"{path}: results exist, skipped", flush=True)
            counts.skipped += 1
            continue
        is_video = video.is_video(path)
        mat_dest = storage.join(out, names[path] + ".mat") if is_video else None
        with tempfile.TemporaryDirectory(prefix="curate-") as tmp:
            results = Results(saved, tmp, frames=is_video)
            predictions = predict_files(saved, [path], batch_size, tally, progress)
            for prediction in smoothing.apply(predictions, smoother, saved.class_names,
                                              saved.threshold):
                results.add(prediction)
            results.publish(csv_dest, mat_dest)
        frames = sum(map(len, results.labels.values()))
        counts.predicted += 1
        counts.frames += frames
        written = csv_dest + (f" and {mat_dest}" if mat_dest else "")
        print(f"{path}: {frames or results.count} {'frames' if is_video else 'rows'} -> {written}",
              flush=True)
    if replica == 0 and replicas > 1:
        _wait_for_the_others(files, names, out, poll_seconds)
    who = f"replica {replica} of {replicas}: " if replicas > 1 else ""
    return (f"{who}{counts.predicted} inputs predicted ({counts.frames} video frames), "
            f"{counts.skipped} skipped (results exist), results in {out}")


def _wait_for_the_others(files: Sequence[str], names: dict[str, str], out: str,
                         poll_seconds: float) -> None:
    """Replica 0 ends the job on Vertex AI: it returns only once every input has its results."""
    pending = list(files)
    while True:
        pending = [f for f in pending if not storage.exists(storage.join(out, names[f] + ".csv"))]
        if not pending:
            return
        print(f"waiting for the other replicas: {len(pending)} inputs without results", flush=True)
        time.sleep(poll_seconds)


def check_out(out: str, csv_path: Optional[str], mat_path: Optional[str]) -> None:
    """`--out` is a folder of results of its own: it excludes `--csv` and `--mat`."""
    given = [f"--{name}" for name, v in (("csv", csv_path), ("mat", mat_path)) if v]
    if given:
        raise UserError(f"{' and '.join(given)} with --out={out}, command line, expected either "
                        "--out FOLDER (results per input) or --csv/--mat (one file for all)")
    storage.check_writable(out)

"""Prediction in batches: at most one batch of images (or video frames) in memory, NaN and Inf
refused or zeroed before a batch is predicted, one `Prediction` per input or frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from trainer.data import context
from trainer.data.finite import Tally
from trainer.evaluation import thresholds
from trainer.predict.inputs import input_files
from trainer.predict.model import SavedModel
from trainer.predict.readers import Item, Progress, read_inputs


@dataclass(frozen=True)
class Prediction:
    """One input's (or one video frame's) prediction: [class, probability, p_class...] or the
    regression values."""

    input: str
    frame: Optional[int]
    values: list
    spread: Optional[float] = None  # under test-time augmentation, when `--review` asks

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
                  tally: Optional[Tally] = None, progress: Optional[Progress] = None,
                  spread=None) -> Iterator[Prediction]:
    """`predict` on files `input_files` has found already (not listed again); `spread(model,
    batch)`, when given, gives each row's spread (`trainer.review_ranking.spread`)."""
    tally = tally or Tally("the inputs", "error", "--nonfinite")
    # Each frame read alone, then stacked with its neighbours (data.frame_context).
    shape = context.frame_shape(saved.input_shape, saved.frame_context)
    items = context.stream_files(files, lambda path: read_inputs([path], shape, progress),
                                 saved.frame_context)
    for keys, x in _batches(items, batch_size):
        x = tally.scan(x, lambda i: Prediction(*keys[i], []).name, writable=True)
        tally.check()
        out = np.asarray(saved.model.predict_on_batch(x), dtype=np.float64)
        spreads = spread(saved.model, x) if spread else [None] * len(out)
        labels = thresholds.decide(out, saved.threshold)
        for (name, frame), row, row_spread, k in zip(keys, out, spreads, labels):
            if saved.class_names:
                k = int(k)
                values = [saved.class_names[k], float(row[k]), *map(float, row)]
            else:
                values = list(map(float, row))
            yield Prediction(name, frame, values,
                             None if row_spread is None else float(row_spread))


def format_row(prediction: Prediction, classification: bool) -> str:
    values = prediction.values
    if classification:
        return f"{prediction.name}  {values[0]}  {values[1]:.4f}"
    return f"{prediction.name}  " + "  ".join(f"{v:.6g}" for v in values)

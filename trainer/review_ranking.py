"""`predict --review`'s ranking: a score for every frame, and the N most likely wrong kept in
bounded memory (`trainer.review` says what the scores are; `review_files` writes the picks).

The ranking streams: a heap of the N best so far (ties: the earlier frame first), plus the
`2 * WINDOW + 1` latest predictions of the video at hand, so memory does not grow with a
video's length.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Optional

import numpy as np

from trainer.errors import UserError

WINDOW = 2  # neighbours each side that a frame's label is compared with
RANKINGS = ("uncertainty", "random")


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


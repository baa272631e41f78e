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

This module is what predict calls (the flags as `Options`, the ranker, the review published);
the ranking is `review_ranking.py`, the files `review_files.py`, and `convert --review` reads the
corrected file back with `review_corrections.py`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from trainer import review_files, storage
from trainer.errors import UserError
from trainer.review_ranking import Pick, Ranker, spread


@dataclass(frozen=True)
class Options:
    """What `--review`, `--review_out` and `--review_by` ask."""

    count: int
    out: str
    by: str = "uncertainty"


def check_out(options: Options) -> None:
    if not options.out:
        raise UserError(f"--review={options.count} without --review_out, command line, expected "
                        "a folder for review.csv, review.mat and the contact sheets")
    storage.check_writable(options.out)


def summary(picks: Sequence[Pick], written: Iterable[str]) -> str:
    reasons = defaultdict(int)
    for p in picks:
        reasons[p.reason.split(" ")[0]] += 1
    why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return f"{len(picks)} frames picked for review ({why}), written to {', '.join(written)}"


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
    return summary(picks, review_files.write(picks, options.out, saved, files))

"""Which part of each epoch one input pipeline reads, when a job with several workers
(MultiWorkerMirroredStrategy) runs one pipeline per worker.

The strategy's `distribute_datasets_from_function` makes each worker's pipeline; its
`InputContext` gives each pipeline a `Share`. Every worker draws the same block order, and each
reads only its own contiguous part of it (a block on the border is cut between the two): each row
is read by exactly one worker an epoch, and the parts together are the whole order. Every worker
runs the same number of steps: each step gives every replica `batch_size` rows, and the epoch's
last, short step splits its rows evenly over all replicas (a remainder smaller than the number of
replicas is left out of that epoch: a different few rows each epoch, since the order is drawn
anew).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.source import Block
from trainer.kerasflavor import tf


@dataclass(frozen=True)
class Share:
    """Which part of each epoch one input pipeline reads, and how it cuts its batches.

    The default, one pipeline feeding one model (`replicas=1`), reads everything and yields
    global batches, which a one-machine strategy splits between its GPUs itself. With
    `pipelines` > 1 (one per worker), pipeline `index` reads only its part of the epoch and
    yields per-replica batches for its own `replicas // pipelines` replicas, as
    `distribute_datasets_from_function` expects.
    """

    pipelines: int = 1
    index: int = 0
    replicas: int = 1  # the replicas that the pipelines together feed per-replica batches

    @property
    def local_replicas(self) -> int:
        return self.replicas // self.pipelines


WHOLE = Share()


def share_of(context: tf.distribute.InputContext) -> Share:
    """This worker's share, from the strategy's input context."""
    return Share(context.num_input_pipelines, context.input_pipeline_id,
                 context.num_replicas_in_sync)


def share_rows(rows: int, batch: int, share: Share) -> tuple[int, int]:
    """[start, stop) of the pipeline's part of an epoch of `rows` rows in its drawn order, for
    a global batch of `batch` rows.

    Each replica gets `batch // replicas` rows a step; the last, short step's rows are spread
    over the replicas (one more to the first ones), or left out when fewer than the replicas.
    """
    full, rest = divmod(rows, batch)
    if rest < share.replicas:
        rest = 0
    per = full * (batch // share.replicas) + rest // share.replicas + (
        np.arange(share.replicas) < rest % share.replicas)
    bounds = np.concatenate([[0], np.cumsum(per)])
    first = share.index * share.local_replicas
    return int(bounds[first]), int(bounds[first + share.local_replicas])


def part_of(blocks: list[Block], start: int, stop: int) -> list[Block]:
    """The rows [start, stop) of the blocks' rows in this order, as blocks (the two at the
    ends cut)."""
    out, at = [], 0
    for block in blocks:
        n = len(block.rows)
        lo, hi = max(start - at, 0), min(stop - at, n)
        if lo < hi:
            out.append(block if hi - lo == n else
                       Block(block.shard, block.rows[lo:hi], block.positions[lo:hi]))
        at += n
    return out

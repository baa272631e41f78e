"""How a run fits its devices: precision, XLA, the global batch and the learning rate.

`plan_scaling` is the one place that turns `train.batch_size` (per replica) into the global
batch the input pipeline makes; the steps after it take both from `Scaling`. (The checks before
the strategy exists, memory per batch and `datacheck`, read it as one replica's batch.)

Decided once, before the model is built, and logged, so that a run's speed and results can be
explained from its log; `metrics.json` records them as the run's runtime.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trainer.config import TrainConfig
from trainer.kerasflavor import tf
from trainer.runtime import devices

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Scaling:
    devices: str
    precision_policy: str
    deterministic: bool
    xla: bool
    replicas: int
    per_replica_batch: int  # `train.batch_size`
    global_batch: int  # what the input pipeline batches: per replica x replicas
    learning_rate: float

    def runtime(self) -> dict:
        """What `metrics.json` records of these settings."""
        return {"precision_policy": self.precision_policy, "deterministic": self.deterministic,
                "xla": self.xla,
                "learning_rate": self.learning_rate, "devices": self.devices}


def plan_scaling(train: TrainConfig, strategy: tf.distribute.Strategy) -> Scaling:
    """The settings for `strategy`'s devices: the global batch is `batch_size` per replica, and
    the learning rate follows the replicas when `scale_lr_with_replicas` (the linear rule)."""
    acc = devices.accelerators()
    replicas = strategy.num_replicas_in_sync
    scaled = train.scale_lr_with_replicas and replicas > 1
    scaling = Scaling(devices=acc.describe(),
                      precision_policy=devices.precision_policy(train.mixed_precision, acc),
                      deterministic=devices.deterministic(train.deterministic, acc),
                      xla=devices.use_xla(train.jit_compile, acc), replicas=replicas,
                      per_replica_batch=train.batch_size,
                      global_batch=train.batch_size * replicas,
                      learning_rate=train.learning_rate * (replicas if scaled else 1))
    log.info("devices: %s; precision policy: %s; deterministic ops: %s; XLA: %s; replicas in "
             "sync: %d", scaling.devices, scaling.precision_policy,
             "on" if scaling.deterministic else "off", "on" if scaling.xla else "off", replicas)
    log.info("global batch: %d (%d per replica x %d); learning rate: %g%s", scaling.global_batch,
             scaling.per_replica_batch, replicas, scaling.learning_rate,
             " (scaled with replicas)" if scaled else "")
    return scaling

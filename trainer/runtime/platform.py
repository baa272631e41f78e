"""Where this process runs: a plain local run, a Vertex AI job (its AIP_* folders, a tuning trial),
or one worker of a multi-worker cluster (TF_CONFIG), or one replica of a job whose replicas share
out work among themselves (CLUSTER_SPEC, which Vertex AI sets, else TF_CONFIG).

Entry points call `detect` once and hand the `Platform` down, so no other module ever asks
"am I on Vertex AI?" or reads these variables again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from trainer.errors import UserError


@dataclass(frozen=True)
class Platform:
    """Where this process runs and where its run must go; `Platform()` is a plain local run."""

    vertex: bool = False
    job_id: Optional[str] = None
    trial_id: Optional[str] = None       # set when Vertex AI runs the job as a tuning trial
    model_dir: Optional[str] = None      # AIP_MODEL_DIR: the run's own folder (model.h5, ...)
    checkpoint_dir: Optional[str] = None  # AIP_CHECKPOINT_DIR: `checkpoints/` goes here
    tensorboard_dir: Optional[str] = None  # AIP_TENSORBOARD_LOG_DIR: `tensorboard/` goes here
    output_dir: Optional[str] = None     # --output_dir, given on the command line
    workers: int = 1                     # processes training together (chief + workers)
    task_type: str = "chief"
    task_index: int = 0
    cluster_has_chief: bool = True
    replica_index: int = 0               # this replica's place among all of the job's replicas
    replica_count: int = 1

    @property
    def is_chief(self) -> bool:
        """The one process that writes the run; with no `chief` task, worker 0 is it (TF's rule)."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.cluster_has_chief)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def with_output_dir(self, output_dir: Optional[str]) -> "Platform":
        """This platform with the command line's --output_dir (None or "": not given); where it
        takes the run is decided in one place, `trainer.storage.rundir.locate`."""
        return replace(self, output_dir=output_dir or None)

    def log_labels(self) -> dict[str, str]:
        """Labels every structured log record carries, to tell jobs, trials and replicas apart."""
        labels = {"job_id": self.job_id, "trial_id": self.trial_id,
                  "task": f"{self.task_type}-{self.task_index}" if self.multi_worker else None}
        return {k: v for k, v in labels.items() if v}


def detect(env: Optional[Mapping[str, str]] = None) -> Platform:
    """Read the platform from the environment (Vertex AI sets CLOUD_ML_JOB_ID and the AIP_* dirs)."""
    env = os.environ if env is None else env
    workers, task_type, task_index, has_chief = _cluster(env.get("TF_CONFIG", ""))
    if env.get("CLUSTER_SPEC", "").strip():
        replica_index, replica_count = _replica(env["CLUSTER_SPEC"])
    else:  # the chief first, then the workers in order
        replica_count = workers
        replica_index = 0 if task_type == "chief" else task_index + int(has_chief)
    return Platform(
        vertex=bool(env.get("CLOUD_ML_JOB_ID") or env.get("AIP_MODEL_DIR")),
        job_id=env.get("CLOUD_ML_JOB_ID") or None,
        trial_id=env.get("CLOUD_ML_TRIAL_ID") or None,
        model_dir=env.get("AIP_MODEL_DIR") or None,
        checkpoint_dir=env.get("AIP_CHECKPOINT_DIR") or None,
        tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or None,
        workers=workers, task_type=task_type, task_index=task_index, cluster_has_chief=has_chief,
        replica_index=replica_index, replica_count=replica_count,
    )


def _replica(text: str) -> tuple[int, int]:
    """(this replica's index, the number of replicas) from Vertex AI's CLUSTER_SPEC: the replicas
    of worker pool 0, then of pool 1, and so on, counted in that order."""
    expected = ('expected JSON like {"cluster": {"workerpool0": ["host:port"], "workerpool1": '
                '[...]}, "task": {"type": "workerpool1", "index": 0}}')
    try:
        spec = json.loads(text)
        pools = {str(k): list(v) for k, v in spec["cluster"].items()}
        task_type, task_index = str(spec["task"]["type"]), int(spec["task"]["index"])
    except (ValueError, TypeError, AttributeError, KeyError):
        raise UserError(f"CLUSTER_SPEC is not valid, environment, {expected}") from None
    order = sorted(pools, key=lambda name: (len(name), name))  # workerpool0 ... workerpool10
    if task_type not in pools or not 0 <= task_index < len(pools[task_type]):
        raise UserError(f"CLUSTER_SPEC task {task_type} {task_index} is not in its cluster, "
                        f"environment, {expected}")
    before = sum(len(pools[name]) for name in order[:order.index(task_type)])
    return before + task_index, sum(len(v) for v in pools.values())


def _cluster(text: str) -> tuple[int, str, int, bool]:
    """(workers, task type, task index, has a chief) from TF_CONFIG; evaluators and ps don't train."""
    if not text.strip():
        return 1, "chief", 0, True
    expected = ('expected JSON like {"cluster": {"worker": ["host:port", ...]}, '
                '"task": {"type": "worker", "index": 0}}')
    try:
        spec = json.loads(text)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        task_type, task_index = str(task.get("type", "chief")), int(task.get("index", 0))
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"TF_CONFIG is not valid, environment, {expected}") from None
    if task_type not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG task type {task_type!r}, environment, expected chief or worker "
                        "(MultiWorkerMirroredStrategy has no parameter servers or evaluators)")
    return max(workers, 1), task_type, task_index, "chief" in cluster

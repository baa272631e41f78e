"""Where the job runs: local or Vertex AI, which worker this is, logging, seeding, devices.

The only module below `task.py` that reads environment variables or asks which devices exist, so
that no other module ever asks "am I on Vertex AI?". TensorFlow is imported only by the functions
that need it: the storage layer and `trainer.submit` read the environment without paying for it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Optional

from trainer.runtime import secrets
from trainer.errors import UserError

if TYPE_CHECKING:
    from trainer.kerasflavor import tf

log = logging.getLogger("trainer")

# -------------------------------------------------------------------------------------------------
# The platform: what Vertex AI (or a hand-made TF_CONFIG) says about this process.


@dataclass(frozen=True)
class Platform:
    """Where this process runs and where its run must go; `Platform()` is a plain local run."""

    vertex: bool = False
    job_id: Optional[str] = None
    trial_id: Optional[str] = None       # set when Vertex AI runs the job as a tuning trial
    model_dir: Optional[str] = None      # AIP_MODEL_DIR: the run's own folder (model.h5, ...)
    checkpoint_dir: Optional[str] = None  # AIP_CHECKPOINT_DIR: `checkpoints/` goes here
    tensorboard_dir: Optional[str] = None  # AIP_TENSORBOARD_LOG_DIR: `tensorboard/` goes here
    workers: int = 1                     # processes training together (chief + workers)
    task_type: str = "chief"
    task_index: int = 0
    cluster_has_chief: bool = True

    @property
    def is_chief(self) -> bool:
        """The one process that writes the run; with no `chief` task, worker 0 is it (TF's rule)."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.cluster_has_chief)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def run_homes(self) -> dict[str, str]:
        """Folders of the run placed elsewhere by the platform ("" is the run itself)."""
        homes = {"": self.model_dir, "checkpoints": self.checkpoint_dir,
                 "tensorboard": self.tensorboard_dir}
        return {k: v for k, v in homes.items() if v}

    def without_output_dirs(self) -> "Platform":
        """An explicit --output_dir wins over the AIP_* folders."""
        return replace(self, model_dir=None, checkpoint_dir=None, tensorboard_dir=None)

    def log_labels(self) -> dict[str, str]:
        """Labels every structured log record carries, to tell jobs, trials and replicas apart."""
        labels = {"job_id": self.job_id, "trial_id": self.trial_id,
                  "task": f"{self.task_type}-{self.task_index}" if self.multi_worker else None}
        return {k: v for k, v in labels.items() if v}


def detect(env: Optional[Mapping[str, str]] = None) -> Platform:
    """Read the platform from the environment (Vertex AI sets CLOUD_ML_JOB_ID and the AIP_* dirs)."""
    env = os.environ if env is None else env
    workers, task_type, task_index, has_chief = _cluster(env.get("TF_CONFIG", ""))
    return Platform(
        vertex=bool(env.get("CLOUD_ML_JOB_ID") or env.get("AIP_MODEL_DIR")),
        job_id=env.get("CLOUD_ML_JOB_ID") or None,
        trial_id=env.get("CLOUD_ML_TRIAL_ID") or None,
        model_dir=env.get("AIP_MODEL_DIR") or None,
        checkpoint_dir=env.get("AIP_CHECKPOINT_DIR") or None,
        tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or None,
        workers=workers, task_type=task_type, task_index=task_index, cluster_has_chief=has_chief,
    )


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


def storage_options(protocol: str) -> dict:
    """fsspec options for `protocol`: anonymous access when STORAGE_EMULATOR_HOST points at a
    local GCS emulator (gcsfs reads that variable itself), unless the user gave a token through
    fsspec's own variables (FSSPEC_GS_TOKEN, FSSPEC_GS='{"token": ...}'), which fsspec applies.

    Credentials otherwise come from where gcsfs looks by itself: fsspec's variables and config
    files, GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the VM's service account."""
    if protocol not in ("gs", "gcs") or not os.environ.get("STORAGE_EMULATOR_HOST"):
        return {}
    # gcsfs first asks a gRPC control plane for the bucket type, which hangs a minute per call
    # against the emulator (NOTES.md); it reads this switch when it is first imported.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return {} if _fsspec_gcs_token(os.environ) else {"token": "anon"}


def _fsspec_gcs_token(env: Mapping[str, str]) -> bool:
    """Whether fsspec's variables give gcsfs a token (as fsspec's `config.set_conf_env` reads)."""
    for proto in ("GS", "GCS"):
        if env.get(f"FSSPEC_{proto}_TOKEN"):
            return True
        try:
            if "token" in json.loads(env.get(f"FSSPEC_{proto}", "{}")):
                return True
        except (ValueError, TypeError):
            continue
    return False


STORAGE_RETRY_ENV = "TRAINER_STORAGE_RETRY_S"


def storage_retry_budget() -> Optional[float]:
    """The seconds one remote storage call may take, its retries included ($TRAINER_STORAGE_RETRY_S);
    None leaves the storage library's own schedule (gcsfs: 6 tries, about 35 s) as the limit."""
    raw = os.environ.get(STORAGE_RETRY_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UserError(f"{STORAGE_RETRY_ENV}={raw!r}, environment, expected a number of seconds "
                        "above 0 (or unset, for the storage library's own retry schedule)")
    return seconds


# -------------------------------------------------------------------------------------------------
# Logging: readable lines locally, one JSON object per line for Cloud Logging.


class _CurrentStdout:
    """Writes to whatever `sys.stdout` is now (it may be replaced after set-up, as tests do)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


class _StdoutHandler(_CurrentStdout, logging.StreamHandler):
    pass


class _Redacting(logging.Filter):
    """Credentials out of every record: its message, its traceback, its structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = secrets.redact_text(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = secrets.redact_text(record.exc_text)
        if isinstance(getattr(record, "json_fields", None), Mapping):
            record.json_fields = secrets.redact(record.json_fields)
        return True


_structured = False


def setup_logging(level: int = logging.INFO, structured: bool = False,
                  labels: Optional[Mapping[str, str]] = None) -> None:
    """Log records go to stdout: readable lines beside Keras's progress bars, or, when
    `structured`, one JSON object per line (severity, message, the record's `json_fields`) that
    Cloud Logging parses from a Vertex AI container. stderr carries only problems."""
    global _structured
    # TensorFlow logs every checkpoint write at INFO through absl; keep its warnings only.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if structured:
        from google.cloud.logging.handlers import StructuredLogHandler

        class _StructuredStdout(_CurrentStdout, StructuredLogHandler):
            pass

        handler: logging.Handler = _StructuredStdout(labels=dict(labels or {}))
        # The handler announces itself once through this logger; keep that off stderr, which
        # Vertex AI would log at ERROR severity.
        logging.getLogger(StructuredLogHandler.__module__).propagate = False
    else:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_Redacting())
    _structured = structured
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def interactive() -> bool:
    """Whether progress bars make sense: a terminal is watching and stdout is not JSON lines."""
    return sys.stdout.isatty() and not _structured


# -------------------------------------------------------------------------------------------------
# Seeds, devices and the tf.distribute strategy.


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow; deterministic ops make a CPU run repeat exactly."""
    from trainer.kerasflavor import keras, tf

    keras.utils.set_random_seed(seed)
    # Dropout then draws from a tf.random.Generator, whose state is a variable the layer owns:
    # checkpoints carry it, so a run resumed mid-epoch drops the same units as one never stopped.
    keras.backend.experimental.enable_tf_random_generator()
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def choose_strategy(name: str, platform: Platform = Platform()) -> tf.distribute.Strategy:
    """`auto`: MultiWorkerMirroredStrategy when TF_CONFIG names several workers, MirroredStrategy
    over several local GPUs, else the default single-device strategy.

    `mirrored` on a machine without GPUs mirrors over the logical CPU devices, which is how the
    multi-device path is exercised on a CPU-only machine. Call this before any other TensorFlow
    work: the multi-worker strategy must configure the runtime before it starts.
    """
    from trainer.kerasflavor import tf

    if platform.multi_worker:
        if name == "default":
            raise UserError(f"train.strategy is 'default' but TF_CONFIG names {platform.workers} "
                            "workers, config, expected auto or mirrored for a multi-worker job")
        # TF reads the cluster and this task from TF_CONFIG itself.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


@dataclass(frozen=True)
class Accelerators:
    """What this process can compute on, as the precision and XLA defaults need it."""

    cpus: int
    gpus: tuple[dict, ...]  # {"name", "compute_capability", "memory_mib"} per GPU

    @property
    def fp16_capable(self) -> bool:
        """float16 pays off from Volta (compute capability 7.0, tensor cores) on."""
        return any((g.get("compute_capability") or (0, 0)) >= (7, 0) for g in self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return f"{self.cpus} CPU cores, no GPU"
        gpus = ", ".join(f"{g['name']} (compute {'.'.join(map(str, g['compute_capability'] or ()))}"
                         f"{', %d MiB' % g['memory_mib'] if g.get('memory_mib') else ''})"
                         for g in self.gpus)
        return f"{self.cpus} CPU cores, {len(self.gpus)} GPU: {gpus}"


def _gpu_memory_mib() -> list[int]:
    """Total memory per GPU from nvidia-smi, where it exists (TensorFlow does not report it)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(line) for line in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def accelerators() -> Accelerators:
    from trainer.kerasflavor import tf

    gpus = []
    physical = tf.config.list_physical_devices("GPU")
    memory = _gpu_memory_mib() if physical else []
    for i, device in enumerate(physical):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": details.get("device_name", device.name),
                     "compute_capability": details.get("compute_capability"),
                     "memory_mib": memory[i] if i < len(memory) else None})
    return Accelerators(cpus=os.cpu_count() or 1, gpus=tuple(gpus))


def precision_policy(setting: str, acc: Accelerators) -> str:
    """The Keras dtype policy for `train.mixed_precision`."""
    if setting == "auto":
        return "mixed_float16" if acc.fp16_capable else "float32"
    return {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16", "off": "float32"}[setting]


def use_xla(setting, acc: Accelerators) -> bool:
    """`train.jit_compile`: `auto` is XLA on a GPU only (NOTES: slower on this CPU for these nets)."""
    return bool(acc.gpus) if setting == "auto" else bool(setting)


def provenance() -> dict:
    """Where and with what a run ran, for its report: host, Python, package versions, devices."""
    import importlib.metadata
    import platform

    from trainer.kerasflavor import tf

    versions = {}
    for package in ("trainer", "tensorflow", "tf-keras", "numpy", "h5py", "matplotlib", "optuna"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    job = detect().job_id
    return {"where": f"Vertex AI job {job}" if job else "local", "host": platform.node(),
            "python": platform.python_version(), "platform": platform.platform(),
            "devices": accelerators().describe(),
            "tensorflow devices": ", ".join(d.name for d in tf.config.list_logical_devices()),
            "packages": versions}


def share_gpus() -> None:
    """Let several processes share each GPU (a search's --parallel workers): TensorFlow otherwise
    takes nearly all of a GPU's memory at start, and the second process fails. Call before any
    op runs; a no-op without GPUs."""
    from trainer.kerasflavor import tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)

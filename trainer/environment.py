"""Where the job runs: seeding, the tf.distribute strategy, and logging.

The only module below `task.py` that reads environment variables or asks which devices exist.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from trainer.kerasflavor import keras, tf

log = logging.getLogger("trainer")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is now (it may be replaced after set-up, as tests do)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Readable one-line records on stdout beside Keras's progress, so stderr carries only problems."""
    # TensorFlow logs every checkpoint write at INFO through absl; keep its warnings only.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if log.handlers:
        return
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow; deterministic ops make a CPU run repeat exactly."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def choose_strategy(name: str) -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy over several local GPUs, else the default single-device strategy.

    `mirrored` on a machine without GPUs mirrors over the logical CPU devices, which is how the
    multi-device path is exercised on a CPU-only machine.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def interactive() -> bool:
    """Whether progress bars make sense (a terminal is watching)."""
    return sys.stdout.isatty()


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

    versions = {}
    for package in ("trainer", "tensorflow", "tf-keras", "numpy", "h5py", "matplotlib", "optuna"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    job = os.environ.get("CLOUD_ML_JOB_ID")
    return {"where": f"Vertex AI job {job}" if job else "local", "host": platform.node(),
            "python": platform.python_version(), "platform": platform.platform(),
            "devices": accelerators().describe(),
            "tensorflow devices": ", ".join(d.name for d in tf.config.list_logical_devices()),
            "packages": versions}


def tuning_trial_id() -> Optional[str]:
    """The Vertex AI hyperparameter tuning trial this process runs, if any."""
    return os.environ.get("CLOUD_ML_TRIAL_ID")


def share_gpus() -> None:
    """Let several processes share each GPU (a search's --parallel workers): TensorFlow otherwise
    takes nearly all of a GPU's memory at start, and the second process fails. Call before any
    op runs; a no-op without GPUs."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)

"""What the job computes on and how: seeds, the tf.distribute strategy, the accelerators found,
and the precision and XLA settings they call for.

TensorFlow is imported only inside the functions, so that reading the platform or the config
never pays for it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.errors import UserError
from trainer.runtime.platform import Platform

if TYPE_CHECKING:
    from trainer.kerasflavor import tf


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow; deterministic ops make a CPU run repeat exactly."""
    from trainer.kerasflavor import keras, tf

    keras.utils.set_random_seed(seed)
    # Dropout then draws from a tf.random.Generator, whose state is a variable the layer owns:
    # checkpoints carry it, so a run resumed mid-epoch drops the same units as one never stopped.
    keras.backend.experimental.enable_tf_random_generator()
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def choose_strategy(name: str, platform: Platform) -> tf.distribute.Strategy:
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


def input_replicas(strategy: tf.distribute.Strategy) -> int:
    """The replicas that per-worker input pipelines feed, or 1 where one pipeline feeds the
    strategy, which splits its global batches itself.

    Several workers (MultiWorkerMirroredStrategy) each read their own share of the data through
    `distribute_datasets_from_function`; one machine, however many GPUs, keeps one pipeline.
    """
    from trainer.kerasflavor import tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy.num_replicas_in_sync
    return 1


@dataclass(frozen=True)
class Accelerators:
    """What this process can compute on, as the precision and XLA defaults need it."""

    cpus: int
    gpus: tuple[dict, ...]  # {"name", "compute_capability", "memory_mib"} per GPU
    cpu_bf16: bool = False  # the CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16)

    def _gpu_from(self, capability: tuple) -> bool:
        return any((g.get("compute_capability") or (0, 0)) >= capability for g in self.gpus)

    @property
    def fp16_capable(self) -> bool:
        """float16 pays off from Volta (compute capability 7.0, tensor cores) on."""
        return self._gpu_from((7, 0))

    @property
    def bf16_capable(self) -> bool:
        """bfloat16 runs at float16's speed on Ampere (compute capability 8.0) and later GPUs,
        without loss scaling, and at several times float32's on CPUs with AMX or AVX512-BF16."""
        return self._gpu_from((8, 0)) if self.gpus else self.cpu_bf16

    def describe(self) -> str:
        if not self.gpus:
            return f"{self.cpus} CPU cores{' with bfloat16' if self.cpu_bf16 else ''}, no GPU"
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


def _cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags name bfloat16 matrix instructions (Linux; False where unknown)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")),
                         [])
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


@functools.lru_cache(maxsize=1)
def accelerators() -> Accelerators:
    """Found once per process (the devices do not change under a running job)."""
    from trainer.kerasflavor import tf

    gpus = []
    physical = tf.config.list_physical_devices("GPU")
    memory = _gpu_memory_mib() if physical else []
    for i, device in enumerate(physical):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": details.get("device_name", device.name),
                     "compute_capability": details.get("compute_capability"),
                     "memory_mib": memory[i] if i < len(memory) else None})
    return Accelerators(cpus=os.cpu_count() or 1, gpus=tuple(gpus), cpu_bf16=_cpu_has_bf16())


def precision_policy(setting: str, acc: Accelerators) -> str:
    """The Keras dtype policy for `train.mixed_precision`: `auto` is bfloat16 where the device
    computes it fast (Ampere and later GPUs, CPUs with AMX-BF16 or AVX512-BF16), float16 on
    older GPUs with tensor cores, float32 elsewhere."""
    if setting == "auto":
        if acc.bf16_capable:
            return "mixed_bfloat16"
        return "mixed_float16" if acc.fp16_capable else "float32"
    return {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16", "off": "float32"}[setting]


def deterministic(setting, acc: Accelerators) -> bool:
    """`train.deterministic`: `auto` is deterministic ops on the CPU, where they cost little and
    resumes repeat bit for bit, and not on a GPU, where they force slower cuDNN algorithms."""
    return not acc.gpus if setting == "auto" else bool(setting)


def use_xla(setting, acc: Accelerators) -> bool:
    """`train.jit_compile`: `auto` is XLA on a GPU only (NOTES: slower on this CPU for these nets)."""
    return bool(acc.gpus) if setting == "auto" else bool(setting)


def share_gpus() -> None:
    """Let several processes share each GPU (a search's --parallel workers): TensorFlow otherwise
    takes nearly all of a GPU's memory at start, and the second process fails. Call before any
    op runs; a no-op without GPUs."""
    from trainer.kerasflavor import tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)

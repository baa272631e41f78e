"""Where the job runs: seeding, the tf.distribute strategy, and logging.

The only module below `task.py` that reads environment variables or asks which devices exist.
"""

from __future__ import annotations

import logging
import sys

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

"""A real training job that delivers a real signal to itself at a chosen moment.

    python tests/preempted_job.py SIGNAL AFTER_BATCHES OUTPUT_DIR [overrides...]

sends SIGNAL (SIGTERM, SIGKILL; NONE: no signal) to its own process when this process has
trained AFTER_BATCHES batches; a SIGTERM backup then comes one batch later. The preemption tests
use it to interrupt a run at a known point.
"""

import os
import signal
import sys
import time

from trainer import config, job
from trainer.runtime import logs
from trainer.runtime.platform import detect
from trainer.kerasflavor import keras


class SignalAfter(keras.callbacks.Callback):
    def __init__(self, batches: int, sig: int):
        super().__init__()
        self.left, self.sig = batches, sig

    def on_train_batch_end(self, batch, logs=None):
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), self.sig)
            # The preemption handler polls for the signal once a second. Holding this step until
            # it has looked makes the backup's step the next one on any machine, fast or slow,
            # instead of wherever training had got to a second later.
            time.sleep(1.5)


def main() -> None:
    sig = getattr(signal, sys.argv[1], None)
    when, output_dir, overrides = sys.argv[2], sys.argv[3], sys.argv[4:]
    logs.setup_logging()
    callbacks = []
    if sys.argv[1] != "NONE":
        callbacks.append(SignalAfter(int(when), sig))
    job.run(config.load(None, overrides, output_dir=output_dir), detect(), callbacks=callbacks)


if __name__ == "__main__":
    main()

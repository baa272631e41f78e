"""What the preemption backup costs per training step: `fit` on a trivial model (so the
per-step callback work shows, not the model) with and without `PreemptionBackup`, beside the
per-batch callback the job always has (TerminateOnNaN).

    python benchmarks/preemption_overhead.py [--steps 3000] [--repeats 3]

Prints milliseconds per step for both and the difference. A real model's step is far longer
(10 ms for the seed CNN at batch 8 on 2 CPU cores, well under that on a GPU for large batches).
"""

import argparse
import tempfile
import time

import numpy as np

from trainer.kerasflavor import keras, tf
from trainer.callbacks.preemption_backup import PreemptionBackup
from trainer.training.preemption import SigtermWatch
from trainer.storage.rundir import RunDir


def time_fit(steps: int, with_backup: bool) -> float:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((steps, 1), np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(1)
    callbacks = [keras.callbacks.TerminateOnNaN()]  # the job's own per-batch callback
    with tempfile.TemporaryDirectory() as out:
        run = RunDir(out, "bench")
        if with_backup:
            callbacks.append(PreemptionBackup(run, SigtermWatch(), steps_per_epoch=steps))
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)  # warm-up
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
        seconds = time.perf_counter() - start
        run.cleanup()
    return seconds / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plain = min(time_fit(args.steps, False) for _ in range(args.repeats))
    backup = min(time_fit(args.steps, True) for _ in range(args.repeats))
    print(f"ms per step, trivial model, best of {args.repeats} x {args.steps} steps")
    print(f"  without the preemption backup: {plain:.3f}")
    print(f"  with it:                       {backup:.3f}")
    print(f"  cost per step:                 {backup - plain:.3f}")


if __name__ == "__main__":
    main()

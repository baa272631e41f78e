"""Preemption under several sizes of call, in one process (TensorFlow starts once).

    python tests/preempted_calls.py OUTPUT_DIR SCENARIO... -- [overrides...]

A SCENARIO is `STEPS_PER_EXECUTION:AFTER_CALLS`: the run `spe<N>-<CALLS>` is sent SIGTERM after that
many calls (as in preempted_job.py: at a call's end, which is held until the handler has looked),
then restarted to its end. A run `whole`, never interrupted, comes first. Prints one JSON object
on the last line: per scenario, the exit status of the preempted part and the log lines of both.
"""

import json
import logging
import signal
import sys

from preempted_job import SignalAfter
from trainer import config, job
from trainer.kerasflavor import keras
from trainer.runtime import logs
from trainer.runtime.platform import detect
from trainer.training.preemption import Preempted


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def part(output_dir, overrides, callbacks=()):
    """One run of the job, as a fresh process would start it; returns (exit status, log lines)."""
    keras.backend.clear_session()  # the layers' names, as in a fresh process
    lines = Lines()
    logging.getLogger("trainer").addHandler(lines)
    try:
        job.run(config.load(None, overrides, output_dir=output_dir), detect(), callbacks=callbacks)
        code = 0
    except Preempted as exc:
        code = exc.code
    finally:
        logging.getLogger("trainer").removeHandler(lines)
    return code, lines.lines


def main() -> None:
    split = sys.argv.index("--")
    output_dir, scenarios, overrides = sys.argv[1], sys.argv[2:split], sys.argv[split + 1:]
    logs.setup_logging()
    found = {"whole": part(output_dir, ["name=whole", *overrides])[0]}
    for scenario in scenarios:
        spe, calls = scenario.split(":")
        sets = [f"name=spe{spe}-{calls}", f"train.steps_per_execution={spe}", *overrides]
        code, cut = part(output_dir, sets, [SignalAfter(int(calls), signal.SIGTERM)])
        done, resumed = part(output_dir, sets)
        found[scenario] = {"code": code, "cut": cut, "resumed_code": done, "resumed": resumed}
    print(json.dumps(found))


if __name__ == "__main__":
    main()

"""What the preemption tests share: the run they interrupt, the real CLI and the self-signalling
job (tests/preempted_job.py) that interrupt it, and the bit-for-bit comparison of the weights.
Each test module gets its own uninterrupted run (a module fixture), so the three modules can run
in different processes of the suite."""

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import ROOT, run_cli

# The demo data, 160 images a class, on the seed CNN with dropout and augmentation: STEPS
# batches an epoch (336 training images in batches of 8), one step per call (the batch hooks, and
# so the signals below, count calls), the cosine schedule (a function of the optimizer's step,
# which a resume must restore), the precision as it comes (bfloat16 on a CPU that has it). A run
# takes half the time of the demo's 400 a class (12 s against 25 s on a quiet machine).
STEPS = 42
COMMON = ["model.name=hexagonal_cnn", "train.epochs=4", "train.batch_size=8",
          "data.samples_per_class=160", "train.steps_per_execution=1", "train.lr_schedule=cosine",
          "train.early_stopping_patience=0", "data.augment=[flip_left_right]",
          "output.plots=false", "output.report=false", "output.saved_model=false"]
BACKUP = re.compile(r"preempted: backup after epoch (\d+) batch (\d+)/(\d+) saved")


def sets(name):
    return [arg for o in [f"name={name}", *COMMON] for arg in ("--set", o)]


def train(out, name, env=None):
    """The real CLI, run to the end."""
    done = run_cli("--output_dir", str(out), *sets(name), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def interrupt(out, name, sig, when, env=None, extra=()):
    """The real job in a child process that sends itself `sig` (see preempted_job.py)."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "preempted_job.py"), sig, str(when), str(out),
         f"name={name}", *COMMON, *extra],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, **(env or {})),
        capture_output=True, text=True, timeout=300)


def weights(path):
    found = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(
            lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not np.array_equal(wa[k], wb[k])]
    assert not differ, {k: float(np.abs(wa[k] - wb[k]).max()) for k in differ}


def backup_position(stdout):
    epoch, batch, steps = map(int, BACKUP.search(stdout).groups())
    return epoch, batch, steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(out, "whole")
    return out / "whole" / "model.h5"

"""Preemption of a two-worker job (real tf.distribute processes on loopback), and SIGTERM acted on
at the next call whatever the call's size. Every restarted run ends with the weights of a run
never interrupted, bit for bit."""

import json
import os
import subprocess
import sys

import pytest

import gcs_emulator
from conftest import ROOT
from preemption_runs import assert_same_weights, backup_position
from trainer.training.preemption import RESTART_EXIT_CODE

def _two_workers(out, name, signals, timeout=400):
    """Start both workers of a two-worker job on fresh loopback ports; `signals` gives each
    worker's (signal, after batches). Returns the Popen objects."""
    ports = [gcs_emulator.free_port(), gcs_emulator.free_port()]
    procs = []
    for index, (sig, when) in enumerate(signals):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=ROOT)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "preempted_job.py"), sig, str(when),
             str(out), f"name={name}", *TWO_WORKERS],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs, timeout=400):
    try:
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, results)]


# The demo data, 160 images a class: 21 steps an epoch (336 training images, a global batch of
# 16 over the two workers).
TWO_WORKERS = ["model.name=hexagonal_cnn", "train.epochs=2", "train.batch_size=8",
               "data.samples_per_class=160", "train.early_stopping_patience=0",
               "output.plots=false", "output.report=false", "output.saved_model=false"]


@pytest.fixture(scope="module")
def two_workers_uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-workers")
    for rc, _, err in _finish(_two_workers(out, "whole", [("NONE", 0), ("NONE", 0)])):
        assert rc == 0, err[-3000:]
    return out / "whole" / "model.h5"


def test_two_workers_one_preempted_both_back_up_at_the_same_step(tmp_path,
                                                                 two_workers_uninterrupted):
    results = _finish(_two_workers(tmp_path, "t", [("NONE", 0), ("SIGTERM", 10)]))
    for rc, _, err in results:
        assert rc == RESTART_EXIT_CODE, err[-3000:]
    positions = {backup_position(out)[:2] for _, out, _ in results}
    assert len(positions) == 1  # the handler agreed one step across the workers
    results = _finish(_two_workers(tmp_path, "t", [("NONE", 0), ("NONE", 0)]))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "from its backup" in results[0][1]
    assert_same_weights(tmp_path / "t" / "model.h5", two_workers_uninterrupted)


def test_two_workers_one_killed_both_restarted(tmp_path, two_workers_uninterrupted):
    # Worker 1 dies without warning in epoch 2 (21 batches an epoch); worker 0 cannot go on
    # without it, and the platform restarts the whole job: both processes are killed.
    chief, worker = _two_workers(tmp_path, "cut", [("NONE", 0), ("SIGKILL", 30)])
    worker.wait(timeout=400)
    assert worker.returncode == -9
    chief.kill()
    chief.wait()
    state = json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1

    results = _finish(_two_workers(tmp_path, "cut", [("NONE", 0), ("NONE", 0)]))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "from epoch 1 (of 2)" in results[0][1]
    assert_same_weights(tmp_path / "cut" / "model.h5", two_workers_uninterrupted)


# Calls of every size against an epoch of 6 steps (84 training rows, batch 14): smaller with and
# without a remainder, equal, larger, and as large as `auto` makes them. Each scenario is
# STEPS_PER_EXECUTION:AFTER_CALLS (SIGTERM after that many calls, see preempted_calls.py).
CALLS = ["model.name=tiny_cnn", "train.epochs=3", "train.batch_size=14", "data.samples_per_class=40",
         "train.lr_schedule=cosine", "train.early_stopping_patience=0", "output.plots=false",
         "output.report=false", "output.saved_model=false"]
CALL_STEPS, CALL_EPOCHS = 6, 3
CALL_SCENARIOS = ["2:1", "4:2", "6:1", "10:1", "64:1"]


@pytest.fixture(scope="module")
def preempted_calls(tmp_path_factory):
    """Every scenario and an uninterrupted run, in one process; returns (folder, results)."""
    out = tmp_path_factory.mktemp("calls")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "preempted_calls.py"), str(out),
         *CALL_SCENARIOS, "--", *CALLS],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout.splitlines()[-1])


def _call_ends(per_call):
    """The batch (1-based, within its epoch) at which each call of the run ends, with its epoch."""
    return [(epoch, min(start + per_call, CALL_STEPS)) for epoch in range(1, CALL_EPOCHS + 1)
            for start in range(0, CALL_STEPS, per_call)]


@pytest.mark.parametrize("scenario", CALL_SCENARIOS)
def test_sigterm_is_acted_on_at_the_next_call_whatever_its_size(preempted_calls, scenario):
    """SIGTERM is acted on at the next call's end for every call size: a call that ends mid-epoch saves a
    backup there; one that ends an epoch (every call, when a call covers the epoch) stops after
    that epoch's checkpoint. Either way the restart ends with the weights of a run never stopped."""
    out, found = preempted_calls
    per_call, calls = map(int, scenario.split(":"))
    result = found[scenario]
    assert result["code"] == RESTART_EXIT_CODE, result["cut"][-5:]
    assert not any("end of training" in line for line in result["cut"])
    epoch, batch = _call_ends(per_call)[calls]  # the call after the signal (0-based: calls)
    run = out / f"spe{per_call}-{calls}"
    if batch < CALL_STEPS:
        assert backup_position("\n".join(result["cut"])) == (epoch, batch, CALL_STEPS)
        resumed = f"from its backup in epoch {epoch}, at batch {batch + 1} of {CALL_STEPS}"
    else:
        assert f"preempted: epoch {epoch} ended and its checkpoint is saved to {run}" in result["cut"][-1]
        resumed = f"from epoch {epoch} (of {CALL_EPOCHS})"
        assert not (run / "checkpoints" / "backup").exists()
    assert result["resumed_code"] == 0
    assert any(resumed in line for line in result["resumed"]), result["resumed"]
    assert_same_weights(run / "model.h5", out / "whole" / "model.h5")

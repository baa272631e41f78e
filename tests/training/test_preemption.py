"""Preemption and restart, with real signals: SIGTERM mid-epoch, SIGKILL, two preemptions, a
preemption during the final upload to the GCS emulator, and damaged backups. Every restarted
run must end with the same weights, bit for bit, as a run never interrupted (CPU, fixed seed,
deterministic ops)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest

import gcs_emulator
from conftest import ROOT, run_cli
from trainer import storage
from trainer.training.preemption import RESTART_EXIT_CODE

# The demo data on the seed CNN with dropout and augmentation: 105 batches an epoch, one step per
# call (the batch hooks, and so the signals below, count calls), the cosine schedule (a function
# of the optimizer's step, which a resume must restore), the precision as it comes (bfloat16 on a
# CPU that has it).
COMMON = ["model.name=hexagonal_cnn", "train.epochs=4", "train.batch_size=8",
          "train.steps_per_execution=1", "train.lr_schedule=cosine",
          "train.early_stopping_patience=0", "data.augment=[flip_left_right]",
          "output.plots=false", "output.report=false", "output.saved_model=false"]
BACKUP = re.compile(r"preempted: backup after epoch (\d+) batch (\d+)/(\d+) saved")


def _sets(name):
    return [arg for o in [f"name={name}", *COMMON] for arg in ("--set", o)]


def train(out, name, env=None):
    """The real CLI, run to the end."""
    done = run_cli("--output_dir", str(out), *_sets(name), env=env)
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


def test_sigterm_mid_epoch_saves_a_backup_and_the_restart_matches_an_uninterrupted_run(
        tmp_path, uninterrupted):
    cut = interrupt(tmp_path, "r", "SIGTERM", 10)
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    epoch, batch, steps = backup_position(cut.stdout)
    assert (epoch, batch, steps) == (1, 11, 105)  # the step after the signal, mid-epoch
    run = tmp_path / "r"
    assert (run / "checkpoints" / "backup" / "checkpoint").is_file()
    assert not (run / "model.h5").exists()

    resumed = train(tmp_path, "r")
    assert f"from its backup in epoch {epoch}, at batch {batch + 1} of {steps}" in resumed.stdout
    assert_same_weights(run / "model.h5", uninterrupted)
    assert not (run / "checkpoints" / "backup").exists()  # a finished run needs no backup
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4"]


def test_sigkill_without_grace_resumes_from_the_last_epoch(tmp_path, uninterrupted):
    cut = interrupt(tmp_path, "k", "SIGKILL", 170)  # in epoch 2 (105 batches each)
    assert cut.returncode == -9
    assert not (tmp_path / "k" / "checkpoints" / "backup").exists()
    resumed = train(tmp_path, "k")
    assert "resuming" in resumed.stdout and "from epoch 1 (of 4)" in resumed.stdout
    assert_same_weights(tmp_path / "k" / "model.h5", uninterrupted)


def test_two_preemptions_in_one_run(tmp_path, uninterrupted):
    first = interrupt(tmp_path, "two", "SIGTERM", 10)
    assert first.returncode == RESTART_EXIT_CODE, first.stderr[-3000:]
    assert backup_position(first.stdout) == (1, 11, 105)
    second = interrupt(tmp_path, "two", "SIGTERM", 150)
    assert second.returncode == RESTART_EXIT_CODE, second.stderr[-3000:]
    assert "from its backup in epoch 1, at batch 12 of 105" in second.stdout
    # 11 + 150 batches in all, then the next one: batch 162 overall, the 57th of epoch 2.
    assert backup_position(second.stdout) == (2, 57, 105)
    train(tmp_path, "two")
    assert_same_weights(tmp_path / "two" / "model.h5", uninterrupted)


class UploadHold:
    """A TCP relay in front of the GCS emulator that holds the upload of one object: it forwards
    everything until a request that uploads an object whose name ends in `/<name>` comes by,
    forwards that request's first bytes only, sends SIGTERM to the job (`pid`, set once the job
    is started) and forwards nothing more on that connection; `close()` then drops it, mid-request.
    Other requests pass. `held` is set once the upload is held and the signal sent."""

    def __init__(self, target_port: int, name: str):
        self.target_port = target_port
        self.pattern = re.compile(rb'POST /upload/storage/v1/b/.*?(?:"name": ?"[^"]*/|name=[^ &]*%2F)'
                                  + re.escape(name.encode()) + rb'["& ]', re.S)
        self.pid = None
        self.held = threading.Event()
        self._sockets = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def env(self) -> dict:
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()

    def _pipe(self, src, dst, watch: bool) -> None:
        seen = b""
        try:
            while chunk := src.recv(65536):
                if watch and not self.held.is_set():
                    seen = seen[-4096:] + chunk  # a request line may span two reads
                    if self.pattern.search(seen):
                        dst.sendall(chunk[:len(chunk) // 2])  # the request is under way
                        os.kill(self.pid, signal.SIGTERM)
                        self.held.set()
                        while src.recv(65536):  # nothing more, until the job is gone
                            pass
                        break
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_preemptions_mid_epoch_and_while_uploading_the_model_to_gcs(tmp_path, gcs, uninterrupted):
    out = gcs.url("preempted-upload")
    run = storage.join(out, "up")
    first = interrupt(out, "up", "SIGTERM", 10, env=gcs.env())
    assert first.returncode == RESTART_EXIT_CODE, first.stderr[-3000:]
    assert storage.exists(storage.join(run, "checkpoints", "backup", "checkpoint"))

    # The restart trains to the end; SIGTERM comes while model.h5 is on its way to the bucket.
    hold = UploadHold(gcs.port, "model.h5")
    try:
        second = subprocess.Popen(
            [sys.executable, "-m", "trainer.task", "--output_dir", out, *_sets("up")], cwd=ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **hold.env()),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hold.pid = second.pid
        stdout, stderr = second.communicate(timeout=300)
    finally:
        hold.close()
    assert hold.held.is_set(), stdout[-3000:] + stderr[-3000:]  # the signal came mid-upload
    assert second.returncode == RESTART_EXIT_CODE, stderr[-3000:]
    assert "from its backup" in stdout and "SIGTERM received" in stdout
    # The upload was cut off midway (the server got part of the request, then the connection
    # closed): the bucket holds no model.h5, not a part of one.
    model_url = storage.join(run, "model.h5")
    assert not storage.exists(model_url)

    resumed = train(out, "up", env=gcs.env())
    assert "evaluating only" in resumed.stdout
    storage.get_file(model_url, str(tmp_path / "model.h5"))
    assert_same_weights(tmp_path / "model.h5", uninterrupted)
    assert storage.exists(storage.join(run, "metrics.json"))
    assert not storage.exists(storage.join(run, "checkpoints", "backup", "checkpoint"))


def sigterm_after_first_epoch(module, args, env, log_path):
    """The real command, sent SIGTERM as Vertex AI does once its first epoch line is out (so
    during the second epoch); returns (exit status, stdout)."""
    with open(log_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
                                stdout=subprocess.PIPE, stderr=err, text=True)
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if "epoch 1/4 " in line:
                    proc.send_signal(signal.SIGTERM)
                    break
            lines.append(proc.communicate(timeout=300)[0])
        finally:
            proc.kill()
    return proc.returncode, "".join(lines)


@pytest.mark.parametrize("module", ["trainer.task", "trainer.train_model_cloud"])
def test_sigterm_to_the_real_command_mid_training_then_the_same_command_resumes(
        tmp_path, uninterrupted, module):
    if module == "trainer.task":
        args, env = ["--output_dir", str(tmp_path), *_sets("cmd")], {}
        run = tmp_path / "cmd"
        model, backup = run / "model.h5", run / "checkpoints" / "backup"
    else:  # as on Vertex AI: the folders come from AIP_* variables, the log is JSON lines
        args = _sets("cmd")
        env = {"CLOUD_ML_JOB_ID": "123", "AIP_MODEL_DIR": str(tmp_path / "model"),
               "AIP_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
               "AIP_TENSORBOARD_LOG_DIR": str(tmp_path / "logs")}
        model, backup = tmp_path / "model" / "model.h5", tmp_path / "checkpoints" / "backup"
    code, stdout = sigterm_after_first_epoch(module, args, env, tmp_path / "stderr-1.txt")
    assert code == RESTART_EXIT_CODE, (tmp_path / "stderr-1.txt").read_text()[-3000:]
    epoch, batch, steps = backup_position(stdout)
    assert epoch >= 2 and batch < steps  # mid-training, after the first epoch
    assert (backup / "checkpoint").is_file() and not model.exists()

    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"from its backup in epoch {epoch}, at batch {batch + 1} of {steps}" in done.stdout
    assert_same_weights(model, uninterrupted)
    assert not backup.exists()


def test_periodic_backups_let_a_killed_run_resume_mid_epoch(tmp_path, uninterrupted):
    every = "train.backup_every_steps=25"
    cut = interrupt(tmp_path, "p", "SIGKILL", 170, extra=[every])
    assert cut.returncode == -9
    done = run_cli("--output_dir", str(tmp_path), *_sets("p"), "--set", every)
    assert done.returncode == 0, done.stderr[-3000:]
    # Killed after batch 170 - steps of epoch 2 (1-based); the last backup came fewer than 25
    # batches before, and the run resumes at the batch after it.
    batch, steps = map(int, re.search(r"from its backup in epoch 2, at batch (\d+) of (\d+)",
                                      done.stdout).groups())
    killed_after = 170 - steps
    assert killed_after - 25 < batch <= killed_after
    assert_same_weights(tmp_path / "p" / "model.h5", uninterrupted)


def test_several_steps_per_call_back_up_after_a_whole_call_and_resume_exactly(tmp_path,
                                                                              uninterrupted):
    per_call = ["--set", "train.steps_per_execution=4"]
    cut = interrupt(tmp_path, "spe", "SIGTERM", 3, extra=per_call[1:])  # after 3 calls: 12 batches
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    # The signal comes inside the fourth call (batches 13-16); the backup stands for its end.
    assert backup_position(cut.stdout) == (1, 16, 105)
    done = run_cli("--output_dir", str(tmp_path), *_sets("spe"), *per_call)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "from its backup in epoch 1, at batch 17 of 105" in done.stdout
    # four steps per call train exactly as one step per call does
    assert_same_weights(tmp_path / "spe" / "model.h5", uninterrupted)


def test_periodic_backups_count_steps_not_calls(tmp_path, uninterrupted):
    every = ["train.backup_every_steps=24", "train.steps_per_execution=8"]
    cut = interrupt(tmp_path, "pc", "SIGKILL", 20, extra=every)  # 160 batches: 55 into epoch 2
    assert cut.returncode == -9
    done = run_cli("--output_dir", str(tmp_path), *_sets("pc"), *(a for e in every for a in ("--set", e)))
    assert done.returncode == 0, done.stderr[-3000:]
    # Calls end at batches 8, 16, ..., 104, 105 of each epoch (the last call is short) and a
    # backup follows every 24 steps, counted on across epochs: batches 24, 48, 72, 96 of epoch 1,
    # then 16 and 40 of epoch 2 (killed after 48, before its backup was due).
    assert "from its backup in epoch 2, at batch 41 of 105" in done.stdout
    assert_same_weights(tmp_path / "pc" / "model.h5", uninterrupted)


@pytest.mark.parametrize("damage", ["flip bytes in the data", "truncate the index"])
def test_a_damaged_backup_is_set_aside_with_a_warning(tmp_path, uninterrupted, damage):
    cut = interrupt(tmp_path, "d", "SIGTERM", 10)
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    backup = tmp_path / "d" / "checkpoints" / "backup"
    if damage.startswith("flip"):
        path = next(backup.glob("ckpt-*.data-*"))
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(raw))
    else:
        path = next(backup.glob("ckpt-*.index"))
        path.write_bytes(path.read_bytes()[:40])

    resumed = train(tmp_path, "d")
    assert "is damaged" in resumed.stdout and "resuming from the last epoch checkpoint" in resumed.stdout
    # The epoch checkpoint carries everything too, so even this restart ends bit for bit equal.
    assert_same_weights(tmp_path / "d" / "model.h5", uninterrupted)


def test_a_damaged_epoch_checkpoint_starts_over_with_a_warning(tmp_path, uninterrupted):
    cut = interrupt(tmp_path, "s", "SIGKILL", 170)
    assert cut.returncode == -9
    (tmp_path / "s" / "checkpoints" / "state.json").write_text('{"epoch": 1, "hist')
    resumed = train(tmp_path, "s")
    assert "is damaged" in resumed.stdout and "starting the run over" in resumed.stdout
    assert_same_weights(tmp_path / "s" / "model.h5", uninterrupted)


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


TWO_WORKERS = ["model.name=hexagonal_cnn", "train.epochs=2", "train.batch_size=8",
               "train.early_stopping_patience=0", "output.plots=false", "output.report=false",
               "output.saved_model=false"]


@pytest.fixture(scope="module")
def two_workers_uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-workers")
    for rc, _, err in _finish(_two_workers(out, "whole", [("NONE", 0), ("NONE", 0)])):
        assert rc == 0, err[-3000:]
    return out / "whole" / "model.h5"


def test_two_workers_one_preempted_both_back_up_at_the_same_step(tmp_path,
                                                                 two_workers_uninterrupted):
    results = _finish(_two_workers(tmp_path, "t", [("NONE", 0), ("SIGTERM", 20)]))
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
    # Worker 1 dies without warning in epoch 2 (53 batches an epoch); worker 0 cannot go on
    # without it, and the platform restarts the whole job: both processes are killed.
    chief, worker = _two_workers(tmp_path, "cut", [("NONE", 0), ("SIGKILL", 80)])
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

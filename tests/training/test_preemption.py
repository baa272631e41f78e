"""Preemption and restart of one process, with real signals: SIGTERM mid-epoch, SIGKILL, two
preemptions, SIGTERM to the real commands, and a preemption during the final upload to the GCS
emulator. Every restarted run must end with the same weights, bit for bit, as a run never
interrupted (CPU, fixed seed, deterministic ops). Backups (periodic, per call, damaged) are in
test_preemption_backups.py, two workers and calls of every size in test_preemption_workers.py."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, run_cli
from preemption_runs import (STEPS, assert_same_weights, backup_position, interrupt, sets, train,
                             uninterrupted)  # noqa: F401 - uninterrupted is a fixture
from trainer import storage
from trainer.training.preemption import RESTART_EXIT_CODE

def test_sigterm_mid_epoch_saves_a_backup_and_the_restart_matches_an_uninterrupted_run(
        tmp_path, uninterrupted):
    cut = interrupt(tmp_path, "r", "SIGTERM", 10)
    assert cut.returncode == RESTART_EXIT_CODE, cut.stderr[-3000:]
    epoch, batch, steps = backup_position(cut.stdout)
    assert (epoch, batch, steps) == (1, 11, STEPS)  # the step after the signal, mid-epoch
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
    cut = interrupt(tmp_path, "k", "SIGKILL", STEPS + 18)  # in epoch 2
    assert cut.returncode == -9
    assert not (tmp_path / "k" / "checkpoints" / "backup").exists()
    resumed = train(tmp_path, "k")
    assert "resuming" in resumed.stdout and "from epoch 1 (of 4)" in resumed.stdout
    assert_same_weights(tmp_path / "k" / "model.h5", uninterrupted)


def test_two_preemptions_in_one_run(tmp_path, uninterrupted):
    first = interrupt(tmp_path, "two", "SIGTERM", 10)
    assert first.returncode == RESTART_EXIT_CODE, first.stderr[-3000:]
    assert backup_position(first.stdout) == (1, 11, STEPS)
    second = interrupt(tmp_path, "two", "SIGTERM", 50)
    assert second.returncode == RESTART_EXIT_CODE, second.stderr[-3000:]
    assert f"from its backup in epoch 1, at batch 12 of {STEPS}" in second.stdout
    # 11 + 50 batches in all, then the next one: batch 62 overall, the 20th of epoch 2.
    assert backup_position(second.stdout) == (2, 62 - STEPS, STEPS)
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
            [sys.executable, "-m", "trainer.task", "--output_dir", out, *sets("up")], cwd=ROOT,
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


# The demo's own 400 images a class, 105 steps an epoch: the signal comes once the first epoch's
# line is out and the preemption handler looks for it once a second, so the second epoch must
# last longer than that on a fast machine.
DEMO = ["--set", "data.samples_per_class=400"]


@pytest.fixture(scope="module")
def uninterrupted_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted-demo")
    done = run_cli("--output_dir", str(out), *sets("whole"), *DEMO)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "whole" / "model.h5"


@pytest.mark.parametrize("module", ["trainer.task", "trainer.train_model_cloud"])
def test_sigterm_to_the_real_command_mid_training_then_the_same_command_resumes(
        tmp_path, uninterrupted_demo, module):
    if module == "trainer.task":
        args, env = ["--output_dir", str(tmp_path), *sets("cmd"), *DEMO], {}
        run = tmp_path / "cmd"
        model, backup = run / "model.h5", run / "checkpoints" / "backup"
    else:  # as on Vertex AI: the folders come from AIP_* variables, the log is JSON lines
        args = [*sets("cmd"), *DEMO]
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
    assert_same_weights(model, uninterrupted_demo)
    assert not backup.exists()

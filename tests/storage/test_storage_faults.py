"""Storage faults for real: a private GCS emulator reached through a relay whose line is cut
under a running job (every connection reset) and restored, while the server keeps its objects;
and a local upload killed mid-copy.

gcsfs retries every request itself (6 tries over about 35 s); a short outage must pass unnoticed,
a lasting one must end the job with one error line and leave what was uploaded before intact.
"""

import json
import os
import resource
import subprocess
import sys
import time

import pytest

import gcs_emulator
from conftest import ROOT, blob_images, error_line, run_cli, write_npz

RUN = "runs/blobs"


class Bucket:
    """A private emulator behind a relay: the job reaches it through the relay, whose line can be
    cut (an outage) and restored; the test looks at the server directly, outage or not."""

    def __init__(self):
        self.server = gcs_emulator.start()
        self.relay = gcs_emulator.Relay(self.server)

    def cut(self) -> None:
        self.relay.cut()

    def restore(self) -> None:
        self.relay.restore()

    def blob(self, name: str):
        """The object, or None. A fresh handle, not the listed one: the emulator's media link
        names the host an object was uploaded through, here the relay."""
        bucket = self.server.client().bucket(self.server.bucket)
        return bucket.blob(name) if bucket.get_blob(name) is not None else None

    def state(self):
        blob = self.blob(f"{RUN}/checkpoints/state.json")
        return json.loads(blob.download_as_bytes()) if blob else None

    def close(self) -> None:
        self.relay.close()
        self.server.stop()


@pytest.fixture
def bucket():
    b = Bucket()
    yield b
    b.close()


def _job(bucket: Bucket, tmp_path, epochs: int) -> list[str]:
    """Data and output on the bucket; returns the command-line arguments of the job."""
    x, label, _ = blob_images(240, seed=3)
    client = bucket.server.client().bucket(bucket.server.bucket)
    for i in range(2):
        part = slice(120 * i, 120 * (i + 1))
        path = write_npz(tmp_path / "shards", f"s{i}.npz", x[part], label[part])
        client.blob(f"data/s{i}.npz").upload_from_filename(path)
    (tmp_path / "job.yaml").write_text(
        f"name: blobs\ndata:\n  format: npz\n  train: {bucket.server.url('data', '*.npz')}\n"
        "model:\n  name: tiny_cnn\ntrain:\n  early_stopping_patience: 0\noutput:\n  report: false\n")
    return ["--config", str(tmp_path / "job.yaml"), "--output_dir", bucket.server.url("runs"),
            "--set", f"train.epochs={epochs}"]


def _start(args: list[str], env: dict, log_path) -> subprocess.Popen:
    # stderr to a file: a pipe nobody reads while the job runs could fill and stall it.
    return subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env),
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))


def _wait_for_epoch(bucket: Bucket, proc: subprocess.Popen, epoch: int, log_path) -> int:
    deadline = time.monotonic() + 180
    while True:
        state = bucket.state()
        if state and state["epoch"] >= epoch:
            return state["epoch"]
        assert proc.poll() is None, f"the job ended too soon: {open(log_path).read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint reached the bucket"
        time.sleep(0.05)


def _wait_for_refusals(bucket: Bucket, proc: subprocess.Popen, count: int, log_path) -> None:
    """Until the job has tried the cut line `count` times (a first request and its retries)."""
    deadline = time.monotonic() + 180
    while bucket.relay.turned_away < count:
        assert proc.poll() is None, \
            f"the job ended during the outage: {open(log_path).read()[-3000:]}"
        assert time.monotonic() < deadline, \
            f"the job tried the bucket {bucket.relay.turned_away} times in the outage, not {count}"
        time.sleep(0.05)


def _download(bucket: Bucket, name: str, dest) -> bytes:
    bucket.blob(name).download_to_filename(str(dest))
    return open(dest, "rb").read()


def test_a_short_outage_mid_training_goes_unnoticed(bucket, tmp_path):
    from trainer.outputs import modelfile

    epochs = 10
    args = _job(bucket, tmp_path, epochs)
    log_path = tmp_path / "stderr.txt"
    proc = _start(args, bucket.relay.env(), log_path)
    _wait_for_epoch(bucket, proc, 1, log_path)
    bucket.cut()  # every request of the job now meets a reset connection
    # The outage lasts until a request of the job has failed and been tried again, and failed
    # again: the storage library's retries, not luck, carry the job through it.
    _wait_for_refusals(bucket, proc, 2, log_path)
    during = bucket.state()["epoch"]
    bucket.restore()
    assert proc.wait(timeout=300) == 0, open(log_path).read()[-3000:]
    assert during < epochs  # the outage fell in the middle of training

    metrics = json.loads(bucket.blob(f"{RUN}/metrics.json").download_as_bytes())
    assert metrics["training"]["epochs_trained"] == epochs
    history = bucket.blob(f"{RUN}/history.csv").download_as_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == list(range(1, epochs + 1))
    _download(bucket, f"{RUN}/model.h5", tmp_path / "model.h5")
    model, meta = modelfile.load(str(tmp_path / "model.h5"))
    assert meta["class_names"] == ["0", "1"] and model.output_shape == (None, 2)


def test_a_lasting_outage_fails_clearly_and_keeps_the_previous_model(bucket, tmp_path):
    from trainer.outputs import modelfile

    args = _job(bucket, tmp_path, epochs=2)
    first = run_cli(*args, env=bucket.relay.env())
    assert first.returncode == 0, first.stderr[-3000:]
    old_model = _download(bucket, f"{RUN}/model.h5", tmp_path / "old.h5")

    # The same run continued to 25 epochs; the bucket goes away for good after epoch 3.
    env = dict(bucket.relay.env(), TRAINER_STORAGE_RETRY_S="5")
    log_path = tmp_path / "stderr.txt"
    proc = _start([*args, "--set", "train.epochs=25"], env, log_path)
    _wait_for_epoch(bucket, proc, 3, log_path)
    bucket.cut()
    code = proc.wait(timeout=300)
    stderr = open(log_path).read()
    assert code == 2, stderr[-3000:]
    line = error_line(stderr)
    assert line.startswith("error: storage did not answer, ") and " gs://test-bucket/" in line, line
    # The job gave up because its budget ran out, and tried more than once before that.
    assert "no answer within TRAINER_STORAGE_RETRY_S=5 s" in line, line
    assert bucket.relay.turned_away >= 2, bucket.relay.turned_away

    # Back again: the previous model is untouched, and the checkpoint state names whole files.
    bucket.restore()
    assert _download(bucket, f"{RUN}/model.h5", tmp_path / "after.h5") == old_model
    state = bucket.state()
    assert 3 <= state["epoch"] < 25
    for suffix in (".index", ".data-00000-of-00001"):
        assert bucket.blob(f"{RUN}/checkpoints/{state['last']}{suffix}") is not None

    # The same command once the bucket answers: it resumes from that state and replaces the
    # model with a complete new one.
    again = run_cli(*args, "--set", "train.epochs=5", env=bucket.relay.env())
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads(bucket.blob(f"{RUN}/metrics.json").download_as_bytes())
    assert metrics["training"]["resumed_from_epoch"] == state["epoch"]
    new_model = _download(bucket, f"{RUN}/model.h5", tmp_path / "new.h5")
    assert new_model != old_model
    modelfile.load(str(tmp_path / "new.h5"))


def test_a_local_copy_cut_off_midway_leaves_the_old_file(tmp_path):
    """put_file into a local run folder copies to a temporary name and renames it over the old
    file. The copy here runs under a 1 MB file-size limit (RLIMIT_FSIZE, as a full disk would):
    the kernel refuses its writes past 1 MB of 4, and the old file must stay whole."""
    dest = tmp_path / "run" / "model.h5"
    dest.parent.mkdir()
    old, new = os.urandom(1 << 16), os.urandom(4 << 20)
    dest.write_bytes(old)
    (tmp_path / "new.h5").write_bytes(new)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from trainer import storage; "
         "storage.put_file(sys.argv[1], sys.argv[2])", str(tmp_path / "new.h5"), str(dest)],
        cwd=ROOT, preexec_fn=limit_file_size, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-2000:]
    assert dest.read_bytes() == old
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.h5"]  # no partial file left

    from trainer import storage  # and without the limit, the new file replaces it whole

    storage.put_file(str(tmp_path / "new.h5"), str(dest))
    assert dest.read_bytes() == new


def test_a_bad_retry_budget_is_one_clear_error(tmp_path):
    (tmp_path / "job.yaml").write_text("name: budget\n")  # the budget is the only thing wrong
    proc = run_cli("--config", str(tmp_path / "job.yaml"),
                   env={"TRAINER_STORAGE_RETRY_S": "soon"})
    assert proc.returncode == 2
    assert error_line(proc.stderr) == (
        "error: TRAINER_STORAGE_RETRY_S='soon', environment, expected a number of seconds above 0 "
        "(or unset, for the storage library's own retry schedule)")

"""Buckets for real: a GCS JSON-API server on loopback, the real command line, gcsfs underneath,
and google-cloud-storage to look at what landed."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import gcs_emulator
from conftest import ROOT, blob_images, run_cli, write_npz

ARTEFACTS = ("model.h5", "config.yaml", "history.csv", "metrics.json", "plots/history.png",
             "plots/confusion_matrix.png", "checkpoints/state.json")


def _upload_shards(gcs, tmp_path, prefix: str) -> str:
    from trainer import storage

    x, label, _ = blob_images(240, seed=3)
    for i, part in enumerate((slice(0, 120), slice(120, 240))):
        path = write_npz(tmp_path / "shards", f"s{i}.npz", x[part], label[part])
        storage.put_file(path, gcs.url(prefix, f"s{i}.npz"))
    return gcs.url(prefix, "*.npz")


def _blob_names(gcs, prefix: str) -> set[str]:
    return {b.name[len(prefix) + 1:] for b in gcs.client().list_blobs(gcs.bucket, prefix=prefix + "/")}


TB_KINDS = ("train", "validation")


def _has_events(names: set[str], kind: str) -> bool:
    return any(n.startswith(f"tensorboard/{kind}/events.out.tfevents") for n in names)


def _state(gcs, run_prefix: str):
    blob = gcs.client().bucket(gcs.bucket).get_blob(f"{run_prefix}/checkpoints/state.json")
    return json.loads(blob.download_as_bytes()) if blob else None


def test_training_from_and_into_a_bucket_survives_a_kill_and_resumes(gcs, tmp_path):
    from trainer import storage
    from trainer.outputs import modelfile

    data = _upload_shards(gcs, tmp_path, "e2e/data")
    (tmp_path / "job.yaml").write_text(
        f"name: blobs\ndata:\n  format: npz\n  train: {data}\nmodel:\n  name: tiny_cnn\n"
        "train:\n  epochs: 8\n  early_stopping_patience: 0\n")
    storage.put_file(str(tmp_path / "job.yaml"), gcs.url("e2e/job.yaml"))
    run = "e2e/runs/blobs"
    args = ["--config", gcs.url("e2e/job.yaml"), "--output_dir", gcs.url("e2e/runs")]

    # 1. Stop the job the way a preempted VM stops, once an epoch and its TensorBoard logs (both
    # of them: the train and the validation events are uploaded one after the other) are
    # committed to the bucket.
    log_path = tmp_path / "stderr.txt"
    with open(log_path, "w") as log:  # a file: a pipe nobody reads could fill and stall the job
        proc = subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)
    names: set[str] = set()
    deadline = time.monotonic() + 300
    while True:
        state = _state(gcs, run)
        names = _blob_names(gcs, run)
        if state and state["epoch"] >= 1 and all(_has_events(names, kind) for kind in TB_KINDS):
            break
        assert proc.poll() is None, \
            f"the job ended before it could be stopped: {log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, \
            f"no checkpoint with both TensorBoard logs reached the bucket within 300 s: {state}, {names}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = _state(gcs, run)["epoch"]
    names = _blob_names(gcs, run)
    assert 1 <= stopped_at < 8 and "model.h5" not in names, (stopped_at, names)
    # checkpoints (and, as the wait saw, TensorBoard logs) arrived while it trained, not at the end
    assert f"checkpoints/epoch-{stopped_at:04d}.index" in names

    # 2. The same command again (config read through the /gcs/ mount path) continues and finishes.
    args[1] = f"/gcs/{gcs.bucket}/e2e/job.yaml"
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = _blob_names(gcs, run)
    assert set(ARTEFACTS) <= names, set(ARTEFACTS) - names
    bucket = gcs.client().bucket(gcs.bucket)
    metrics = json.loads(bucket.blob(f"{run}/metrics.json").download_as_bytes())
    assert metrics["training"]["resumed_from_epoch"] == stopped_at
    history = bucket.blob(f"{run}/history.csv").download_as_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == list(range(1, 9))
    assert metrics["data"]["train"]["source"].startswith(f"gs://{gcs.bucket}/e2e/data/s0.npz")

    # 3. The model from the bucket loads and predicts.
    bucket.blob(f"{run}/model.h5").download_to_filename(str(tmp_path / "model.h5"))
    model, meta = modelfile.load(str(tmp_path / "model.h5"))
    x, label, _ = blob_images(20, seed=9)
    assert model.predict(x[..., None], verbose=0).shape == (20, 2)
    assert meta["name"] == "blobs" and meta["class_names"] == ["0", "1"]


def test_an_upload_killed_midway_leaves_the_old_model(gcs, tmp_path):
    from trainer import storage
    from trainer.storage.paths import filesystem

    dest = gcs.url("killed/run/model.h5")
    old, new = os.urandom(1 << 20), os.urandom(12 << 20)
    (tmp_path / "old.h5").write_bytes(old)
    (tmp_path / "new.h5").write_bytes(new)
    storage.put_file(str(tmp_path / "old.h5"), dest)

    # The new upload goes through a relay that forwards half of it and then holds the rest.
    proxy = gcs_emulator.StallingProxy(gcs.port, budget=6 << 20)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from trainer import storage; "
             "storage.put_file(sys.argv[1], sys.argv[2])", str(tmp_path / "new.h5"), dest],
            cwd=ROOT, env=dict(os.environ, STORAGE_EMULATOR_HOST=proxy.host))
        assert proxy.stalled.wait(60), "the upload never got under way"
        assert proc.poll() is None  # still uploading: killed in the middle of the body
        proc.kill()
        proc.wait()
    finally:
        proxy.close()
    assert 0 < proxy.forwarded < len(new)
    blob = gcs.client().bucket(gcs.bucket).get_blob("killed/run/model.h5")
    assert blob.size == len(old) and blob.download_as_bytes() == old

    # Why the package never streams into the final name: an error inside an open-for-write
    # commits what was written so far (NOTES.md), and this emulator shows it.
    fs, path = filesystem(gcs.url("killed/streamed/model.h5"))
    with pytest.raises(RuntimeError):
        with fs.open(path, "wb") as f:
            f.write(new[:1000])
            raise RuntimeError("the writer failed")
    assert gcs.client().bucket(gcs.bucket).get_blob("killed/streamed/model.h5").size == 1000


def test_the_emulator_fixture_fails_clearly_when_the_server_does_not_answer():
    with socket.socket() as busy:  # something else holds the port and never answers
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RuntimeError, match="did not answer on port .* within 3 s") as exc:
            gcs_emulator.start(port=busy.getsockname()[1], timeout_s=3)
    assert "Address already in use" in str(exc.value)


def test_storage_layer_on_gs_and_gcs_mount_paths(gcs, tmp_path):
    from trainer import storage
    from trainer.errors import UserError

    x, label, _ = blob_images(8)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=label)
    (tmp_path / "a.npz").write_bytes(buf.getvalue())
    storage.put_file(str(tmp_path / "a.npz"), gcs.url("layer/d/a.npz"))
    mount = f"/gcs/{gcs.bucket}/layer/d/a.npz"
    assert storage.normalize(mount) == gcs.url("layer/d/a.npz")  # no FUSE mount on this machine
    assert storage.read_bytes(mount) == buf.getvalue()
    assert storage.expand(f"/gcs/{gcs.bucket}/layer/d/*.npz", "data.train") == [gcs.url("layer/d/a.npz")]
    with pytest.raises(UserError, match=r"no files found, data.train=gs://.*/nothing/\*.npz"):
        storage.expand(gcs.url("layer/nothing/*.npz"), "data.train")


@pytest.mark.parametrize("latency_s, mb_per_s", [(0.03, 100), (0.1, 20)])
def test_the_slow_relay_answers_as_a_distant_bucket(gcs, latency_s, mb_per_s):
    """Each response starts no sooner than the latency after its request, and a connection
    carries no more than its bandwidth; the bytes are the server's."""
    import urllib.request

    payload = os.urandom(2_000_000)
    gcs.client().bucket(gcs.bucket).blob("slow/object").upload_from_string(payload)
    relay = gcs_emulator.SlowRelay(gcs, latency_s, mb_per_s * 1e6)
    url = f"{relay.host}/download/storage/v1/b/{gcs.bucket}/o/slow%2Fobject?alt=media"
    try:
        for size in (1, len(payload)):
            request = urllib.request.Request(url, headers={"Range": f"bytes=0-{size - 1}"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as answer:
                body = answer.read()
            took = time.perf_counter() - started
            assert body == payload[:size]
            assert took >= latency_s + size / (mb_per_s * 1e6) * 0.9, took
    finally:
        relay.close()


def test_rows_back_to_back_in_a_bucket_are_one_request(gcs, tmp_path):
    """Each request to a bucket waits out its latency: a block of contiguous rows is read in one
    ranged request, however many rows it holds (locally a preadv takes at most 512 of them)."""
    from trainer import storage

    size = 100
    data = np.random.default_rng(0).integers(0, 255, 3000 * size, dtype=np.uint8)
    gcs.client().bucket(gcs.bucket).blob("rows/f").upload_from_string(data.tobytes())
    relay = gcs_emulator.SlowRelay(gcs, latency_s=0.0, bytes_per_s=1e12)
    previous = gcs_emulator.use(relay)
    try:
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()  # one that talks to the relay
        for rows in (1, 600, 1200, 2500):
            offsets = (np.arange(rows) + 3) * size
            dest = np.zeros((rows, size), np.uint8)
            before = relay.responses
            got = storage.read_rows_into(gcs.url("rows/f"), offsets, size, dest,
                                         np.arange(rows) * size)
            assert got == rows and relay.responses - before == 1, (rows, relay.responses - before)
            assert np.array_equal(dest.ravel(), data[3 * size:(3 + rows) * size])
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        gcsfs.GCSFileSystem.clear_instance_cache()
        relay.close()

"""`model.weights: imagenet`: the chief downloads once per job and stores the weights in the run
folder; workers wait for that file and read it; a re-run reads it instead of downloading.

There is no route to storage.googleapis.com here, so Keras's own download code runs against its
cache: `~/.keras/models` (HOME moved to a temporary folder) holds a file of the name Keras asks
for, made from a keras.applications backbone with `weights=None`, and the expected hash of that
one file is this file's hash. Every other step is Keras's: `keras.applications` builds the model,
`get_file` finds the cached file and checks its hash, `load_weights` reads it. A proxy that
refuses every connection stands in for the network: a download that was not cached fails."""

import hashlib
import importlib
import shutil
import threading
import time

import h5py
import numpy as np
import pytest

from trainer import backbone_weights, backbones, config, imagenet_weights, models
from trainer.errors import UserError
from trainer.outputs import modelfile
from trainer.storage.rundir import RunDir

from conftest import blob_images, error_line, run_cli, run_job, write_npz

SMALL = "mobilenet_v3_small"
KEY = "small_224_1.0_float"  # keras.applications' name of its ImageNet file for SMALL
CACHED = f"weights_mobilenet_v3_{KEY}_no_top_v2.h5"
# bfloat16 on a CPU (the default where it has AVX512-BF16) is many times slower for this net.
QUICK = ("train.mixed_precision=off", "output.plots=false", "output.report=false")
NO_ROUTE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _arrays(path):
    """The arrays of a Keras .h5 weights file, layer by layer in its order (Keras's loading
    order; names are numbered per process, so order is what pairs layers)."""
    out = []
    with h5py.File(path, "r") as f:
        for name in f.attrs["layer_names"]:
            g = f[name.decode() if isinstance(name, bytes) else name]
            arrays = [np.asarray(g[w]) for w in g.attrs.get("weight_names", [])]
            if arrays:
                out.append(arrays)
    return out


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """Keras's cache holding SMALL's ImageNet file (random weights, seeded); returns (its path,
    the list of Keras's get_file calls). The network refuses every connection."""
    home = tmp_path / "home"
    (home / ".keras" / "models").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for key, value in NO_ROUTE.items():
        monkeypatch.setenv(key, value)
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    path = home / ".keras" / "models" / CACHED
    backbones.construct(SMALL, (32, 32)).save_weights(str(path))
    mobilenet = importlib.import_module("tf_keras.src.applications.mobilenet_v3")
    top_hash = mobilenet.WEIGHTS_HASHES[KEY][0]
    monkeypatch.setitem(mobilenet.WEIGHTS_HASHES, KEY,
                        (top_hash, hashlib.sha256(path.read_bytes()).hexdigest()))
    data_utils = importlib.import_module("tf_keras.src.utils.data_utils")
    real, calls = data_utils.get_file, []

    def counted(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("fname"))
        return real(*args, **kwargs)

    monkeypatch.setattr(data_utils, "get_file", counted)
    monkeypatch.setattr(backbone_weights, "_LOCAL", {})
    return path, calls


def _config(out, *overrides):
    return config.load(None, ["name=r", f"model.name={SMALL}", "model.weights=imagenet",
                              *overrides], output_dir=str(out))


def test_the_chief_stores_them_once_and_a_rerun_reads_the_runs_copy(keras_cache, tmp_path):
    """A real run: a new run whose data is missing leaves nothing (not even the weights); the
    run that trains stores the weights in its folder, and its model file predicts; a re-run that has no checkpoint to resume
    from (a job restarted before its first epoch) reads that copy, with Keras's cache gone."""
    cached, calls = keras_cache
    missing = ["data.format=npz", f"data.train={tmp_path / 'no-such-data.npz'}"]
    with pytest.raises(UserError, match="no-such-data"):
        run_job(tmp_path / "runs", "name=r", f"model.name={SMALL}", "model.weights=imagenet",
                *missing)
    assert len(calls) == 1 and not (tmp_path / "runs").exists()

    x, label, _ = blob_images(32, size=16, seed=2)
    data = write_npz(tmp_path / "d", "a.npz", x[..., None], label)
    result, _ = run_job(tmp_path / "runs", "name=r", f"model.name={SMALL}",
                        "model.weights=imagenet", "data.format=npz", f"data.train={data}",
                        "train.epochs=1", "train.batch_size=16", *QUICK)
    stored = tmp_path / "runs" / "r" / imagenet_weights.FOLDER / f"imagenet-{SMALL}.h5"
    assert len(calls) == 2 and calls[-1] == CACHED
    # The backbone trained, and its model file predicts (raw grey images in, as the data).
    model, meta = modelfile.load(result.outputs["model"])
    assert meta["input_shape"] == [16, 16, 1]
    probs = model.predict(x[:5, ..., None], verbose=0)
    assert probs.shape == (5, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    for got, want in zip(_arrays(stored), _arrays(cached), strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)

    cached.unlink()  # a download now fails: the proxy refuses
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(tmp_path / "runs" / "r" / name, ignore_errors=True)
    with pytest.raises(UserError, match="no-such-data"):  # the weights were read first
        run_job(tmp_path / "runs", "name=r", f"model.name={SMALL}", "model.weights=imagenet",
                *missing)
    assert len(calls) == 2 and stored.exists()  # not a new run: its stored weights are kept


def test_the_weights_the_model_starts_from_are_the_downloads_layer_by_layer(keras_cache,
                                                                           tmp_path):
    cached, calls = keras_cache
    cfg = _config(tmp_path / "runs", "model.params.image_size=48")
    run = RunDir(cfg.output.dir, cfg.name)
    try:
        local = backbone_weights.prepare(cfg, run)
        model = models.build_model(cfg, (16, 16, 1), 3)
    finally:
        run.cleanup()
    assert local.startswith(run.staging) and len(calls) == 1
    taken = [layer for layer in backbones.backbone_layers(model) if layer.weights]
    want = _arrays(cached)
    assert len(taken) == len(want) > 50
    for layer, arrays in zip(taken, want):
        for got, expected in zip(layer.get_weights(), arrays, strict=True):
            np.testing.assert_array_equal(got, expected)
    # A run that resumes from a checkpoint needs none: on the chief and on a worker alike.
    (tmp_path / "runs" / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "checkpoints" / "state.json").write_text('{"epoch": 1}')
    for chief in (True, False):
        run = RunDir(cfg.output.dir, cfg.name, chief=chief)
        assert backbone_weights.prepare(cfg, run) is None
        run.cleanup()
    assert len(calls) == 1


def test_a_worker_waits_for_the_chiefs_file_and_reads_it(keras_cache, tmp_path):
    """Roles given explicitly: the worker starts first and finds nothing; the chief downloads a
    second later; the worker reads the chief's file and downloads nothing itself."""
    cached, calls = keras_cache
    cfg = _config(tmp_path / "runs")
    chief = RunDir(cfg.output.dir, cfg.name, chief=True)
    worker = RunDir(cfg.output.dir, cfg.name, chief=False)
    done = {}

    def chief_job():
        time.sleep(1.0)
        done["started"] = time.monotonic()
        done["path"] = imagenet_weights.for_run(cfg, chief)

    thread = threading.Thread(target=chief_job)
    started = time.monotonic()
    thread.start()
    try:
        path = imagenet_weights.for_run(cfg, worker, wait_s=60)
    finally:
        thread.join()
    waited = time.monotonic() - started
    try:
        assert waited >= 1.0 and len(calls) == 1  # the chief's one download
        assert path.startswith(worker.staging)
        for got, want in zip(_arrays(path), _arrays(cached), strict=True):
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        chief.cleanup()
        worker.cleanup()


def test_a_worker_whose_chief_stores_nothing_ends_with_one_line(tmp_path):
    cfg = _config(tmp_path / "runs")
    worker = RunDir(cfg.output.dir, cfg.name, chief=False)
    try:
        with pytest.raises(UserError) as err:
            imagenet_weights.for_run(cfg, worker, wait_s=0.5)
    finally:
        worker.cleanup()
    message = str(err.value)
    assert "within 0.5 s, model.weights=imagenet" in message
    assert "give the weights as a file" in message and "\n" not in message
    # Other constructor options, another file: a re-run with another alpha takes not this one.
    other = _config(tmp_path / "runs", "model.params.alpha=0.75")
    assert imagenet_weights.file_name(cfg) == f"imagenet-{SMALL}.h5"
    assert imagenet_weights.file_name(other).startswith(f"imagenet-{SMALL}-")


def test_imagenet_without_internet_is_one_line_saying_to_give_a_file(tmp_path):
    """The real entry point, Keras's cache empty, no route out (a job without internet)."""
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)  # else Keras falls back to /tmp/.keras
    proc = run_cli("--set", f"model.name={SMALL}", "--set", "model.weights=imagenet",
                   "--output_dir", str(tmp_path / "runs"), env={**NO_ROUTE, "HOME": str(home)},
                   timeout=200)
    line = error_line(proc.stderr)
    assert proc.returncode == 2
    assert "model.weights=imagenet" in line and "give the weights as a file" in line
    assert not (tmp_path / "runs").exists()

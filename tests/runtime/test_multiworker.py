"""Two real worker processes on loopback ports, each with its own TF_CONFIG, train one job with
MultiWorkerMirroredStrategy, the way Vertex AI runs a job with several replicas."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gcs_emulator
from conftest import ROOT, blob_images, write_npz
from trainer.outputs import modelfile

# Each worker builds the demo's model through the user-builder hook, so that the test can see
# the weights a worker ends with even where that worker's own files are deleted.
WORKER = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from trainer.models import shapes_cnn

    def digest(model):
        return hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes()
                                       for w in model.get_weights())).hexdigest()

    MODELS = []
    def build(input_shape, num_outputs):
        model = shapes_cnn(input_shape, num_outputs)
        MODELS.append(model)
        print("INITIAL", digest(model), flush=True)
        return model

    from trainer import config, job
    from trainer.runtime import logs
    from trainer.runtime.platform import detect
    logs.setup_logging()
    cfg = config.load(None, sys.argv[2:], output_dir=sys.argv[1])
    job.run(cfg, detect())
    print("FINAL", digest(MODELS[-1]), flush=True)
""")


def _digest(weights) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest()


def _line(stdout: str, tag: str) -> str:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith(tag + " ")][-1]


def _finish(procs) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr), once every one has ended with status 0."""
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    return results


def _test_accuracy(run) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def test_two_workers_train_the_demo_in_step_as_well_as_one_and_only_the_chief_writes(tmp_path):
    """The demo (generated shapes) on two workers, and on one with the same global batch:
    each worker reads its half of the data, and the test accuracy is the same within noise."""
    out = tmp_path / "out"
    common = ["model.name=__main__:build", "train.epochs=4", "train.restore_best=false",
              "train.early_stopping_patience=0", "train.scale_lr_with_replicas=false"]
    ports = [gcs_emulator.free_port(), gcs_emulator.free_port()]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        tmp = tmp_path / f"tmp{index}"  # each worker's temporary files, to check they are gone
        tmp.mkdir()
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(tmp),
                   TF_CPP_MIN_LOG_LEVEL="3")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(out), "name=mw", "train.batch_size=16", *common],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    procs.append(subprocess.Popen(  # one worker, the same global batch of 32
        [sys.executable, "-c", WORKER, str(tmp_path / "one"), "name=sw", "train.batch_size=32",
         "output.plots=false", "output.report=false", *common], cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
    results = _finish(procs)
    (chief_out, _), (worker_out, _), _ = results

    final = {_line(o, "FINAL") for o, _ in results[:2]}
    assert len(final) == 1  # both workers end with the same weights ...
    assert final != {_line(chief_out, "INITIAL")}  # ... after training changed them
    model, _ = modelfile.load(str(out / "mw" / "model.h5"))
    assert {_digest(model.get_weights())} == final  # the chief's model.h5 holds them
    assert "replicas in sync: 2" in chief_out
    assert "(worker 1: the chief writes the run)" in worker_out
    metrics = json.loads((out / "mw" / "metrics.json").read_text())
    assert metrics["training"]["replicas"] == 2
    # 840 training images a epoch: each worker reads 420, the one worker all of them.
    assert {_rows_read(o)[-1] for o, _ in results[:2]} == {420}
    assert _rows_read(results[2][0])[-1] == 840
    # Within noise: the test split is 120 images, and the demo's model gets (nearly) all right.
    assert _test_accuracy(tmp_path / "one" / "sw") >= 0.95
    assert abs(_test_accuracy(out / "mw") - _test_accuracy(tmp_path / "one" / "sw")) <= 0.05

    # Only the chief's run exists; the other worker's files lived in its temp dir and are gone.
    assert sorted(os.listdir(out)) == ["mw"]
    assert {"model.h5", "saved_model", "metrics.json", "history.csv", "config.yaml", "checkpoints",
            "tensorboard", "plots", "report.html"} == set(os.listdir(out / "mw"))
    assert (out / "mw" / "saved_model" / "saved_model.pb").is_file()  # exported under the strategy
    leftovers = [os.path.join(d, f) for i in range(2) for d, _, fs in os.walk(tmp_path / f"tmp{i}")
                 for f in fs]
    assert leftovers == []


# The same job, with a layer that prints which rows (their ids, written into pixel 0, 0) each
# training step of this worker gets, and the weights it ends with saved to WEIGHTS_OUT.
ROWS_WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from trainer.kerasflavor import keras, tf

    @keras.saving.register_keras_serializable(package="test")  # model.h5 must load back
    class Rows(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                tf.print("ROWS", tf.cast(tf.round(x[:, 0, 0, 0]), tf.int32), summarize=-1,
                         output_stream=sys.stdout)
            return x

    MODELS = []
    def build(input_shape, num_outputs):
        model = keras.Sequential([keras.Input(input_shape), Rows(),
                                  keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_outputs)])
        MODELS.append(model)
        return model

    from trainer import config, job
    from trainer.runtime import logs, platform
    logs.setup_logging()
    job.run(config.load(None, sys.argv[2:], output_dir=sys.argv[1]), platform.detect())
    np.savez(os.environ["WEIGHTS_OUT"], *MODELS[-1].get_weights())
    sys.stdout.flush()
""")


def _steps(stdout: str) -> list[set]:
    """The row ids of each training step, in order."""
    return [set(map(int, line.split("[", 1)[1].rstrip("]").split()))
            for line in stdout.splitlines() if line.startswith("ROWS [")]


def _rows_read(stdout: str) -> list[int]:
    """`rows_read` of each epoch's log record."""
    return [int(float(line.split("rows_read=", 1)[1].split()[0]))
            for line in stdout.splitlines() if "rows_read=" in line]


def test_two_workers_each_read_their_own_half_of_every_epoch(tmp_path):
    x, label, _ = blob_images(240, seed=3)
    x[:, 0, 0] = np.arange(240)  # each row carries its id
    data = write_npz(tmp_path / "data", "a.npz", x, label)
    epochs = 2
    common = [f"data.train={data}", "data.format=npz", "data.standardize=false",
              "data.shuffle_block=20", "model.name=__main__:build", f"train.epochs={epochs}",
              "train.restore_best=false", "train.early_stopping_patience=0",
              "train.scale_lr_with_replicas=false", "train.class_weight=balanced",
              "train.mixed_precision=off", "output.plots=false", "output.report=false"]

    def start(out, name, batch, env):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env)
        return subprocess.Popen([sys.executable, "-c", ROWS_WORKER, str(out), f"name={name}",
                                 f"train.batch_size={batch}", *common], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    ports = [gcs_emulator.free_port(), gcs_emulator.free_port()]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        procs.append(start(tmp_path / "two", "mw", 8, {  # 8 per replica: a global batch of 16
            "TF_CONFIG": json.dumps(tf_config), "WEIGHTS_OUT": str(tmp_path / f"w{index}.npz")}))
    procs.append(start(tmp_path / "one", "sw", 16, {"WEIGHTS_OUT": str(tmp_path / "one.npz")}))
    results = _finish(procs)
    chief, worker, alone = (_steps(out) for out, _ in results)
    assert "global batch: 16 (8 per replica x 2)" in results[0][0]

    # 168 training rows (240 less the carved validation and test rows): 10 steps of 16 and a
    # last one of 8, 4 rows for each replica. Both workers run every step.
    steps = len(alone) // epochs
    assert len(alone) == epochs * steps and steps == 11
    assert len(chief) == len(worker) == len(alone)
    for a, b in zip(chief, worker):
        assert len(a) == len(b) > 0
    reads = [_rows_read(out) for out, _ in results]
    for epoch in range(epochs):
        at = slice(epoch * steps, (epoch + 1) * steps)
        mine, theirs, whole = (set().union(*rows[at]) for rows in (chief, worker, alone))
        # Each worker trains on its own half of the epoch, and together on every row once ...
        assert len(whole) == 168 and len(mine) == len(theirs) == 84
        assert not mine & theirs and mine | theirs == whole
        # ... which is all that its reader read: nothing is read to be thrown away.
        assert [r[epoch] for r in reads] == [84, 84, 168]
    # The two workers' halves are parts of one drawn order, not each worker's own shuffle of
    # the same rows: an epoch's halves differ from the next epoch's.
    assert set().union(*chief[:steps]) != set().union(*chief[steps:])
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    for key in first.files:  # and the two workers train one model
        assert np.array_equal(first[key], second[key])


def test_two_workers_report_the_rmse_of_the_whole_test_split(tmp_path):
    """Each worker evaluates its part of every batch; the `rmse` loss figure, and the targets'
    standardisation, are the whole split's all the same (37 test rows: uneven batches)."""
    from test_target_scales import _split_rmse, _targets

    paths = [write_npz(tmp_path / "d", f"{k}.npz", *_targets(n, seed, (2.0, 500.0), (0.0, 10.0)))
             for k, n, seed in (("train", 64, 1), ("val", 45, 2), ("test", 37, 3))]
    common = [f"data.train={paths[0]}", f"data.val={paths[1]}", f"data.test={paths[2]}",
              "data.format=npz", "task=regression", "model.name=__main__:build", "train.epochs=1",
              "train.batch_size=8", "train.restore_best=false", "output.plots=false",
              "output.report=false", "output.saved_model=false", "name=mw",
              "train.mixed_precision=off"]  # compared with float32 below (bfloat16 on some CPUs)
    ports = [gcs_emulator.free_port(), gcs_emulator.free_port()]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="3")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER.replace("shapes_cnn", "tiny_cnn"), str(tmp_path / "out"),
             *common], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = _finish(procs)
    assert "replicas in sync: 2" in results[0][0]
    run = tmp_path / "out" / "mw"
    metrics = json.loads((run / "metrics.json").read_text())
    model, _ = modelfile.load(str(run / "model.h5"))
    from trainer.models import TARGETS_LAYER

    with np.load(paths[0]) as f:
        np.testing.assert_allclose(model.get_layer(TARGETS_LAYER).input_mean,
                                   f["y"].mean(axis=0, dtype=np.float64), rtol=1e-6)
    scale = np.sqrt(model.get_layer(TARGETS_LAYER).input_variance)
    for split, path in (("val", paths[1]), ("test", paths[2])):
        assert metrics[split]["loss"] == pytest.approx(_split_rmse(model, path, scale), rel=1e-4)
        assert metrics[split]["mse"] == pytest.approx(_split_rmse(model, path) ** 2, rel=1e-4)

"""Two real worker processes on loopback ports, each with its own TF_CONFIG, train one job with
MultiWorkerMirroredStrategy, the way Vertex AI runs a job with several replicas."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import gcs_emulator
from conftest import ROOT, blob_images, write_npz
from trainer.outputs import modelfile

# Each worker builds its model through the user-builder hook, so that the test can see the
# weights a worker ends with even where that worker's own files are deleted.
WORKER = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from trainer.kerasflavor import keras

    def digest(model):
        return hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes()
                                       for w in model.get_weights())).hexdigest()

    MODELS = []
    def build(input_shape, num_outputs):
        model = keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_outputs)])
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


def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    x, label, _ = blob_images(240, seed=3)
    data = write_npz(tmp_path / "data", "a.npz", x, label)
    out = tmp_path / "out"
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
            [sys.executable, "-c", WORKER, str(out), "name=mw", "data.format=npz",
             f"data.train={data}", "model.name=__main__:build", "train.epochs=2",
             "train.batch_size=16", "train.restore_best=false", "train.early_stopping_patience=0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    (chief_out, _), (worker_out, _) = results

    final = {_line(o, "FINAL") for o, _ in results}
    assert len(final) == 1  # both workers end with the same weights ...
    assert final != {_line(chief_out, "INITIAL")}  # ... after training changed them
    model, _ = modelfile.load(str(out / "mw" / "model.h5"))
    assert {_digest(model.get_weights())} == final  # the chief's model.h5 holds them
    assert "replicas in sync: 2" in chief_out
    assert "(worker 1: the chief writes the run)" in worker_out
    assert json.loads((out / "mw" / "metrics.json").read_text())["training"]["replicas"] == 2

    # Only the chief's run exists; the other worker's files lived in its temp dir and are gone.
    assert sorted(os.listdir(out)) == ["mw"]
    assert {"model.h5", "metrics.json", "history.csv", "config.yaml", "checkpoints",
            "tensorboard", "plots", "report.html"} == set(os.listdir(out / "mw"))
    leftovers = [os.path.join(d, f) for i in range(2) for d, _, fs in os.walk(tmp_path / f"tmp{i}")
                 for f in fs]
    assert leftovers == []

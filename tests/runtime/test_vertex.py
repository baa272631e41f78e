"""The job as Vertex AI runs it: AIP_* directories in a bucket, Cloud Logging's JSON lines on
stdout, the tuner's metric file; the real entry points in fresh processes, with the variables
Vertex AI sets."""

import csv
import io
import itertools
import json
import logging
import os
import re

import pytest

from conftest import run_cli
from trainer.runtime import logs
from trainer.runtime.platform import Platform, detect
from trainer.errors import UserError
from trainer.storage.rundir import RunDir, locate

JOB_ID = "4242"


def _vertex_env(gcs, tmp_path) -> dict[str, str]:
    return {"CLOUD_ML_JOB_ID": JOB_ID, "CLOUD_ML_TRIAL_ID": "3",
            "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune" / "output.metrics"),
            "AIP_MODEL_DIR": gcs.url("vertex/model/"),
            "AIP_CHECKPOINT_DIR": gcs.url("vertex/checkpoints/"),
            "AIP_TENSORBOARD_LOG_DIR": gcs.url("vertex/logs/")}


def _json_lines(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "nothing on stdout"
    return [json.loads(line) for line in lines]  # every line must be one JSON object


@pytest.fixture(scope="module")
def vertex_run(gcs, tmp_path_factory):
    """One run of the container's cloud entry point as a Vertex AI tuning trial."""
    tmp_path = tmp_path_factory.mktemp("vertex")
    env = _vertex_env(gcs, tmp_path)
    proc = run_cli("--set", "data.samples_per_class=30", "--set", "train.epochs=2",
                   "--set", "model.name=tiny_cnn", module="trainer.train_model_cloud", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, env


def test_cloud_logging_is_one_json_object_per_line(vertex_run):
    proc, _ = vertex_run
    records = _json_lines(proc.stdout)
    assert all("severity" in r for r in records)
    ours = [r for r in records if r["logging.googleapis.com/labels"].get("python_logger") == "trainer"]
    assert all(r["logging.googleapis.com/labels"]["job_id"] == JOB_ID for r in ours)
    assert any(r.get("message") == f"Vertex AI job {JOB_ID}, trial 3" for r in ours)
    epochs = [r for r in ours if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["severity"] == "INFO" for r in epochs)
    for record in epochs:  # metrics as fields, numbers not text
        assert all(isinstance(record[k], float) for k in ("loss", "accuracy", "val_loss",
                                                          "val_accuracy", "epoch_time_s"))
    assert "\r" not in proc.stdout and "━" not in proc.stdout  # no progress bars


def test_outputs_go_to_the_aip_directories(vertex_run, gcs):
    names = {b.name for b in gcs.client().list_blobs(gcs.bucket, prefix="vertex/")}
    for rel in ("model/model.h5", "model/metrics.json", "model/history.csv", "model/config.yaml",
                "checkpoints/state.json"):
        assert f"vertex/{rel}" in names, rel
    assert any(n.startswith("vertex/logs/train/events.out.tfevents") for n in names), names
    assert not any(n.startswith(("vertex/model/checkpoints", "vertex/model/tensorboard"))
                   for n in names)
    final = _json_lines(vertex_run[0].stdout)[-1]
    assert final["outputs"]["model"] == gcs.url("vertex/model/model.h5")


def test_the_tuning_metric_is_reported_every_epoch(vertex_run, gcs):
    _, env = vertex_run
    with open(env["CLOUD_ML_HP_METRIC_FILE"]) as f:
        reports = [json.loads(line) for line in f]
    history = gcs.client().bucket(gcs.bucket).blob("vertex/model/history.csv").download_as_text()
    rows = list(csv.DictReader(io.StringIO(history)))
    assert [r["global_step"] for r in reports] == ["1", "2"]
    assert all(r["trial"] == "3" for r in reports)
    assert [float(r["val_loss"]) for r in reports] == pytest.approx(
        [float(row["val_loss"]) for row in rows])


def test_an_error_on_vertex_is_one_error_record(gcs, tmp_path):
    proc = run_cli("--set", "train.epochz=2", env=_vertex_env(gcs, tmp_path))
    message = "error: unknown key 'train.epochz', --set, did you mean 'train.epochs'?"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [r for r in _json_lines(proc.stdout) if r["severity"] == "ERROR"]
    assert [r["message"] for r in errors] == [message]
    assert proc.stderr == message + "\n"  # and nothing else on stderr, which Vertex AI logs as errors


# -- the environment, read without running anything ----------------------------------------------


def test_platform_from_vertex_variables():
    p = detect({"CLOUD_ML_JOB_ID": "7", "AIP_MODEL_DIR": "gs://b/j/model/",
                "AIP_CHECKPOINT_DIR": "gs://b/j/checkpoints/"})
    assert p.vertex and p.job_id == "7" and p.is_chief and not p.multi_worker
    assert (p.model_dir, p.checkpoint_dir, p.tensorboard_dir) == ("gs://b/j/model/",
                                                                  "gs://b/j/checkpoints/", None)
    assert locate("runs", "x", p) == {"": "gs://b/j/model", "checkpoints": "gs://b/j/checkpoints"}
    assert locate("runs", "x", p.with_output_dir("out")) == {"": os.path.join("out", "x")}
    assert not detect({}).vertex and detect({}).is_chief


def test_provenance_shows_the_platform_it_is_given_not_the_environment(monkeypatch):
    from trainer.runtime.provenance import provenance

    vertex = detect({"CLOUD_ML_JOB_ID": "7", "CLOUD_ML_TRIAL_ID": "3",
                     "AIP_MODEL_DIR": "gs://b/j/model/"})
    for name in ("CLOUD_ML_JOB_ID", "CLOUD_ML_TRIAL_ID", "AIP_MODEL_DIR", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)  # this process itself runs locally
    info = provenance(vertex)
    assert info["where"] == "Vertex AI job 7, trial 3"
    assert info["devices"] and "tensorflow" in info["packages"]
    monkeypatch.setenv("CLOUD_ML_JOB_ID", "99")  # ... and a local platform stays local
    assert provenance(Platform())["where"] == "local"


@pytest.mark.parametrize("tf_config, workers, chief", [
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}, 3, True),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}, 3, False),
    ({"cluster": {"worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}, 2, True),
    ({"cluster": {"worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}, 2, False),
])
def test_tf_config_names_the_workers_and_the_chief(tf_config, workers, chief):
    p = detect({"TF_CONFIG": json.dumps(tf_config)})
    assert (p.workers, p.is_chief, p.multi_worker) == (workers, chief, True)


@pytest.mark.parametrize("text, match", [
    ("{not json", "TF_CONFIG is not valid, environment, expected JSON"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "ps", "index": 0}}',
     "TF_CONFIG task type 'ps', environment, expected chief or worker"),
])
def test_bad_tf_config_is_a_user_error(text, match):
    with pytest.raises(UserError, match=match):
        detect({"TF_CONFIG": text})


def _cluster_spec(task_type: str, index: int) -> str:
    pools = {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1", "d:1"]}
    return json.dumps({"cluster": pools, "environment": "cloud",
                       "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("env, replica", [
    ({}, (0, 1)),
    ({"CLUSTER_SPEC": _cluster_spec("workerpool0", 0)}, (0, 4)),
    ({"CLUSTER_SPEC": _cluster_spec("workerpool1", 2)}, (3, 4)),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                               "task": {"type": "worker", "index": 1}})}, (2, 3)),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["b:1", "c:1"]},
                               "task": {"type": "worker", "index": 1}})}, (1, 2)),
])
def test_each_replica_knows_its_place_among_all(env, replica):
    """Replicas that share work out: Vertex AI's CLUSTER_SPEC (pool by pool), else TF_CONFIG."""
    p = detect(env)
    assert (p.replica_index, p.replica_count) == replica


def test_a_cluster_spec_without_its_own_task_is_a_user_error():
    with pytest.raises(UserError, match="CLUSTER_SPEC task workerpool1 3 is not in its cluster, "
                                        "environment, expected JSON like"):
        detect({"CLUSTER_SPEC": _cluster_spec("workerpool1", 3)})
    with pytest.raises(UserError, match="CLUSTER_SPEC is not valid, environment"):
        detect({"CLUSTER_SPEC": "{}"})


def test_the_output_location_rule_over_every_combination():
    """Which folder wins, the one rule (`locate`): --output_dir over every AIP_* folder, each
    AIP_* folder over the config's output.dir, and a folder the platform leaves unset inside
    the run; a run folder (`RunDir`) publishes where the rule says."""
    given = {"flag": [None, "/flag"], "model": [None, "gs://b/j/model/"],
             "checkpoints": [None, "gs://b/j/checkpoints/"], "tensorboard": [None, "gs://b/j/logs"]}
    for flag, model, checkpoints, tensorboard in itertools.product(*given.values()):
        platform = Platform(model_dir=model, checkpoint_dir=checkpoints,
                            tensorboard_dir=tensorboard).with_output_dir(flag)
        homes = locate("cfg-out", "x", platform)
        run = RunDir("cfg-out", "x", platform=platform)
        try:
            if flag:
                expected = {"": "/flag/x"}
            else:
                placed = {"checkpoints": checkpoints, "tensorboard": tensorboard}
                expected = {"": (model or "cfg-out/x").rstrip("/"),
                            **{k: v.rstrip("/") for k, v in placed.items() if v}}
            assert homes == expected, (flag, model, checkpoints, tensorboard)
            assert run.url == expected[""]
            for folder in ("checkpoints", "tensorboard"):
                home = expected.get(folder) or f"{expected['']}/{folder}"
                assert run.remote(folder, "f") == f"{home}/f"
        finally:
            run.cleanup()


def test_run_dir_homes_and_a_workers_private_copy(tmp_path):
    platform = Platform(model_dir="gs://b/j/model/", checkpoint_dir="gs://b/j/checkpoints/")
    chief = RunDir("runs", "x", platform=platform)
    assert chief.url == "gs://b/j/model"
    assert chief.remote("checkpoints", "state.json") == "gs://b/j/checkpoints/state.json"
    assert chief.remote("tensorboard") == "gs://b/j/model/tensorboard"
    worker = RunDir(str(tmp_path), "x", chief=False)
    assert worker.url == str(tmp_path / "x")  # reads (resume) come from the chief's run ...
    assert worker.remote("model.h5").startswith(worker.staging)  # ... writes stay private
    worker.cleanup()
    chief.cleanup()
    assert not os.path.exists(worker.staging)


def test_cloud_logging_writes_only_the_jobs_records(capsys, monkeypatch):
    """google-cloud-logging announces its own name and version before the first record; stdout
    carries the job's records only."""
    import google.cloud.logging_v2

    monkeypatch.setattr(google.cloud.logging_v2, "_instrumentation_emitted", False)
    try:
        logs.setup_logging(structured=True)
        logging.getLogger("trainer").info("the first record")
        records = _json_lines(capsys.readouterr().out)
        assert [r["message"] for r in records] == ["the first record"], records
    finally:
        logs.setup_logging()


def test_local_logging_is_readable_and_cloud_logging_is_json(capsys):
    log = logging.getLogger("trainer")
    try:
        logs.setup_logging()
        log.info("epoch 1/2 loss=0.5", extra={"json_fields": {"epoch": 1, "loss": 0.5}})
        assert re.fullmatch(r"\d\d:\d\d:\d\d INFO epoch 1/2 loss=0.5\n", capsys.readouterr().out)
        logs.setup_logging(structured=True, labels={"job_id": "7"})
        log.info("epoch 1/2 loss=0.5", extra={"json_fields": {"epoch": 1, "loss": 0.5}})
        record = _json_lines(capsys.readouterr().out)[-1]
        assert (record["epoch"], record["loss"], record["severity"]) == (1, 0.5, "INFO")
        assert record["logging.googleapis.com/labels"]["job_id"] == "7"
        assert not logs.interactive()  # no progress bars under JSON logging
    finally:
        logs.setup_logging()


def test_in_a_terminal_no_log_line_is_written_into_the_progress_bar(tmp_path):
    """The real command under a pseudo-terminal, as a person watches it: Keras redraws its bar
    in place (no newline until the epoch ends); every log line must start a line of its own."""
    import pty
    import subprocess
    import sys

    from conftest import ROOT

    master, slave = pty.openpty()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.task", "--output_dir", str(tmp_path), "--set",
         "train.epochs=2", "--set", "data.samples_per_class=20", "--set", "model.name=tiny_cnn",
         "--set", "output.report=false", "--set", "output.plots=false"],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\] - ETA: ", text), text[-2000:]  # the bar was drawn, in place
    for line in text.split("\n"):
        stamp = re.search(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line)
        if stamp:  # a log line starts its terminal line (after any carriage return)
            assert line[:stamp.start()].strip("\r\x08 ") == "", repr(line[:300])
    assert len(re.findall(r"INFO epoch \d/2 ", text)) == 2

"""The search as a Vertex AI hyperparameter tuning job: the spec, built offline."""

import json

import pytest

from google.cloud import aiplatform_v1 as vertex

from trainer import config
from trainer.cloud import vertex_job
from trainer.errors import UserError
from trainer.tune import space as space_mod
from trainer.tune import vertex as tv
from trainer.tune.vertex_trial import hyperparameter_args

from conftest import run_cli

MACHINES = vertex_job.Machines(project="p", region="europe-west4", image_uri="eu.gcr.io/p/trainer:1",
                               accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1)


def _space(params, **top):
    return space_mod.parse({"params": params, **top}, config.from_dict({}), "s.yaml")


def test_every_kind_translates_to_its_parameter_spec():
    space = _space({"train.learning_rate": {"log_uniform": [1e-4, 1e-2]},
                    "model.dropout": {"uniform": [0.0, 0.5]},
                    "model.layer_param": {"uniform": [4, 32]},
                    "train.batch_size": {"choice": [64, 16, 32]},
                    "model.name": {"grid": ["tiny_cnn", "shapes_cnn"]},
                    "data.standardize": {"choice": [True, False]}},
                   metric="val_accuracy", pruning={"startup_trials": 3})
    job = tv.tuning_job("demo-tune", space, 12, 3, "gs://b/c.yaml", ["train.epochs=3"],
                        "gs://b/runs/demo-tune", MACHINES)
    spec = {p.parameter_id: p for p in job.study_spec.parameters}
    scale = vertex.StudySpec.ParameterSpec.ScaleType
    lr = spec["train.learning_rate"]
    assert (lr.double_value_spec.min_value, lr.double_value_spec.max_value) == (1e-4, 1e-2)
    assert lr.scale_type == scale.UNIT_LOG_SCALE
    assert spec["model.dropout"].scale_type == scale.UNIT_LINEAR_SCALE
    assert spec["model.layer_param"].integer_value_spec.max_value == 32
    assert list(spec["train.batch_size"].discrete_value_spec.values) == [16.0, 32.0, 64.0]
    assert list(spec["model.name"].categorical_value_spec.values) == ["tiny_cnn", "shapes_cnn"]
    assert list(spec["data.standardize"].categorical_value_spec.values) == ["true", "false"]
    metric = job.study_spec.metrics[0]
    assert (metric.metric_id, metric.goal) == ("val_accuracy",
                                               vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE)
    assert job.study_spec.algorithm == vertex.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED
    assert "median_automated_stopping_spec" in job.study_spec
    assert (job.max_trial_count, job.parallel_trial_count) == (12, 3)
    pool = job.trial_job_spec.worker_pool_specs[0]
    assert pool.machine_spec.accelerator_type == vertex.AcceleratorType.NVIDIA_TESLA_T4
    assert list(pool.container_spec.command) == ["python", "-m", "trainer.tune.vertex_trial"]
    assert list(pool.container_spec.args) == ["--config", "gs://b/c.yaml", "--set=train.epochs=3",
                                              "--output_dir", "gs://b/runs/demo-tune"]
    # it serialises as the API takes it
    data = json.loads(vertex_job.to_json(job))
    assert data["studySpec"]["parameters"][0]["parameterId"] == "train.learning_rate"


def test_an_all_grid_space_is_a_grid_search_without_pruning():
    job = tv.tuning_job("g", _space({"train.batch_size": [16, 32]}, pruning=False), 2, 1,
                        None, [], "gs://b/g", vertex_job.Machines(None, image_uri="img"))
    assert job.study_spec.algorithm == vertex.StudySpec.Algorithm.GRID_SEARCH
    # no config file: the trials train the embedded demo
    assert list(job.trial_job_spec.worker_pool_specs[0].container_spec.args) == ["--output_dir", "gs://b/g"]
    assert "median_automated_stopping_spec" not in job.study_spec


def test_an_unknown_accelerator_is_a_user_error():
    bad = vertex_job.Machines("p", image_uri="img", accelerator_type="NVIDIA_TESLA_T5")
    with pytest.raises(UserError, match="unknown accelerator 'NVIDIA_TESLA_T5', --accelerator_type"):
        tv.tuning_job("g", _space({"train.batch_size": [16]}), 1, 1, "gs://b/c", [], "gs://b/g", bad)


def test_a_range_the_api_cannot_hold_is_a_user_error():
    # a builder's own parameter has no bound in the config, only the API's int64
    space = _space({"model.params.width": {"uniform": [4, 10**20]}})
    with pytest.raises(UserError, match=r"cannot express 'model.params.width' for Vertex AI "
                                        r"\(Value out of range: 10+\), s.yaml params"):
        tv.tuning_job("g", space, 1, 1, "gs://b/c", [], "gs://b/g", MACHINES)


def test_trial_arguments_become_overrides():
    argv = ["vertex_trial", "--config", "gs://b/c.yaml", "--train.learning_rate=0.003",
            "--model.name=tiny_cnn", "--output_dir=gs://b/g"]
    assert hyperparameter_args(argv, "7") == [
        "vertex_trial", "--config", "gs://b/c.yaml", "--set=train.learning_rate=0.003",
        "--set=model.name=tiny_cnn", "--output_dir=gs://b/g", "--set=name=trial-7"]


def test_dry_run_prints_the_spec_and_submits_nothing(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_accuracy\nparams:\n  train.learning_rate: {log_uniform: [1.0e-4, 0.01]}\n")
    cfg = tmp_path / "shapes.yaml"
    cfg.write_text("name: shapes\nmodel: {name: tiny_cnn}\n")
    proc = run_cli("--vertex", "--dry_run", "--space", str(space), "--trials", "8", "--parallel", "2",
                   "--project", "p", "--output_dir", "gs://bucket/runs", "--config", str(cfg),
                   module="trainer.tune")
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = json.loads(proc.stdout)
    assert job["displayName"] == "shapes-tune" and job["maxTrialCount"] == 8
    assert job["parallelTrialCount"] == 2
    assert job["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"] == [
        "--config", str(cfg), "--set=train.monitor=val_accuracy",  # the metric the trials report
        "--output_dir", "gs://bucket/runs/shapes-tune"]
    assert job["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"] == "gs://bucket/runs/shapes-tune"
    assert job["studySpec"]["metrics"] == [{"metricId": "val_accuracy", "goal": "MAXIMIZE"}]
    # without --dry_run a local config cannot reach the trials: refused before any API call
    proc = run_cli("--vertex", "--space", str(space), "--project", "p", "--output_dir",
                   "gs://bucket/runs", "--config", str(cfg), module="trainer.tune")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: --config is {cfg}, --vertex, expected a gs:// URL that the trials can read and write")


def _job_config(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("name: blobs\ndata:\n  format: npz\n  train: gs://bucket/data/*.npz\n")
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.learning_rate: {log_uniform: [1.0e-4, 0.01]}\n")
    return cfg, space


def _tune_dry_run(tmp_path, *flags):
    cfg, space = _job_config(tmp_path)
    return run_cli("--vertex", "--dry_run", "--space", str(space), "--config", str(cfg),
                   "--output_dir", "gs://bucket/runs", *flags, module="trainer.tune")


def test_without_image_uri_the_image_is_the_projects_own(tmp_path):
    proc = _tune_dry_run(tmp_path, "--project", "my-project", "--region", "europe-west4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pool = json.loads(proc.stdout)["trialJobSpec"]["workerPoolSpecs"][0]
    assert pool["containerSpec"]["imageUri"] == (
        "europe-west4-docker.pkg.dev/my-project/trainer/trainer:latest")
    # with neither a project nor an image there is no image to name
    proc = _tune_dry_run(tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: no project given, --project, expected a Google Cloud "
                                  "project id")


@pytest.mark.parametrize("extra, message", [
    (["--machine_type", "n1-standard-8", "--accelerator_type", "NVIDIA_H100_80GB"],
     "error: NVIDIA_H100_80GB cannot be attached to n1-standard-8, --machine_type, expected a "
     "machine type of the a3 family\n"),
    (["--accelerator_type", "NVIDIA_TESLA_T5"],
     "error: unknown accelerator 'NVIDIA_TESLA_T5', --accelerator_type, expected none or one of "),
])
def test_a_machine_the_api_would_refuse_is_refused_like_submit(tmp_path, extra, message):
    proc = _tune_dry_run(tmp_path, "--project", "p", *extra)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout[-2000:]
    assert proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_local_data_paths_are_refused_like_submit(tmp_path):
    cfg, space = _job_config(tmp_path)
    cfg.write_text("data:\n  format: npz\n  train: data/*.npz\n")
    proc = run_cli("--vertex", "--dry_run", "--space", str(space), "--config", str(cfg),
                   "--project", "p", "--output_dir", "gs://bucket/runs", module="trainer.tune")
    assert proc.returncode == 2 and proc.stderr == (
        "error: local data path, data.train=data/*.npz, expected gs:// or /gcs/ paths that the "
        "job on Vertex AI can read\n")


@pytest.mark.parametrize("machine", [
    [],  # the defaults
    ["--machine_type", "g2-standard-8", "--accelerator_type", "NVIDIA_L4"],
    ["--accelerator_type", "none"],
])
def test_submit_and_tune_build_the_same_worker_pool(tmp_path, capsys, machine):
    from trainer import submit

    common = ["--project", "my-project", "--region", "europe-west4", *machine]
    proc = _tune_dry_run(tmp_path, *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (trial_pool,) = json.loads(proc.stdout)["trialJobSpec"]["workerPoolSpecs"]
    cfg, _ = _job_config(tmp_path)
    assert submit.main(["--config", str(cfg), "--staging_bucket", "gs://bucket/staging",
                        "--dry_run", *common]) == 0
    (job_pool,) = json.loads(capsys.readouterr().out)["jobSpec"]["workerPoolSpecs"]
    for key in ("machineSpec", "replicaCount"):
        assert trial_pool[key] == job_pool[key]
    assert trial_pool["containerSpec"]["imageUri"] == job_pool["containerSpec"]["imageUri"]


def test_the_scheduling_and_capacity_options_reach_every_trial(tmp_path):
    tb = "projects/p/locations/europe-west4/tensorboards/7"
    proc = _tune_dry_run(tmp_path, "--project", "p", "--region", "europe-west4",
                         "--machine_type", "a2-highgpu-1g", "--accelerator_type",
                         "NVIDIA_TESLA_A100", "--replica_count", "2", "--reduction_server", "1",
                         "--flex_start", "--max_wait", "90m", "--timeout", "1d",
                         "--enable_web_access", "--tensorboard", tb, "--service_account",
                         "sa@p.iam.gserviceaccount.com")
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = vertex.HyperparameterTuningJob.from_json(proc.stdout).trial_job_spec  # strict
    assert spec.scheduling.strategy == vertex.Scheduling.Strategy.FLEX_START
    assert spec.scheduling.max_wait_duration.total_seconds() == 5400
    assert spec.scheduling.timeout.total_seconds() == 86400
    assert spec.enable_web_access and spec.tensorboard == tb
    assert spec.worker_pool_specs[2].container_spec.image_uri == vertex_job.REDUCTION_SERVER_IMAGE
    proc = _tune_dry_run(tmp_path, "--project", "p", "--flex_start", "--spot")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: --flex_start with --spot, command line, expected one of them"), proc.stderr


def test_a_tuning_job_on_a_persistent_resource_is_checked_against_it():
    """The trials' machines are asked of the persistent resource before the job is sent."""
    from vertex_recorder import PARENT, Recorder
    from trainer.cloud import client

    resource = f"{PARENT}/persistentResources/pool-1"
    pool = {"machineSpec": {"machineType": "n1-standard-8", "acceleratorType": "NVIDIA_TESLA_T4",
                            "acceleratorCount": 1}, "replicaCount": "1"}
    recorder = Recorder(resources={resource: {"name": resource, "resourcePools": [pool]}})
    space = _space({"train.batch_size": [16, 32]})
    try:
        for replicas, sent in ((1, True), (2, False)):
            machines = vertex_job.Machines("my-project", region="europe-west4", image_uri="img",
                                           replica_count=replicas, persistent_resource="pool-1")
            job = tv.tuning_job("t", space, 2, 1, "gs://b/c.yaml", [], "gs://b/t", machines)
            if sent:
                client.send(job, "my-project", "europe-west4", api_endpoint=recorder.endpoint)
            else:
                with pytest.raises(UserError, match="persistent resource pool-1 holds too few "
                                                    "n1-standard-8 for the job's replicas"):
                    client.send(job, "my-project", "europe-west4", api_endpoint=recorder.endpoint)
        paths = [r["path"].split("?")[0] for r in recorder.requests]
        assert [p.rsplit("/", 1)[-1] for p in paths] == [
            "pool-1", "hyperparameterTuningJobs", "pool-1"]
        body = vertex.HyperparameterTuningJob.from_json(recorder.requests[1]["body"])
        assert body.trial_job_spec.persistent_resource_id == "pool-1"
    finally:
        recorder.close()

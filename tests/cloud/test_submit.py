"""`trainer.submit`: the CustomJob checked against the API's own message types, and a real
submission through the aiplatform client library to a local HTTP server that records it."""

import json

import pytest
import yaml
from google.cloud import aiplatform_v1 as v1
from google.protobuf.json_format import ParseError

from conftest import error_line, run_cli
from vertex_recorder import PARENT, Recorder
from trainer import submit
from trainer.cloud import vertex_job


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def job_config(tmp_path, gcs):
    path = tmp_path / "job.yaml"
    path.write_text(f"name: blobs\ndata:\n  format: npz\n  train: {gcs.url('data/*.npz')}\n"
                    "train:\n  epochs: 3\n")
    return path


def _staging(gcs, config) -> str:
    """A staging prefix of the test's own (the emulator's bucket lives for the whole session)."""
    return f"staging/{config.parent.name}"


def _args(gcs, config, *extra):
    return ["--config", str(config), "--project", "my-project", "--region", "europe-west4",
            "--staging_bucket", gcs.url(_staging(gcs, config)), "--display_name", "blobs-1", *extra]


def test_dry_run_prints_a_job_the_api_types_accept(capsys, gcs, job_config):
    code = submit.main(_args(gcs, job_config, "--machine_type", "g2-standard-8",
                             "--accelerator_type", "NVIDIA_L4", "--replica_count", "3", "--spot",
                             "--service_account", "trainer@my-project.iam.gserviceaccount.com",
                             "--set", "train.epochs=5", "--dry_run"))
    out = capsys.readouterr().out
    assert code == 0
    job = v1.CustomJob.from_json(out)  # strict: an unknown field would raise
    spec = job.job_spec
    chief, workers = spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count) == (1, 2)
    assert chief.machine_spec == workers.machine_spec == v1.MachineSpec(
        machine_type="g2-standard-8", accelerator_type="NVIDIA_L4", accelerator_count=1)
    assert chief.container_spec.image_uri == (
        "europe-west4-docker.pkg.dev/my-project/trainer/trainer:latest")
    args = list(chief.container_spec.args)
    assert args[0] == "--config" and args[1].startswith(gcs.url(_staging(gcs, job_config), "configs/"))
    assert args[1].endswith("-job.yaml") and args[2:] == ["--set", "train.epochs=5"]
    assert spec.scheduling.strategy == v1.Scheduling.Strategy.SPOT
    assert spec.scheduling.restart_job_on_worker_restart
    assert spec.service_account == "trainer@my-project.iam.gserviceaccount.com"
    assert spec.base_output_directory.output_uri_prefix == gcs.url(_staging(gcs, job_config),
                                                                   "jobs/blobs-1")
    assert json.loads(out)["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]["acceleratorType"] == "NVIDIA_L4"
    # a dry run sends and uploads nothing
    assert not list(gcs.client().list_blobs(gcs.bucket, prefix=_staging(gcs, job_config)))
    # and the strict parse is what catches a field the API does not have
    with pytest.raises(ParseError, match="no field named"):
        v1.CustomJob.from_json(out.replace('"displayName"', '"displayNmae"'))


def test_submission_through_the_client_library(capsys, gcs, job_config, recorder):
    code = submit.main(_args(gcs, job_config, "--api_endpoint", recorder.endpoint))
    out = capsys.readouterr().out
    assert code == 0
    (request,) = recorder.requests
    assert request["path"].startswith("/v1/projects/my-project/locations/europe-west4/customJobs")
    assert "authorization" not in {k.lower() for k in request["headers"]}  # no token over http
    sent = v1.CustomJob.from_json(request["body"])
    assert sent.display_name == "blobs-1"
    (pool,) = sent.job_spec.worker_pool_specs
    assert pool.machine_spec.machine_type == vertex_job.DEFAULT_MACHINE
    assert pool.machine_spec.accelerator_type == v1.AcceleratorType.NVIDIA_TESLA_T4
    assert not sent.job_spec.scheduling.restart_job_on_worker_restart
    # the config the job reads is the local one, uploaded
    config_url = pool.container_spec.args[1]
    blob = gcs.client().bucket(gcs.bucket).blob(config_url.split("/", 3)[3])
    assert blob.download_as_bytes() == job_config.read_bytes()
    assert "job: projects/my-project/locations/europe-west4/customJobs/123" in out
    assert "gcloud ai custom-jobs stream-logs 123 --project=my-project --region=europe-west4" in out


def test_gcloud_yaml_is_a_job_spec(capsys, gcs, job_config, tmp_path, recorder):
    target = tmp_path / "job-spec.yaml"
    code = submit.main(_args(gcs, job_config, "--gcloud_yaml", str(target)))
    out = capsys.readouterr().out
    assert code == 0 and recorder.requests == []
    spec = v1.CustomJobSpec.from_json(json.dumps(yaml.safe_load(target.read_text())))
    assert spec.worker_pool_specs[0].container_spec.args[0] == "--config"
    assert out.splitlines()[-1] == ("gcloud ai custom-jobs create --project=my-project "
                                    f"--region=europe-west4 --display-name=blobs-1 --config={target}")


@pytest.mark.parametrize("extra, message", [
    (["--accelerator_type", "NVIDIA_TESLA_T5"],
     "error: unknown accelerator 'NVIDIA_TESLA_T5', --accelerator_type, expected none or one of "),
    (["--machine_type", "n1-standard-8", "--accelerator_type", "NVIDIA_H100_80GB"],
     "error: NVIDIA_H100_80GB cannot be attached to n1-standard-8, --machine_type, expected a "
     "machine type of the a3 family"),
    (["--machine_type", "a2-highgpu-2g", "--accelerator_type", "NVIDIA_TESLA_A100"],
     "error: a2-highgpu-2g has 2 GPUs, --accelerator_count=1, expected 2"),
    (["--machine_type", "N1 standard"], "error: machine type 'N1 standard', --machine_type"),
    (["--replica_count", "0"], "error: replica count 0, --replica_count, expected >= 1"),
    (["--set", "train.epoch=3"], "error: unknown key 'train.epoch', "),
    (["--dry_run", "--gcloud_yaml", "job.yaml"], "error: flags dry_run=True, gcloud_yaml=job.yaml: "
     "--dry_run and --gcloud_yaml exclude each other, command line"),
    (["--accelerator_count", "two"], "error: flag --accelerator_count=two: invalid literal"),
])
def test_bad_options_fail_before_anything_is_sent(capsys, gcs, job_config, recorder, extra, message):
    code = submit.main(_args(gcs, job_config, "--api_endpoint", recorder.endpoint, *extra))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert recorder.requests == []
    assert not list(gcs.client().list_blobs(gcs.bucket, prefix=_staging(gcs, job_config)))


def test_local_data_paths_are_refused(capsys, gcs, tmp_path):
    config = tmp_path / "local.yaml"
    config.write_text("data:\n  format: npz\n  train: data/*.npz\n")
    assert submit.main(_args(gcs, config, "--dry_run")) == 2
    assert capsys.readouterr().err == ("error: local data path, data.train=data/*.npz, expected "
                                       "gs:// or /gcs/ paths that the job on Vertex AI can read\n")


def test_the_command_line(tmp_path):
    proc = run_cli("--config", str(tmp_path / "job.yaml"), module="trainer.submit")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: missing --project, --staging_bucket, command line")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_a_tuning_job_goes_through_the_same_client(recorder):
    """`trainer.tune --vertex` submits through the same `send`: the real client, the tuning-job API."""
    from trainer import config
    from trainer.cloud.vertex_job import Machines
    from trainer.tune import space as space_mod
    from trainer.tune import vertex as tv

    space = space_mod.parse({"params": {"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}}},
                            config.from_dict({}), "s.yaml")
    machines = Machines(project="my-project", region="europe-west4", image_uri="img:1")
    job = tv.tuning_job("t", space, 4, 2, "gs://b/c.yaml", [], "gs://b/runs/t", machines)
    submit.send(job, "my-project", "europe-west4", api_endpoint=recorder.endpoint)
    (request,) = recorder.requests
    assert request["path"].startswith(
        "/v1/projects/my-project/locations/europe-west4/hyperparameterTuningJobs")
    sent = v1.HyperparameterTuningJob.from_json(request["body"])
    assert (sent.max_trial_count, sent.parallel_trial_count) == (4, 2)
    assert sent.study_spec.parameters[0].parameter_id == "train.learning_rate"


# Refusals as the Vertex AI REST API words them (google.rpc.Status in the JSON error envelope).
DENIED = (403, {
    "code": 403, "status": "PERMISSION_DENIED",
    "message": "Permission 'aiplatform.customJobs.create' denied on resource "
               "'//aiplatform.googleapis.com/projects/my-project/locations/europe-west4' (or it "
               "may not exist).",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "IAM_PERMISSION_DENIED", "domain": "aiplatform.googleapis.com",
                 "metadata": {"permission": "aiplatform.customJobs.create",
                              "resource": "projects/my-project/locations/europe-west4"}}]})
INVALID = (400, {
    "code": 400, "status": "INVALID_ARGUMENT",
    "message": "List of found errors:\t1.Field: job_spec.worker_pool_specs[0].machine_spec."
               "accelerator_type; Message: Accelerator \"NVIDIA_TESLA_T4\" is not supported in "
               "region europe-west4.\t",
    "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "job_spec.worker_pool_specs[0].machine_spec."
                                               "accelerator_type",
                                      "description": "Accelerator \"NVIDIA_TESLA_T4\" is not "
                                                     "supported in region europe-west4."}]}]})
QUOTA = (429, {
    "code": 429, "status": "RESOURCE_EXHAUSTED",
    "message": "The following quota metrics exceed quota limits: "
               "aiplatform.googleapis.com/custom_model_training_nvidia_t4_gpus",
    "details": []})


@pytest.mark.parametrize("refusal", [DENIED, INVALID, QUOTA], ids=["denied", "invalid", "quota"])
def test_a_job_vertex_ai_refuses_ends_with_one_error_line(gcs, job_config, refusal):
    refusing = Recorder(refusal)
    try:
        proc = run_cli(*_args(gcs, job_config, "--api_endpoint", refusing.endpoint),
                       module="trainer.submit", timeout=120)
    finally:
        refusing.close()
    assert len(refusing.requests) == 1  # it was sent, once, and refused
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc.stderr)
    status, error = refusal
    # the API's code, status and message, without the transport's request line
    said = " ".join(error["message"].split())
    assert line.startswith(f"error: Vertex AI refused the job ({status} {error['status']}: {said}), "
                           "projects/my-project/locations/europe-west4, expected "), line
    assert "http://" not in line and "POST" not in line, line
    assert "job:" not in proc.stdout


# -------------------------------------------------------------------------------------------------
# Batch curation: trainer.predict --out as a CustomJob in the training image.


def _predict_args(*extra):
    return ["--predict", "--project", "my-project", "--region", "europe-west4",
            "--inputs", "gs://b/videos/*.mp4", "--inputs", "/gcs/b/more/", "--out",
            "gs://b/curated/", *extra]


def test_a_curation_job_runs_predict_on_every_replica(capsys):
    code = submit.main(_predict_args("--model", "gs://b/runs/contact", "--replica_count", "3",
                                     "--spot", "--accelerator_type", "none",
                                     "--machine_type", "n2-standard-8", "--dry_run"))
    out = capsys.readouterr().out
    assert code == 0
    job = v1.CustomJob.from_json(out)  # strict: an unknown field would raise
    chief, workers = job.job_spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count) == (1, 2)
    assert chief.container_spec == workers.container_spec
    assert chief.machine_spec == v1.MachineSpec(machine_type="n2-standard-8")
    container = chief.container_spec
    assert list(container.command) == ["python", "-m", "trainer.predict"]
    assert list(container.args) == ["--model", "gs://b/runs/contact", "--out", "gs://b/curated/",
                                    "gs://b/videos/*.mp4", "/gcs/b/more/"]
    assert container.image_uri == "europe-west4-docker.pkg.dev/my-project/trainer/trainer:latest"
    assert job.job_spec.scheduling.strategy == v1.Scheduling.Strategy.SPOT
    assert job.job_spec.scheduling.restart_job_on_worker_restart  # a preempted job runs again
    assert job.display_name.startswith("curate-")
    # the arguments are trainer.predict's own: the job does not fail on a flag it lacks
    from trainer.predict import command as predict

    assert predict.main.parse(list(container.args)) == ["gs://b/videos/*.mp4", "/gcs/b/more/"]
    assert (predict.FLAGS.out, predict.FLAGS.model) == ("gs://b/curated/", "gs://b/runs/contact")


def test_a_curation_job_with_a_local_model_through_the_client_library(capsys, gcs, tmp_path,
                                                                      recorder):
    run = tmp_path / "contact"
    run.mkdir()
    import h5py

    with h5py.File(run / "model.h5", "w") as f:  # checked before it is uploaded: an HDF5 file
        f["weights"] = [1.0, 2.0]
    staging = gcs.url(f"staging/{tmp_path.name}")
    code = submit.main(_predict_args("--model", str(run), "--staging_bucket", staging,
                                     "--display_name", "curate-1", "--api_endpoint",
                                     recorder.endpoint))
    out = capsys.readouterr().out
    assert code == 0
    (request,) = recorder.requests
    assert request["path"].startswith("/v1/projects/my-project/locations/europe-west4/customJobs")
    sent = v1.CustomJob.from_json(request["body"])
    (pool,) = sent.job_spec.worker_pool_specs
    model_url = pool.container_spec.args[1]
    assert model_url.startswith(f"{staging}/models/") and model_url.endswith("-model.h5")
    blob = gcs.client().bucket(gcs.bucket).blob(model_url.split("/", 3)[3])
    assert blob.download_as_bytes() == (run / "model.h5").read_bytes()
    assert f"model: {model_url}" in out and "outputs: gs://b/curated/" in out
    assert "job: projects/my-project/locations/europe-west4/customJobs/123" in out


@pytest.mark.parametrize("extra, message", [
    (["--model", "gs://b/m.h5", "--inputs", "videos/*.mp4"],
     "error: local path, --inputs=videos/*.mp4, expected gs:// or /gcs/ paths that the job on "
     "Vertex AI can read and write"),
    (["--model", "gs://b/m.h5", "--out", "curated/"], "error: local path, --out=curated/, expected"),
    (["--model", "MODEL_DIR"], "error: local model, --model=MODEL_DIR, expected a gs:// model, "
     "or --staging_bucket gs://BUCKET to upload it to"),
    (["--model", "gs://b/m.h5", "--inputs", "gs://b/x.mp4?X-Goog-Signature=abcdef0123456789"],
     "error: a credential in the job's paths (--inputs), command line"),
    (["--model", "gs://b/m.h5", "--config", "job.yaml"], "error: --config or --set with --predict"),
    ([], "error: missing --model, command line"),
])
def test_bad_curation_jobs_fail_before_anything_is_sent(capsys, tmp_path, recorder, extra, message):
    (tmp_path / "model.h5").write_bytes(b"x")
    argv = [a.replace("MODEL_DIR", str(tmp_path)) for a in _predict_args(
        "--api_endpoint", recorder.endpoint, *extra)]
    code = submit.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message.replace("MODEL_DIR", str(tmp_path))), err
    assert len(err.splitlines()) == 1 and recorder.requests == []


# -------------------------------------------------------------------------------------------------
# Vertex AI as its users reach for it: TensorBoard, Experiments, scheduling and capacity.

SA = "trainer@my-project.iam.gserviceaccount.com"
TB = "projects/my-project/locations/europe-west4/tensorboards/77"
H100 = ["--machine_type", "a3-highgpu-8g", "--accelerator_type", "NVIDIA_H100_80GB",
        "--accelerator_count", "8"]


def _dry_run_job(capsys, gcs, job_config, *extra) -> v1.CustomJob:
    assert submit.main(_args(gcs, job_config, *extra, "--dry_run")) == 0, capsys.readouterr().err
    return v1.CustomJob.from_json(capsys.readouterr().out)  # strict: an unknown field raises


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("2h", 7200), ("1d", 86400),
                                           ("1h30m", 5400), ("45s", 45), ("7d", 604800)])
def test_flex_start_waits_as_long_as_asked(capsys, gcs, job_config, text, seconds):
    spec = _dry_run_job(capsys, gcs, job_config, *H100, "--flex_start", "--max_wait", text,
                        "--timeout", text).job_spec
    assert spec.scheduling.strategy == v1.Scheduling.Strategy.FLEX_START
    assert spec.scheduling.max_wait_duration.total_seconds() == seconds
    assert spec.scheduling.timeout.total_seconds() == seconds
    assert not spec.scheduling.restart_job_on_worker_restart


@pytest.mark.parametrize("extra, expected", [
    ([], {}),
    (["--restart_on_worker_restart"], {"restart": True}),
    (["--timeout", "2h", "--restart_on_worker_restart"], {"restart": True, "timeout": 7200}),
    (["--spot", "--timeout", "90m"], {"restart": True, "timeout": 5400, "strategy": "SPOT"}),
    (["--enable_web_access"], {"web": True}),
    (["--persistent_resource", "my-pool"], {"persistent": "my-pool"}),
    (["--tensorboard", TB, "--service_account", SA], {"tensorboard": TB}),
    (["--experiment", "exp1", "--experiment_run", "r-2", "--service_account", SA],
     {"experiment": "exp1-r-2"}),
])
def test_each_option_shows_in_the_job_spec(capsys, gcs, job_config, extra, expected):
    """In the dry run's job, and in the job the client library sends: the same spec."""
    spec = _dry_run_job(capsys, gcs, job_config, *extra).job_spec
    default_machine = {"machineType": vertex_job.DEFAULT_MACHINE, "acceleratorCount": 1,
                       "acceleratorType": vertex_job.DEFAULT_ACCELERATOR}
    pool = f"{PARENT}/persistentResources/my-pool"  # holding the default machine
    recorder = Recorder(resources={pool: {"name": pool, "resourcePools": [
        {"machineSpec": default_machine, "replicaCount": "1"}]}})
    try:
        assert submit.main(_args(gcs, job_config, *extra, "--api_endpoint",
                                 recorder.endpoint)) == 0, capsys.readouterr().err
        sent = v1.CustomJob.from_json(recorder.requests[-1]["body"])
    finally:
        recorder.close()
    assert sent.job_spec == spec
    run = expected.get("experiment")
    assert spec.experiment_run.rsplit("/", 1)[-1] == (run or "")
    scheduling = spec.scheduling
    assert bool(scheduling.restart_job_on_worker_restart) == expected.get("restart", False)
    assert scheduling.timeout.total_seconds() == expected.get("timeout", 0)
    assert scheduling.strategy.name == expected.get("strategy", "STRATEGY_UNSPECIFIED")
    assert spec.enable_web_access == expected.get("web", False)
    assert spec.persistent_resource_id == expected.get("persistent", "")
    assert spec.tensorboard == expected.get("tensorboard", "")
    assert bool(spec.experiment) == bool(run)  # only --experiment names one
    assert len(spec.worker_pool_specs) == 1


@pytest.mark.parametrize("replicas, servers, machine", [(2, 1, None), (4, 3, "n2-highcpu-32")])
def test_reduction_server_is_a_third_pool_and_nccl_on_the_workers(capsys, gcs, job_config,
                                                                 replicas, servers, machine):
    extra = ["--replica_count", str(replicas), "--reduction_server", str(servers)]
    spec = _dry_run_job(capsys, gcs, job_config, *H100, *extra,
                        *(["--reduction_server_machine", machine] if machine else [])).job_spec
    chief, workers, reducers = spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count, reducers.replica_count) == (
        1, replicas - 1, servers)
    assert reducers.container_spec.image_uri == vertex_job.REDUCTION_SERVER_IMAGE
    assert reducers.machine_spec == v1.MachineSpec(
        machine_type=machine or vertex_job.DEFAULT_REDUCTION_SERVER_MACHINE)  # no GPU
    for pool in (chief, workers):
        assert {e.name: e.value for e in pool.container_spec.env} == (
            vertex_job.REDUCTION_SERVER_WORKER_ENV)


def test_gcloud_yaml_carries_every_option(capsys, gcs, job_config, tmp_path):
    target = tmp_path / "job-spec.yaml"
    code = submit.main(_args(gcs, job_config, *H100, "--replica_count", "2", "--reduction_server",
                             "1", "--flex_start", "--max_wait", "1d", "--enable_web_access",
                             "--tensorboard", TB, "--service_account", SA,
                             "--gcloud_yaml", str(target)))
    assert code == 0, capsys.readouterr().err
    spec = v1.CustomJobSpec.from_json(json.dumps(yaml.safe_load(target.read_text())))
    assert spec.scheduling.strategy == v1.Scheduling.Strategy.FLEX_START
    assert spec.scheduling.max_wait_duration.total_seconds() == 86400
    assert spec.enable_web_access and spec.tensorboard == TB and len(spec.worker_pool_specs) == 3


@pytest.mark.parametrize("extra, message", [
    (["--flex_start", "--spot"], "error: --flex_start with --spot, command line, expected one of "
     "them"),
    (["--max_wait", "2h"], "error: --max_wait=2h without --flex_start, command line"),
    (["--flex_start", "--max_wait", "2 hours"], "error: duration '2 hours', --max_wait, expected "
     "a positive duration such as 90m, 2h or 1d"),
    (["--timeout", "0h"], "error: duration '0h', --timeout"),
    (["--flex_start", "--timeout", "8d"], "error: --timeout=8d with --flex_start, command line, "
     "expected at most 7d"),
    (["--persistent_resource", "my-pool", "--spot"], "error: --spot with --persistent_resource="
     "my-pool, command line, expected one of them"),
    (["--persistent_resource", "my-pool", "--flex_start"], "error: --flex_start with "
     "--persistent_resource=my-pool, command line"),
    (["--persistent_resource", "projects/p/locations/l/persistentResources/x"],
     "error: persistent resource 'projects/p/locations/l/persistentResources/x', "
     "--persistent_resource, expected the id of one in the job's region"),
    (["--tensorboard", TB], f"error: no --service_account, --tensorboard={TB}, expected the "
     "service account the job runs as: Vertex AI streams to a TensorBoard only from a job with "
     "one"),
    (["--tensorboard", TB.replace("europe-west4", "us-central1"), "--service_account", SA],
     "error: TensorBoard in us-central1, --tensorboard=projects/my-project/locations/us-central1"
     "/tensorboards/77, expected one in the job's region europe-west4"),
    (["--tensorboard", "tb-77", "--service_account", SA], "error: TensorBoard 'tb-77', "
     "--tensorboard, expected a resource name projects/PROJECT/locations/REGION/tensorboards/ID"),
    (["--reduction_server", "1", "--replica_count", "3", "--accelerator_type", "none"],
     "error: Reduction Server for CPU workers, --reduction_server=1, expected GPU workers"),
    (["--reduction_server", "1"], "error: Reduction Server for 1 GPU worker, --reduction_server=1, "
     "expected --replica_count >= 2"),
    (["--reduction_server", "1", "--replica_count", "2", "--reduction_server_machine", "big one"],
     "error: machine type 'big one', --reduction_server_machine"),
    (["--experiment", "exp1"], "error: no --service_account, --experiment=exp1, expected the "
     "service account the job runs as"),
    (["--experiment", "Exp_1", "--service_account", SA], "error: experiment name 'Exp_1', "
     "--experiment, expected lowercase letters, digits and -"),
    (["--experiment_run", "r1"], "error: --experiment_run=r1 without --experiment, command line"),
    (["--experiment", "exp1", "--experiment_run", "R 1", "--service_account", SA],
     "error: experiment run 'R 1', --experiment_run, expected lowercase letters"),
])
def test_combinations_the_api_would_refuse_are_refused_here(capsys, gcs, job_config, recorder,
                                                            extra, message):
    for mode in (["--dry_run"], ["--api_endpoint", recorder.endpoint]):
        code = submit.main(_args(gcs, job_config, *extra, *mode))
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert recorder.requests == []
    assert not list(gcs.client().list_blobs(gcs.bucket, prefix=_staging(gcs, job_config)))


def _paths(recorder, method=None) -> list[str]:
    return [r["path"].split("?")[0].removeprefix(f"/v1/{PARENT}/") for r in recorder.requests
            if method in (None, r["method"])]


def test_every_option_through_the_client_library(capsys, gcs, job_config):
    """The options a job is sent with, as the real library sends them, and the experiment run
    it logs to created first (with the TensorBoard as the experiment's own)."""
    recorder = Recorder(resources={TB: {"name": TB, "displayName": "board"}})
    try:
        code = submit.main(_args(gcs, job_config, *H100, "--replica_count", "2",
                                 "--reduction_server", "1", "--flex_start", "--max_wait", "90m",
                                 "--timeout", "2d", "--enable_web_access", "--tensorboard", TB,
                                 "--service_account", SA, "--experiment", "exp1",
                                 "--api_endpoint", recorder.endpoint))
        out, err = capsys.readouterr()
        assert code == 0, err
        (job_request,) = [r for r in recorder.requests if "/customJobs" in r["path"]]
        assert job_request is recorder.requests[-1]  # the experiment run exists before the job
        sent = v1.CustomJob.from_json(job_request["body"])
        spec = sent.job_spec
        assert spec.scheduling.strategy == v1.Scheduling.Strategy.FLEX_START
        assert spec.scheduling.max_wait_duration.total_seconds() == 5400
        assert spec.scheduling.timeout.total_seconds() == 2 * 86400
        assert spec.enable_web_access and spec.service_account == SA
        assert len(spec.worker_pool_specs) == 3
        experiment = f"{PARENT}/metadataStores/default/contexts/exp1"
        assert (spec.experiment, spec.experiment_run) == (experiment, f"{experiment}-blobs-1")
        # the API takes a TensorBoard or an experiment: the TensorBoard is the experiment's
        assert not spec.tensorboard
        kept = recorder.resources
        assert kept[experiment]["metadata"]["backing_tensorboard_resource"] == TB
        assert kept[f"{experiment}-blobs-1"]["schemaTitle"] == "system.ExperimentRun"
        args = list(spec.worker_pool_specs[0].container_spec.args)
        assert args[-4:] == ["--set", f"output.experiment={experiment}",
                             "--set", "output.experiment_run=blobs-1"]
        url = ("https://console.cloud.google.com/vertex-ai/experiments/locations/europe-west4/"
               "experiments/exp1/runs/exp1-blobs-1?project=my-project")
        assert f"experiment run: {url}" in out
        # submitted again, the experiment and its run are reused, not created twice
        created = len(kept)
        assert submit.main(_args(gcs, job_config, "--service_account", SA, "--experiment",
                                 "exp1", "--api_endpoint", recorder.endpoint)) == 0
        assert len(kept) == created
    finally:
        recorder.close()


POOL = {"machineSpec": {"machineType": "a3-highgpu-8g", "acceleratorType": "NVIDIA_H100_80GB",
                        "acceleratorCount": 8}, "replicaCount": "2"}
RESOURCE = f"{PARENT}/persistentResources/my-pool"


@pytest.mark.parametrize("pools, extra, refused", [
    ([POOL], ["--replica_count", "2"], None),
    ([{**POOL, "replicaCount": "1", "autoscalingSpec": {"minReplicaCount": "1",
                                                        "maxReplicaCount": "4"}}],
     ["--replica_count", "3"], None),
    ([POOL], ["--replica_count", "3"], "error: persistent resource my-pool holds too few "
     "a3-highgpu-8g for the job's replicas, --persistent_resource=my-pool"),
    ([{**POOL, "machineSpec": {"machineType": "g2-standard-8", "acceleratorType": "NVIDIA_L4",
                               "acceleratorCount": 1}}], [],
     "error: persistent resource my-pool holds no a3-highgpu-8g with 8 NVIDIA_H100_80GB (it "
     "holds: g2-standard-8), --persistent_resource=my-pool, expected the job's machines"),
    ([POOL], ["--replica_count", "2", "--reduction_server", "1"], "error: persistent resource "
     "my-pool holds no n1-highcpu-16 (it holds: a3-highgpu-8g)"),
    (None, [], f"error: Vertex AI refused the persistent resource (404 NOT_FOUND: {RESOURCE} not "
     f"found), {PARENT}, expected a persistent resource that exists in the project and region"),    # with an experiment: the resource is asked before the run is made, so none is left behind
    ([POOL], ["--replica_count", "3", "--experiment", "exp1", "--service_account", SA],
     "error: persistent resource my-pool holds too few a3-highgpu-8g"),
])
def test_a_persistent_resource_must_hold_the_jobs_machines(capsys, gcs, job_config, pools, extra,
                                                           refused):
    recorder = Recorder(resources={RESOURCE: {"name": RESOURCE, "resourcePools": pools}}
                        if pools is not None else {})
    try:
        code = submit.main(_args(gcs, job_config, *H100, *extra, "--persistent_resource",
                                 "my-pool", "--api_endpoint", recorder.endpoint))
        err = capsys.readouterr().err
        assert _paths(recorder)[0] == "persistentResources/my-pool"  # asked first
        jobs = [p for p in _paths(recorder) if p.startswith("customJobs")]
        if refused is None:
            assert code == 0, err
            sent = v1.CustomJob.from_json(recorder.requests[-1]["body"])
            assert len(jobs) == 1 and sent.job_spec.persistent_resource_id == "my-pool"
        else:
            assert code == 2 and err.startswith(refused) and len(err.splitlines()) == 1, err
            assert jobs == [] and not [p for p in _paths(recorder) if "metadataStores" in p]
    finally:
        recorder.close()


def test_curation_jobs_take_the_scheduling_options(capsys):
    code = submit.main(_predict_args("--model", "gs://b/m.h5", "--flex_start", "--max_wait", "1d",
                                     "--enable_web_access", "--timeout", "6h", "--dry_run"))
    assert code == 0, capsys.readouterr().err
    spec = v1.CustomJob.from_json(capsys.readouterr().out).job_spec
    assert spec.scheduling.strategy == v1.Scheduling.Strategy.FLEX_START
    assert spec.scheduling.timeout.total_seconds() == 6 * 3600 and spec.enable_web_access
    for extra in (["--tensorboard", TB], ["--experiment", "exp1"], ["--reduction_server", "1"]):
        assert submit.main(_predict_args("--model", "gs://b/m.h5", *extra, "--dry_run")) == 2
        flag = extra[0]
        assert capsys.readouterr().err == (f"error: {flag} with --predict, command line, expected "
                                           "it only for a training job (a curation job trains "
                                           "nothing)\n")

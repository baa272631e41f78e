"""`trainer.submit`: the CustomJob checked against the API's own message types, and a real
submission through the aiplatform client library to a local HTTP server that records it."""

import json

import pytest
import yaml
from google.cloud import aiplatform_v1 as v1
from google.protobuf.json_format import ParseError

from conftest import error_line, run_cli
from vertex_recorder import Recorder
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
    from trainer import predict

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

"""`trainer.submit --upload_model`: a run's SavedModel as a Vertex AI Model, checked against the
API's own message types and sent through the real client library to a recording endpoint."""

import json
import os

import pytest
from google.cloud import aiplatform_v1 as v1

from conftest import error_line, run_job
from trainer import storage, submit
from trainer.cloud import registry
from vertex_recorder import MODEL_NAME, OPERATION_NAME, Recorder

REGION = "europe-west4"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """A real run with its saved_model/, on disk."""
    out = tmp_path_factory.mktemp("registry")
    result, _ = run_job(out, "name=Shapes.v2", "model.name=tiny_cnn", "data.samples_per_class=20",
                        "train.epochs=1", "output.report=false", "output.plots=false",
                        "output.saved_model=true")
    return result.run_dir


@pytest.fixture(scope="module")
def bucket_run(local_run, gcs):
    """The same run in a bucket (the emulator), as a run with output.dir=gs://... leaves it."""
    url = gcs.url("registry", "runs", "Shapes.v2")
    for folder, _dirs, names in os.walk(local_run):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), local_run)
            storage.put_file(os.path.join(folder, name), storage.join(url, *rel.split(os.sep)))
    return url


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def _args(run, *extra):
    return ["--upload_model", run, "--project", "my-project", "--region", REGION, *extra]


def _with_version(run_dir, version):
    """A copy of `run_dir` whose SavedModel says it was written by TensorFlow `version`."""
    info_path = os.path.join(run_dir, "saved_model", "assets.extra", "trainer.json")
    info = json.load(open(info_path))
    info["tensorflow"] = version
    with open(info_path, "w") as f:
        json.dump(info, f)
    return run_dir


def test_dry_run_prints_the_model_of_a_run_in_a_bucket(bucket_run, capsys):
    code = submit.main(_args(bucket_run, "--serving_image", "europe-docker.pkg.dev/p/r/serving:1",
                             "--dry_run"))
    out = capsys.readouterr().out
    assert code == 0
    model = v1.Model.from_json(out)  # strict: a field the API does not have would raise
    assert model.artifact_uri == bucket_run + "/saved_model"
    assert model.container_spec.image_uri == "europe-docker.pkg.dev/p/r/serving:1"
    assert model.display_name == "Shapes.v2"
    metrics = json.loads(storage.read_text(bucket_run + "/metrics.json"))["test"]
    # every numeric test figure (loss, accuracy, the probabilities' areas and calibration error)
    assert {"loss", "accuracy", "roc_auc"} <= set(metrics)
    assert dict(model.labels) == {
        "run": "shapes_v2", "trainer_task": "classification",
        **{f"test_{k}": registry.label_value(v) for k, v in metrics.items()
           if isinstance(v, (int, float))}}
    for key, value in model.labels.items():  # Vertex AI's rules for labels
        assert key[0].isalpha() and len(key) <= 63 and len(value) <= 63
        assert all(c.islower() or c.isdigit() or c in "_-" for c in key + value), (key, value)
    assert json.loads(out)["containerSpec"]["imageUri"] == model.container_spec.image_uri


def test_the_registration_the_client_library_sends(bucket_run, recorder, capsys):
    code = submit.main(_args(bucket_run, "--serving_image", "us-docker.pkg.dev/p/r/s:1",
                             "--display_name", "shapes-prod", "--api_endpoint", recorder.endpoint))
    out = capsys.readouterr().out
    assert code == 0
    upload, poll = recorder.requests  # the upload, then the library asking after its operation
    assert (upload["method"], upload["path"].split("?")[0]) == (
        "POST", f"/v1/projects/my-project/locations/{REGION}/models:upload")
    assert "authorization" not in {k.lower() for k in upload["headers"]}  # no token over http
    sent = v1.UploadModelRequest.from_json(upload["body"]).model
    assert sent.display_name == "shapes-prod" and sent.artifact_uri == bucket_run + "/saved_model"
    assert sent.container_spec.image_uri == "us-docker.pkg.dev/p/r/s:1"
    assert sent.labels["run"] == "shapes_v2" and "test_accuracy" in sent.labels
    assert poll["method"] == "GET" and poll["path"].split("?")[0].endswith(f"/{OPERATION_NAME}")
    assert f"model: {MODEL_NAME}" in out.splitlines()


def test_a_local_run_is_copied_to_the_staging_bucket_then_registered(local_run, gcs, recorder,
                                                                   capsys):
    staging = gcs.url("registry", "staging")
    code = submit.main(_args(local_run, "--serving_image", "us-docker.pkg.dev/p/r/s:1",
                             "--staging_bucket", staging, "--api_endpoint", recorder.endpoint))
    assert code == 0, capsys.readouterr().err
    sent = v1.UploadModelRequest.from_json(recorder.requests[0]["body"]).model
    assert sent.artifact_uri.startswith(staging + "/models/Shapes.v2-")
    assert sent.artifact_uri.endswith("/saved_model")
    prefix = sent.artifact_uri.split("/", 3)[3]
    copied = {b.name[len(prefix) + 1:] for b in gcs.client().list_blobs(gcs.bucket, prefix=prefix)}
    local = {os.path.relpath(os.path.join(d, n), os.path.join(local_run, "saved_model"))
             for d, _, names in os.walk(os.path.join(local_run, "saved_model")) for n in names}
    assert copied == local and "saved_model.pb" in copied


@pytest.mark.parametrize("region, gpu, image", [
    ("europe-west4", True, "europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest"),
    ("us-central1", False, "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"),
    ("australia-southeast1", False, "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"),
])
def test_the_prebuilt_image_of_the_models_tensorflow(local_run, tmp_path, gcs, capsys,
                                                     region, gpu, image):
    import shutil

    run = shutil.copytree(local_run, tmp_path / "run")
    info_path = run / "saved_model" / "assets.extra" / "trainer.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(dict(info, tensorflow="2.15.1")))
    staging = gcs.url("registry", "dry")
    code = submit.main(["--upload_model", str(run), "--project", "my-project", "--region", region,
                        "--staging_bucket", staging, "--dry_run",
                        *(["--serving_gpu"] if gpu else [])])
    out = capsys.readouterr().out
    assert code == 0
    model = v1.Model.from_json(out)
    assert model.container_spec.image_uri == image
    assert model.artifact_uri.startswith(staging + "/models/")
    assert not list(gcs.client().list_blobs(gcs.bucket, prefix="registry/dry"))  # nothing sent


def test_a_tensorflow_version_without_a_prebuilt_image_is_one_error_line(local_run, capsys):
    import tensorflow as tf

    assert submit.main(_args(local_run, "--staging_bucket", "gs://b", "--dry_run")) == 2
    version = ".".join(tf.__version__.split(".")[:2])
    assert error_line(capsys.readouterr().err) == (
        f"error: no pre-built Vertex AI prediction image for TensorFlow {version} (cpu; the newest "
        f"is 2.15), --upload_model={local_run}, expected a model trained with TensorFlow 2.15 or "
        "older, or --serving_image URI: a TensorFlow Serving image of the model's version pushed "
        "to Artifact Registry, or europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest if "
        "the model loads there")


DENIED = (403, {"code": 403, "status": "PERMISSION_DENIED",
                "message": "Permission 'aiplatform.models.upload' denied on resource "
                           "'//aiplatform.googleapis.com/projects/my-project/locations/europe-west4'."})


@pytest.mark.parametrize("extra, message", [
    ([], "error: a local run, --upload_model={run}, expected a gs:// run folder or "
         "--staging_bucket gs://BUCKET to copy its saved_model/ to"),
    (["--config", "c.yaml"], "error: flags upload_model={run}, config=c.yaml, gcloud_yaml=None: "
                             "--upload_model takes no --config or --gcloud_yaml, command line"),
    (["--staging_bucket", "STAGING", "--serving_image", "i:1", "--api_endpoint", "REFUSING"],
     "error: Vertex AI refused the model (403 PERMISSION_DENIED: Permission "
     "'aiplatform.models.upload' denied on resource '//aiplatform.googleapis.com/projects/"
     "my-project/locations/europe-west4'.), projects/my-project/locations/europe-west4, expected "
     "an account that may create Vertex AI models in the project"),
])
def test_what_cannot_be_registered_is_one_error_line(local_run, gcs, capsys, extra, message):
    refusing = Recorder(DENIED)
    try:
        given = {"REFUSING": refusing.endpoint, "STAGING": gcs.url("registry", "refused")}
        extra = [given.get(e, e) for e in extra]
        code = submit.main(_args(local_run, *extra))
    finally:
        refusing.close()
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(message.format(run=local_run)), err


def test_a_folder_without_a_saved_model(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert submit.main(_args(str(tmp_path), "--dry_run")) == 2
    assert capsys.readouterr().err == (
        f"error: no saved_model/saved_model.pb in the run, --upload_model={tmp_path}, expected a "
        "run folder written with output.saved_model: true (the default)\n")


def test_registering_needs_a_project_but_no_config_or_staging_bucket(tmp_path, capsys):
    assert submit.main(["--upload_model", str(tmp_path), "--dry_run"]) == 2
    assert capsys.readouterr().err == (
        "error: missing --project, command line, expected the flags that `python -m "
        "trainer.submit --help` lists\n")

"""The image built and run for real: `make image`, then the image's own entry point in containers,
as Cloud Build's demo step and Vertex AI run it.

Needs a builder (a Docker daemon that answers, or buildah with podman) and the base image
TRAINER_TEST_BASE_IMAGE (default: docker.io/tensorflow/tensorflow:2.21.0, the CPU image of the
pinned TensorFlow; a machine without Docker Hub can make a Debian one, docs/container.md). Skipped, with
the reason, where either is missing. One build (its layers cached between sessions), then a few
short runs."""

import json
import os
import shlex
import shutil
import subprocess
import tempfile

import h5py
import pytest
import yaml

from conftest import ROOT, error_line

BASE = os.environ.get("TRAINER_TEST_BASE_IMAGE", "docker.io/tensorflow/tensorflow:2.21.0")
IMAGE = "localhost/trainer:test"
IMAGE_UID = 1000  # the Dockerfile's TRAINER_UID


def _answers(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _engine() -> tuple[str, str]:
    """(builder, runner), or skip: a `docker` on PATH is no engine until its daemon answers."""
    if shutil.which("docker") and _answers("docker", "info"):
        return "docker", "docker"
    if shutil.which("buildah") and shutil.which("podman"):
        return "buildah", "podman"
    pytest.skip("no image builder: no Docker daemon answers `docker info`, and buildah with "
                "podman is not installed")


def _have_base(runner: str) -> None:
    if _answers(runner, "image", "inspect", BASE):
        return
    pulled = subprocess.run([runner, "pull", BASE], capture_output=True, text=True, timeout=1800)
    if pulled.returncode != 0:
        pytest.skip(f"base image {BASE} is not here and cannot be pulled (set "
                    f"TRAINER_TEST_BASE_IMAGE; docs/container.md makes one): "
                    f"{pulled.stderr.strip()[-300:]}")


def _build(builder: str, tag: str, base: str, *extra: str) -> subprocess.CompletedProcess:
    flags = " ".join(shlex.quote(f) for f in extra)
    return subprocess.run(["make", "-C", ROOT, "image", f"IMAGE={tag}", f"BASE_IMAGE={base}",
                           f"BUILD_FLAGS={flags}"],
                          capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def engine():
    builder, runner = _engine()
    _have_base(runner)
    return builder, runner


@pytest.fixture(scope="module")
def image(engine):
    """The image, built by `make image` from this checkout; the runner that runs it."""
    builder, runner = engine
    proc = _build(builder, IMAGE, BASE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return runner


def _run(runner: str, *args: str, options=(), timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([runner, "run", "--rm", *options, IMAGE, *args],
                          capture_output=True, text=True, timeout=timeout)


def _host_folder(uid: int, mode: int = 0o755) -> str:
    """A folder to mount, outside pytest's root-only temporary folders."""
    path = tempfile.mkdtemp(prefix="trainer-image-")
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    return path


def _cloudbuild_demo_args() -> list[str]:
    with open(os.path.join(ROOT, "cloudbuild.yaml")) as f:
        steps = {s["id"]: s for s in yaml.safe_load(f)["steps"]}
    return steps["demo"]["args"][3:]  # after: run --rm IMAGE


def test_the_demo_trains_as_a_user_that_is_not_root_into_a_mounted_host_folder(image):
    """Cloud Build's demo step, its output folder a host folder owned by the caller (root mounts
    one chowned to the image's uid, as the README says; anyone else runs as themselves); the
    model is readable on the host, and stderr carries nothing (no TensorFlow start-up notice)."""
    args = _cloudbuild_demo_args()
    out = args[args.index("--output_dir") + 1]
    caller = os.geteuid()
    host = _host_folder(IMAGE_UID if caller == 0 else caller)
    user = [] if caller == 0 else ["--user", f"{caller}:{os.getegid()}"]
    try:
        proc = _run(image, *args, options=[*user, "--volume", f"{host}:{out}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr == ""
        model = os.path.join(host, "demo", "model.h5")
        owner = os.stat(model).st_uid
        assert owner != 0 and owner == (IMAGE_UID if caller == 0 else caller)
        with h5py.File(model, "r") as f:
            assert "model_config" in f.attrs
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_what_runs_is_the_installed_package_and_app_holds_no_copy_of_it(image):
    proc = _run(image, "-c", "import os, trainer; print(trainer.__file__); print(*os.listdir())",
                options=["--entrypoint", "python"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, listed = proc.stdout.splitlines()
    assert where.endswith("-packages/trainer/__init__.py"), where
    assert sorted(listed.split()) == ["benchmarks", "runs"]  # no trainer/, build/, egg-info


def test_a_bad_config_is_one_error_line_and_exit_2(image):
    proc = _run(image, "--set", "train.epochs=many", timeout=300)
    assert proc.returncode == 2
    assert "train.epochs" in error_line(proc.stderr)


def test_an_output_folder_the_image_user_cannot_write_is_one_error_line_and_exit_2(image):
    host = _host_folder(os.geteuid(), mode=0o555)
    try:
        proc = _run(image, "--set", "data.samples_per_class=10",
                    options=["--volume", f"{host}:/app/runs"], timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = error_line(proc.stderr)
        assert "/app/runs/demo" in line and f"uid {IMAGE_UID}" in line, line
        assert os.listdir(host) == []
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_the_cloud_entry_point_writes_the_model_to_the_bucket_and_logs_json_only(image, gcs):
    """`python -m trainer.train_model_cloud` as Vertex AI starts it (AIP_MODEL_DIR on a bucket,
    here the host's GCS emulator): every stdout line is one of the job's JSON records."""
    env = {**gcs.env(), "AIP_MODEL_DIR": gcs.url("image/model/"), "CLOUD_ML_JOB_ID": "77"}
    options = ["--network", "host", "--entrypoint", "python"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    proc = _run(image, "-m", "trainer.train_model_cloud", "--set", "data.samples_per_class=30",
                "--set", "train.epochs=1", "--set", "model.name=tiny_cnn", options=options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # each line one object
    loggers = {r["logging.googleapis.com/labels"]["python_logger"] for r in records}
    assert loggers == {"trainer"}, records[:2]
    assert all(r["logging.googleapis.com/labels"]["job_id"] == "77" for r in records)
    blob = gcs.client().bucket(gcs.bucket).get_blob("image/model/model.h5")
    assert blob is not None and blob.download_as_bytes().startswith(b"\x89HDF\r\n\x1a\n")


def test_the_user_step_reuses_a_uid_the_base_already_has(engine):
    """Ubuntu's images ship `ubuntu` with uid 1000: the image's user step must hold on such a
    base too (only the stage that makes the user is built)."""
    builder, runner = engine
    with tempfile.TemporaryDirectory() as context:
        with open(os.path.join(context, "Dockerfile"), "w") as f:
            f.write(f"FROM {BASE}\nRUN getent passwd {IMAGE_UID} "
                    f"|| useradd --create-home --uid {IMAGE_UID} ubuntu\n")
        base = "localhost/trainer-test-base:uid1000"
        command = ([builder, "build"] if builder == "docker" else
                   ["buildah", "bud", "--layers", "--isolation", "chroot", "--pull=never"])
        made = subprocess.run([*command, "--tag", base, context], capture_output=True,
                              text=True, timeout=600)
        assert made.returncode == 0, made.stderr[-3000:]
    proc = _build(builder, "localhost/trainer-test-user:uid1000", base, "--target", "user")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    seen = subprocess.run([runner, "run", "--rm", "localhost/trainer-test-user:uid1000", "sh",
                           "-c", "stat -c '%u %U' /app/runs; id -u trainer || echo no trainer"],
                          capture_output=True, text=True, timeout=120)
    owner, trainer = seen.stdout.splitlines()
    assert owner.split()[0] == str(IMAGE_UID) and owner.split()[1] != "trainer", seen.stderr
    assert trainer == "no trainer"  # the base's user is kept, none added

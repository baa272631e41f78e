"""The Dockerfile and cloudbuild.yaml, checked without a Docker engine (none runs here): hadolint,
what the image copies and runs, the pinned versions against setup.py, and the CI pipeline."""

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT
from trainer import config, submit

REGISTRY = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPO}/${_IMAGE}"


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped,
    build args other than BASE_IMAGE replaced by their defaults."""
    text = re.sub(r"\\\n", " ", _read("Dockerfile"))
    out = []
    args: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            for name, value in args.items():
                rest = rest.replace(f'"${{{name}}}"', value).replace(f"${{{name}}}", value)
            out.append((word.upper(), rest.strip()))
            if word.upper() == "ARG" and "=" in rest and not rest.startswith("BASE_IMAGE"):
                name, _, value = rest.partition("=")
                args[name.strip()] = value.strip()
    return out


def _hadolint(path: str) -> subprocess.CompletedProcess:
    exe = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    return subprocess.run([exe, "--no-color", path], capture_output=True, text=True, timeout=60)


def _setup_requires(extra: str = "") -> list[Requirement]:
    """setup.py's install_requires, or the requirements of one of its extras."""
    tree = ast.parse(_read("setup.py"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    specs = ast.literal_eval(kw["extras_require"])[extra] if extra else [
        ast.literal_eval(e) for e in kw["install_requires"].elts]
    return [Requirement(spec) for spec in specs]


def _pins() -> dict[str, str]:
    pins = {}
    for line in _read("constraints.txt").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_hadolint_finds_nothing_and_would_find_something(tmp_path):
    proc = _hadolint(os.path.join(ROOT, "Dockerfile"))
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install tensorflow\n")
    found = _hadolint(str(sloppy)).stdout
    assert "DL3006" in found and "DL3013" in found and "DL3042" in found


def test_image_base_entrypoint_user_and_install():
    steps = _instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu")
    assert {args.split()[0] for word, args in steps if word == "FROM"} <= {"${BASE_IMAGE}", "user"}
    tf_pin = _pins()["tensorflow"]
    assert steps[0][1].endswith(f":{tf_pin}-gpu")  # the base's TensorFlow is the pinned one
    entry = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    assert entry == [["python", "-m", "trainer.task"]]
    assert os.path.isfile(os.path.join(ROOT, "trainer", "task.py"))
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    deps, package = [shlex.split(args.split("&&")[0]) for word, args in steps
                     if word == "RUN" and "pip install" in args]
    # setup.py alone: its install_requires, no [test] extra, pinned, no cache left
    assert deps == ["python", "-m", "pip", "install", "--no-cache-dir", "--constraint",
                    "/tmp/deps/constraints.txt", "/tmp/deps"]
    assert ("COPY", "constraints.txt setup.py /tmp/deps/") in steps
    # then the package alone, from the wheel the build stage made: no source copy, no build/
    assert package == ["python", "-m", "pip", "install", "--no-cache-dir", "--no-deps",
                       "/tmp/wheels/trainer-*.whl"]
    assert ("COPY", "--from=wheel /wheels /tmp/wheels") in steps
    stage, copied = "", {}
    for word, args in steps:
        if word == "FROM":
            stage = args.split()[-1] if " AS " in args.upper() else "final"
        if word == "COPY":
            copied.setdefault(stage, []).extend(args.split()[:-1])
    assert [s for s, sources in copied.items() if "trainer" in sources] == ["wheel"]


def test_image_copies_only_what_exists_and_the_context_holds_only_that():
    sources = []
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from="):  # a stage's files are no source
            sources += args.split()[:-1]
    assert sources and all(os.path.exists(os.path.join(ROOT, s)) for s in sources), sources
    rules = [r for r in _read(".dockerignore").splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"  # everything is excluded, then the copied files let back in
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {s.rstrip("/") for s in sources}
    assert not any(s.startswith(("tests", "local", "runs", ".venv")) for s in sources)


def test_pins_cover_setup_py_and_are_what_the_tests_run_with():
    """Every runtime requirement is pinned; test-only ones may be; each pin is in its range."""
    pins = _pins()
    runtime = {r.name.lower().replace("_", "-"): r for r in _setup_requires()}
    test_only = {r.name.lower().replace("_", "-"): r for r in _setup_requires("test")}
    assert set(runtime) <= set(pins), f"not pinned in constraints.txt: {set(runtime) - set(pins)}"
    assert set(pins) <= set(runtime) | set(test_only), set(pins) - set(runtime) - set(test_only)
    for name, version in pins.items():
        req = runtime.get(name) or test_only[name]
        assert req.specifier.contains(version, prereleases=True), (req, version)
        assert metadata.version(req.name) == version, f"{req.name}: tests ran with another version"


@pytest.fixture(scope="module")
def build():
    return yaml.safe_load(_read("cloudbuild.yaml"))


def test_cloudbuild_tests_then_builds_runs_and_pushes(build):
    steps = {s["id"]: s for s in build["steps"]}
    assert [s["id"] for s in build["steps"]] == ["test", "build", "demo"]
    assert (steps["test"]["entrypoint"], steps["test"]["args"]) == ("make", ["test"])
    tags = [f"{REGISTRY}:${{COMMIT_SHA}}", f"{REGISTRY}:latest"]
    args = steps["build"]["args"]
    assert args[0] == "build" and args[-1] == "."
    assert [args[i + 1] for i, a in enumerate(args) if a == "--tag"] == tags
    assert "BASE_IMAGE=${_BASE_IMAGE}" in args
    assert build["images"] == tags
    demo = steps["demo"]["args"]
    assert demo[:3] == ["run", "--rm", tags[0]]
    flags = [a.split("=")[0] for a in demo[3:] if a.startswith("--")]
    assert set(flags) <= {"--config", "--set", "--output_dir", "--log_format"}


def test_cloudbuild_substitutions_are_defined_and_match_submit(build):
    text = _read("cloudbuild.yaml")
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", text))
    assert {"_REGION", "_REPO", "_IMAGE"} <= used
    assert used == set(build["substitutions"])  # every user substitution has a default
    s = build["substitutions"]
    image = f"{s['_REGION']}-docker.pkg.dev/PROJECT/{s['_REPO']}/{s['_IMAGE']}:latest"
    submit.main.parse(["--config", "c.yaml", "--project", "PROJECT", "--region", s["_REGION"],
                       "--staging_bucket", "gs://b"])
    job = submit.build_job(submit.FLAGS, "gs://b/c.yaml", "name")
    assert job.job_spec.worker_pool_specs[0].container_spec.image_uri == image


def _image_user() -> tuple[str, str]:
    """(uid, name) of the user the image runs as: the last USER, created by `useradd`."""
    steps = _instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    user = steps[last][1].split(":")[0]
    runs = " ".join(args for word, args in steps[:last] if word == "RUN")
    created = re.search(r"useradd (?P<opts>(?:--?[a-z-]+(?: \d+)? )*)(?P<name>[a-z_][a-z0-9_-]*)",
                        runs)
    # a base that has the uid already (Ubuntu's `ubuntu`) keeps its user
    assert re.search(r"if ! getent passwd (\d+) > /dev/null; then\s+useradd", runs)
    assert created, "the image creates the user it runs as"
    uid = re.search(r"--uid (\d+)", created["opts"])
    assert uid and user in (uid[1], created["name"]), (user, created[0])
    assert "--create-home" in created["opts"]  # matplotlib and Keras keep caches under $HOME
    return uid[1], created["name"]


def test_the_image_runs_as_a_user_that_is_not_root_and_owns_the_output_folder():
    uid, name = _image_user()
    assert int(uid) != 0
    steps = _instructions()
    last = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    # nothing after USER needs root: the image only says how to start
    assert {word for word, _ in steps[last + 1:]} <= {"ENTRYPOINT", "CMD", "ENV", "LABEL"}
    # the default output folder (output.dir, relative to WORKDIR) exists and is the user's
    workdir = [args for word, args in steps[:last] if word == "WORKDIR"][-1]
    out = os.path.join(workdir, config.OutputConfig().dir)
    runs = " ".join(args for word, args in steps[:last] if word == "RUN")
    assert re.search(rf"mkdir (-p )?{re.escape(out)}( |$)", runs)
    assert re.search(rf"chown (-R )?({re.escape(name)}|{uid})(:\S+)? {re.escape(out)}( |$)", runs)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="switching to the image's user needs root and setpriv")
def test_the_entrypoint_trains_as_the_image_user_without_root(tmp_path):
    """The job as the image runs it: the image's uid, its own home and output folder, the code
    read-only; it trains and writes its run."""
    import tempfile

    uid, _name = _image_user()
    base = tempfile.mkdtemp(prefix="trainer-user-")  # outside pytest's root-only folders
    try:
        home, work = os.path.join(base, "home"), os.path.join(base, "app")
        os.makedirs(os.path.join(work, "runs"))
        os.makedirs(home)
        for path in (base, home, work, os.path.join(work, "runs")):
            os.chown(path, int(uid), int(uid))
        os.chmod(base, 0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))}
        env.update(HOME=home, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1",
                   TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            # Read access everywhere (CAP_DAC_READ_SEARCH): in the image the code is readable by
            # its user, while a checkout here may sit in a folder only root can enter. Writes
            # still follow the uid: only the user's own folders are writable.
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", sys.executable,
             "-m", "trainer.task", "--set", "model.name=tiny_cnn", "--set", "train.epochs=1",
             "--set", "data.samples_per_class=20"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        model = os.path.join(work, "runs", "demo", "model.h5")
        assert os.path.isfile(model) and os.stat(model).st_uid == int(uid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_make_image_builds_with_the_build_args_of_cloudbuild(build):
    """`make image` (the local build, and tests/project/test_image.py's) passes the same build
    args as Cloud Build's build step, with the same defaults; BASE_IMAGE may be overridden."""
    args = next(s["args"] for s in build["steps"] if s["id"] == "build")
    cloud = [args[i + 1] for i, a in enumerate(args) if a == "--build-arg"]
    defaults = {f"${{{k}}}": v for k, v in build["substitutions"].items()}
    expected = [re.sub(r"\$\{_\w+\}", lambda m: defaults[m[0]], a) for a in cloud]
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_IMAGE", "IMAGE")}
    for overrides, want in (([], expected), (["BASE_IMAGE=localhost/base:1"],
                                             ["BASE_IMAGE=localhost/base:1"])):
        dry = subprocess.run(["make", "-n", "-C", ROOT, "image", *overrides], env=env,
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        for builder in ("docker build", "buildah bud"):
            line = next(ln for ln in dry.stdout.replace("\\\n", " ").splitlines() if builder in ln)
            words = shlex.split(line[line.index(builder):].split(";")[0])
            assert [words[i + 1] for i, w in enumerate(words) if w == "--build-arg"] == want
            assert words[-1] == "."

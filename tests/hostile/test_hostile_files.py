"""Every command's file arguments against hostile files (issue 24): nothing is read or written
outside what the user named, and no file argument can hang, exhaust memory or destroy what is
there.

The file arguments are not listed by hand: `file_flags()` reads them from the commands' own absl
flag definitions (a flag whose help speaks of a file, folder, path or URL, or where something
goes), so a new file flag is walked as soon as it is defined. Each is given each hostile kind of
its role (`INPUT_KINDS`, `OUTPUT_KINDS`), with the rest of the command line valid (`BASES`).
All cases run in one fresh interpreter under an address-space limit (`_runner`), each command
through its own `main(argv)`, each case with an alarm, so that a hang or a memory bomb fails
the case instead of the machine. docs/troubleshooting.md's table of guarantees names these tests.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import posixpath
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

# tests/ itself, for conftest: the walk imports this module in a child process
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import ROOT, write_video  # noqa: E402

COMMANDS = ("trainer.task", "trainer.predict.command", "trainer.convert", "trainer.datacheck",
            "trainer.compare", "trainer.tune.__main__", "trainer.submit", "trainer.smoothing")
ARGS = "ARGS"  # the positional arguments of a command that takes them (inputs, run folders)
MEMORY_LIMIT = 6 << 30  # bytes of address space for the runner: TensorFlow starts, no bomb fits
SPARSE = 6 << 30  # a "huge" file: a hole of this many bytes
CASE_SECONDS = 60  # a case still running after this has hung

# ----------------------------------------------------------------------------------------------
# The file arguments, from the flag definitions.

_PATHLIKE = re.compile(r"\b(file|folder|folders|directory|path|paths|URL|gs://|YAML|MATLAB|CSV)\b|\.h5\b|"
                       r"\bwhere\b.*\bgoes\b", re.I)
_WRITTEN = re.compile(r"\b(write|goes|output folder|folder for|outputs)\b", re.I)
_FOLDER = re.compile(r"\b(folder|folders|directory|goes|bucket)\b", re.I)
_FILE = re.compile(r"\b(file|YAML)\b|\.h5\b", re.I)
_NOT_A_PATH = re.compile(r"^Override\b|'s name\b", re.I)  # --set, --study_name


def file_flags() -> list[dict]:
    """Each command's file arguments: {command, flag, role (input/output), folder (whether it
    names a folder), help}. Positional arguments count as an input that may be a folder."""
    found = []
    for command in COMMANDS:
        module = importlib.import_module(command)
        own = module.FLAGS.flags_by_module_dict().get(command, [])
        for flag in own:
            if (flag.flag_type() not in ("string", "multi string")
                    or not _PATHLIKE.search(flag.help) or _NOT_A_PATH.search(flag.help)):
                continue
            written = bool(_WRITTEN.search(flag.help))
            folder = bool(_FOLDER.search(flag.help)) and (written and not _FILE.search(flag.help)
                                                          or not written)
            found.append({"command": command, "flag": flag.name, "help": flag.help,
                          "role": "output" if written else "input", "folder": folder,
                          "multi": flag.flag_type() == "multi string"})
        if module.main.takes_args:
            found.append({"command": command, "flag": ARGS, "help": module.__doc__ or "",
                          "role": "input", "folder": True, "multi": True})
    return found


def test_the_file_flags_are_found_from_the_definitions():
    flags = {(f["command"], f["flag"]): f for f in file_flags()}
    known_inputs = [("trainer.task", "config"), ("trainer.predict.command", "model"),
                    ("trainer.predict.command", ARGS), ("trainer.convert", "video"),
                    ("trainer.convert", "labels"), ("trainer.convert", "like"),
                    ("trainer.compare", ARGS),
                    ("trainer.tune.__main__", "space"), ("trainer.submit", "config"),
                    ("trainer.submit", "upload_model")]
    known_outputs = [("trainer.task", "output_dir"), ("trainer.predict.command", "csv"),
                     ("trainer.predict.command", "mat"), ("trainer.predict.command", "out"),
                     ("trainer.convert", "out"), ("trainer.datacheck", "out"),
                     ("trainer.compare", "out"), ("trainer.tune.__main__", "output_dir"),
                     ("trainer.submit", "gcloud_yaml")]
    for key in known_inputs:
        assert flags[key]["role"] == "input", key
    for key in known_outputs:
        assert flags[key]["role"] == "output", key
    assert not flags[("trainer.predict.command", "csv")]["folder"]
    assert flags[("trainer.task", "output_dir")]["folder"]
    for not_a_path in ("labels_key", "project", "display_name", "api_endpoint", "study_name"):
        assert not [k for k in flags if k[1] == not_a_path], not_a_path
    assert {f["command"] for f in flags.values()} == set(COMMANDS)


# ----------------------------------------------------------------------------------------------
# The valid files the command lines are built from (the rest of each command line is valid).

CONFIG = {"name": "hostile", "model": {"name": "tiny_cnn"}, "train": {"epochs": 1},
          "data": {"format": "npz", "train": "DATA/a.npz", "image_size": None}}


def _fixtures(folder: str) -> dict:
    """Valid files of every kind the commands take; returns their paths by name."""
    import yaml
    from PIL import Image

    from trainer import config, models
    from trainer.outputs import modelfile

    os.makedirs(folder)
    p = {k: os.path.join(folder, v) for k, v in {
        "data": "data", "config": "config.yaml", "space": "space.yaml", "model": "model.h5",
        "image": "img.png", "video": "clip.mp4", "labels": "clip.mat", "run": "run",
        "external": "external.h5", "remote_config": "remote.yaml"}.items()}
    os.makedirs(p["data"])
    rng = np.random.default_rng(0)
    np.savez(os.path.join(p["data"], "a.npz"), x=rng.normal(size=(24, 8, 8)).astype(np.float32),
             y=np.arange(24) % 2)
    cfg = dict(CONFIG, data={"format": "npz", "train": os.path.join(p["data"], "a.npz")},
               output={"dir": os.path.join(folder, "runs-never")})
    with open(p["config"], "w") as f:
        yaml.safe_dump(cfg, f)
    with open(p["space"], "w") as f:
        yaml.safe_dump({"params": {"train.learning_rate": [0.001]}}, f)
    with open(p["remote_config"], "w") as f:  # what a job on Vertex AI reads: buckets only
        yaml.safe_dump(dict(cfg, data={"format": "npz", "train": "gs://b/data/a.npz"},
                            output={"dir": "gs://b/runs"}), f)
    net = models.build_model(config.load(None, ["model.name=tiny_cnn"]), (8, 8, 1), 2,
                             mean=np.zeros(1), variance=np.ones(1))
    modelfile.save(net, p["model"], {"task": "classification", "class_names": ["a", "b"],
                                     "input_shape": [8, 8, 1], "num_outputs": 2,
                                     "model": "tiny_cnn", "name": "hostile"})
    external_model(p["model"], p["external"])
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(p["image"])
    write_video(p["video"], np.zeros((3, 16, 16, 3), np.uint8))
    import scipy.io

    scipy.io.savemat(p["labels"], {"contacts": np.zeros((3, 1))})
    p["review"] = os.path.join(folder, "review.csv")  # predict --review's file, corrected
    with open(p["review"], "w") as f:
        f.write(f"input,frame,predicted,probability,score,reason\n{p['video']},0,1,0.5,0.9,x\n")
    os.makedirs(p["run"])
    with open(os.path.join(p["run"], "metrics.json"), "w") as f:
        json.dump({"val": {"loss": 1.0, "accuracy": 0.5}}, f)
    with open(os.path.join(p["run"], "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    return p


def external_model(model: str, dest: str) -> str:
    """A copy of `model` whose first convolution kernel is HDF5 external storage in /etc/passwd."""
    return _model_reading("external storage", model, dest, "")


# Each command's valid command line, by mode: {flag: value}; `{case}` is the case's own folder.
# A flag of another mode (convert --video, submit --predict) brings its mode's line.
BASES = {
    "trainer.task": [{"config": "{config}", "output_dir": "{case}/runs"}],
    "trainer.predict.command": [{"model": "{model}", ARGS: ["{image}"]},
                                {"model": "{model}", ARGS: ["{video}"], "review": "2",
                                 "review_out": "{case}/review"}],
    "trainer.convert": [{"config": "{config}", "out": "{case}/out", "to": "npz"},
                        {"video": ["{video}"], "labels": ["{labels}"], "out": "{case}/out",
                         "to": "npz"},
                        {"video": ["{video}"], "review": "{review}", "out": "{case}/out",
                         "to": "npz"}],
    "trainer.datacheck": [{"config": "{config}", "out": "{case}/check"}],
    "trainer.smoothing": [{"model": "{model}", "video": ["{video}"], "labels": ["{labels}"],
                           "out": "{case}/smoothing.json"}],
    "trainer.compare": [{ARGS: ["{run}", "{run}"], "out": "{case}/compare"}],
    "trainer.tune.__main__": [{"config": "{config}", "space": "{space}",
                               "output_dir": "{case}/tune", "trials": "1"}],
    "trainer.submit": [{"config": "{remote_config}", "project": "p", "staging_bucket": "gs://b",
                        "dry_run": True},
                       {"gcloud_yaml": "{case}/job.yaml", "config": "{remote_config}",
                        "project": "p", "staging_bucket": "gs://b"},
                       {"predict": True, "model": "{model}", "inputs": ["gs://b/in"],
                        "out": "gs://b/out", "project": "p", "staging_bucket": "gs://b",
                        "dry_run": True},
                       {"upload_model": "{run}", "project": "p", "dry_run": True}],
}


def _base(command: str, flag: str) -> dict:
    """The first valid command line that has `flag` (the first of all for an output)."""
    modes = BASES[command]
    return next((m for m in modes if flag in m), modes[0])


def _argv(base: dict, flag: str, value, paths: dict, case: str) -> list[str]:
    def fill(v):
        return v.format(case=case, **paths) if isinstance(v, str) else v

    line = dict(base)
    line[flag] = value
    argv, args = [], []
    for name, v in line.items():
        values = v if isinstance(v, list) else [v]
        if name == ARGS:
            args = [fill(x) for x in values]
        elif v is True:
            argv.append(f"--{name}")
        else:
            argv += [f"--{name}={fill(x)}" for x in values]
    return argv + args


# ----------------------------------------------------------------------------------------------
# Hostile kinds. Each makes the hostile thing in the case's folder and returns the value given.

def _ext(flag: dict) -> str:
    """The file name ending the flag's help asks for."""
    if flag["flag"] == ARGS:
        return ".png" if flag["command"] == "trainer.predict.command" else ""
    text = flag["help"]
    for pattern, ext in ((r"\.h5\b", ".h5"), (r"\bMATLAB\b|\.mat\b", ".mat"), (r"\bYAML\b", ".yaml"),
                         (r"\bCSV\b", ".csv"), (r"\bvideo\b", ".mp4")):
        if re.search(pattern, text):
            return ext
    return ".png" if flag["command"] == "trainer.predict.command" else ".dat"


def _sparse(case, flag, paths):
    path = os.path.join(case, "huge" + _ext(flag))
    with open(path, "wb") as f:
        f.truncate(SPARSE)
    return path


def _fifo(case, flag, paths):
    path = os.path.join(case, "pipe" + ("" if flag["role"] == "output" and flag["folder"]
                                        else _ext(flag)))
    os.mkfifo(path)
    return path


def _folder(case, flag, paths):
    path = os.path.join(case, "folder" + _ext(flag))
    os.mkdir(path)
    return path


def _hdf5_external(case, flag, paths):
    return external_model(paths["model"], os.path.join(case, "external" + _ext(flag)))


def _device_link(case, flag, paths):
    path = os.path.join(case, "link" + _ext(flag))
    os.symlink("/dev/zero", path)
    return path


def _link_out(case, flag, paths):
    """A folder the user names, one of whose files is a link to a valid file outside it."""
    inside = os.path.join(case, "named")
    os.mkdir(inside)
    if flag["command"] == "trainer.compare":
        for name in ("config.yaml", "metrics.json"):
            os.symlink(os.path.join(paths["run"], name), os.path.join(inside, name))
    elif flag["flag"] == "model":
        os.symlink(paths["model"], os.path.join(inside, "model.h5"))
    elif flag["flag"] == "upload_model":  # a SavedModel of its own, its metrics elsewhere
        os.makedirs(os.path.join(inside, "saved_model", "assets.extra"))
        with open(os.path.join(inside, "saved_model", "saved_model.pb"), "wb") as f:
            f.write(b"\0")
        with open(os.path.join(inside, "saved_model", "assets.extra", "trainer.json"), "w") as f:
            json.dump({"name": "hostile", "tensorflow": "2.21.0", "task": "classification"}, f)
        os.symlink(os.path.join(paths["run"], "metrics.json"), os.path.join(inside, "metrics.json"))
    else:
        os.symlink(paths["image"], os.path.join(inside, "a.png"))
    return inside


def _device(node: str):
    def make(case, flag, paths):
        return node
    return make


def _own_device(minor: int, name: str):
    """A character device node of the case's own (1, minor: 7 is /dev/full), so a regression
    replaces a copy, never the machine's device."""
    def make(case, flag, paths):
        path = os.path.join(case, name)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        return path
    return make


def _own_device_link(case, flag, paths):
    target = _own_device(7, "full")(case, flag, paths)
    path = os.path.join(case, "link" + ("" if flag["folder"] else _ext(flag)))
    os.symlink(target, path)
    return path


def _file_for_folder(case, flag, paths):
    path = os.path.join(case, "a-file")
    with open(path, "w") as f:
        f.write("kept\n")
    return path


INPUT_KINDS = {
    "device": _device("/dev/zero"),
    "link to a device": _device_link,
    "FIFO": _fifo,
    "sparse 6 GiB file": _sparse,
    "HDF5 external storage": _hdf5_external,
    "directory for a file": _folder,
    "link out of the named folder": _link_out,
}
OUTPUT_KINDS = {
    "device": _own_device(7, "full"),
    "link to a device": _own_device_link,
    "FIFO": _fifo,
    "directory for a file": _folder,
    "file for a folder": _file_for_folder,
}


def _applies(kind: str, flag: dict) -> bool:
    if kind == "link out of the named folder":
        return flag["folder"]  # a file the user names is read wherever its link leads
    if kind == "directory for a file":
        return flag["role"] == "input" or not flag["folder"]
    if kind == "file for a folder":
        return flag["folder"]
    return True


def cases(paths: dict, root: str) -> list[dict]:
    out = []
    for flag in file_flags():
        kinds = INPUT_KINDS if flag["role"] == "input" else OUTPUT_KINDS
        for kind, make in kinds.items():
            if not _applies(kind, flag):
                continue
            case = os.path.join(root, f"case{len(out):03d}")
            os.makedirs(case)
            value = make(case, flag, paths)
            base = _base(flag["command"], flag["flag"])
            out.append({"command": flag["command"], "flag": flag["flag"], "kind": kind,
                        "role": flag["role"], "case": case, "value": value,
                        "argv": _argv(base, flag["flag"], [value] if flag["multi"] else value,
                                      paths, case)})
    return out


# ----------------------------------------------------------------------------------------------
# The runner: one interpreter, every case through the command's own main(argv).

def _run_cases(cases_file: str, results_file: str) -> None:
    """Run each case; append one JSON line per case to `results_file` as it ends (so a case
    that kills the interpreter is the one after the last line)."""
    import resource
    import traceback

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    def alarm(signum, frame):
        raise TimeoutError(f"still running after {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, alarm)
    with open(cases_file) as f:
        todo = json.load(f)
    for case in todo:
        main = importlib.import_module(case["command"]).main
        err_path = os.path.join(case["case"] + ".stderr")
        saved = os.dup(2), os.dup(1)
        started = time.monotonic()
        with open(err_path, "w") as err, open(os.devnull, "w") as out:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(err.fileno(), 2)
            os.dup2(out.fileno(), 1)
            signal.alarm(CASE_SECONDS)
            try:
                status = main(case["argv"])
            except BaseException:  # noqa: BLE001 - recorded: a traceback fails the case
                traceback.print_exc()
                status = "exception"
            finally:
                signal.alarm(0)
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 2)
                os.dup2(saved[1], 1)
                os.close(saved[0])
                os.close(saved[1])
        with open(err_path) as err:
            stderr = err.read()
        os.unlink(err_path)
        with open(results_file, "a") as f:
            f.write(json.dumps({"status": status, "stderr": stderr,
                                "seconds": round(time.monotonic() - started, 2)}) + "\n")


def _listing(folder: str) -> dict:
    """Every entry under `folder`: relative path -> (kind, size), links not followed."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            found[os.path.relpath(path, folder)] = (stat.S_IFMT(st.st_mode),
                                                    st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return found


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """Every case run once; [(case, result, listing before, listing after)]."""
    root = str(tmp_path_factory.mktemp("hostile"))
    if os.geteuid() != 0:
        pytest.skip("device nodes of the test's own need root (mknod)")
    paths = _fixtures(os.path.join(root, "files"))
    todo = cases(paths, os.path.join(root, "cases"))
    before = [_listing(c["case"]) for c in todo]
    shared = _listing(paths["run"])
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(todo, f)
    results_file = os.path.join(root, "results.jsonl")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        [ROOT, os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]))
    code = ("import sys, test_hostile_files as t\n"
            "t._run_cases(sys.argv[1], sys.argv[2])\n")
    proc = subprocess.run([sys.executable, "-c", code, os.path.join(root, "cases.json"),
                           results_file], capture_output=True, text=True, env=env, cwd=root,
                          timeout=CASE_SECONDS * 4 + 20 * len(todo))
    with open(results_file) as f:
        results = [json.loads(line) for line in f if line.strip()]
    assert len(results) == len(todo), (
        f"the runner died in case {todo[len(results)]} (status {proc.returncode}): "
        f"{proc.stderr[-3000:]}")
    assert _listing(paths["run"]) == shared
    return [(c, r, b, _listing(c["case"])) for c, r, b in zip(todo, results, before)]


def _verdict(case: dict, result: dict, before: dict, after: dict) -> list[str]:
    """What the case broke of the guarantees; empty when none."""
    broken = []
    lines = result["stderr"].strip().splitlines()
    if result["status"] != 2:
        broken.append(f"exit status {result['status']}, expected 2")
    if "Traceback" in result["stderr"] or len(lines) != 1 or not lines[0].startswith("error: "):
        broken.append(f"stderr is not one error line: {result['stderr'][-1500:]!r}")
    if after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        broken.append(f"the case's folder changed: {changed[:6]}")
    return broken


KIND_IDS = {"device": "device", "link to a device": "device-link", "FIFO": "fifo",
            "sparse 6 GiB file": "huge", "HDF5 external storage": "hdf5-external",
            "directory for a file": "folder-for-file", "file for a folder": "file-for-folder",
            "link out of the named folder": "link-out"}


@pytest.mark.parametrize("kind", list(KIND_IDS), ids=list(KIND_IDS.values()))
@pytest.mark.parametrize("command", COMMANDS, ids=[c.split(".")[1] for c in COMMANDS])
def test_hostile(walked, command, kind):
    """Every file argument of `command` given the `kind` of hostile file: status 2, one error
    line, nothing left or changed (docs/troubleshooting.md's table names these tests)."""
    mine = [w for w in walked if w[0]["command"] == command and w[0]["kind"] == kind]
    if not mine:
        pytest.skip(f"{command} has no file argument that {kind!r} applies to")
    failures = []
    for case, result, before, after in mine:
        broken = _verdict(case, result, before, after)
        if broken:
            failures.append(f"--{case['flag']}: " + "; ".join(broken) + f"\n  argv: {case['argv']}")
    assert not failures, "\n".join(failures)


def test_the_walk_covers_every_command_and_kind(walked):
    seen = {(c["command"], c["kind"]) for c, *_ in walked}
    assert {c for c, _ in seen} == set(COMMANDS)
    assert {k for _, k in seen} == set(INPUT_KINDS) | set(OUTPUT_KINDS)
    assert len(walked) >= 100


def test_devices_and_pipes_are_still_what_they_were(walked):
    for case, _, before, after in walked:
        for name, (kind, _) in before.items():
            if stat.S_ISCHR(kind) or stat.S_ISFIFO(kind):
                assert after.get(name, (None,))[0] == kind, (case["argv"], name)


def test_each_line_names_what_was_wrong(walked):
    """The line names the value the user gave (or the file in it that is wrong)."""
    for case, result, _, _ in walked:
        value = case["value"]
        line = result["stderr"].strip()
        assert value in line or os.path.basename(value) in line, (case["argv"], line)


# ----------------------------------------------------------------------------------------------
# Model files that read outside themselves, in every way HDF5 allows.

def _first_kernel(f: h5py.File) -> str:
    """The name of a model file's first convolution kernel (Keras numbers its layers' names)."""
    kernels = []
    f.visititems(lambda n, o: kernels.append(n) if isinstance(o, h5py.Dataset)
                 and "kernel" in n else None)
    return kernels[0]


def _model_reading(kind: str, model: str, dest: str, other: str) -> str:
    """A copy of `model` whose first kernel lies outside it, the `kind` way (`other`: the file
    it lies in, made here; external storage uses /etc/passwd)."""
    import shutil

    shutil.copy(model, dest)
    with h5py.File(dest, "a") as f:
        name = _first_kernel(f)
        shape, dtype = f[name].shape, f[name].dtype
        del f[name]
        if kind == "external storage":
            f.create_dataset(name, shape, dtype,
                             external=[("/etc/passwd", 0, math.prod(shape) * dtype.itemsize)])
            return dest
        with h5py.File(other, "w") as g:
            g["k"] = np.ones(shape, dtype)
        if kind == "external link":
            f[name] = h5py.ExternalLink(other, "/k")
        elif kind == "soft link through an external link":
            # beside the kernel, after it: the soft link is what the check meets first
            f[posixpath.join(posixpath.dirname(name), "zz")] = h5py.ExternalLink(other, "/")
            f[name] = h5py.SoftLink(posixpath.join("/", posixpath.dirname(name), "zz", "k"))
        else:  # virtual
            layout = h5py.VirtualLayout(shape, dtype)
            layout[...] = h5py.VirtualSource(other, "k", shape)
            f.create_virtual_dataset(name, layout)
    return dest


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from trainer import config, models
    from trainer.outputs import modelfile

    path = str(tmp_path_factory.mktemp("model") / "model.h5")
    net = models.build_model(config.load(None, ["model.name=tiny_cnn"]), (8, 8, 1), 2,
                             mean=np.zeros(1), variance=np.ones(1))
    modelfile.save(net, path, {"task": "classification", "class_names": ["a", "b"],
                               "input_shape": [8, 8, 1], "num_outputs": 2, "model": "tiny_cnn",
                               "name": "hostile"})
    return path


@pytest.mark.parametrize("kind, message", [
    ("external storage", "has external storage (its bytes are in '/etc/passwd')"),
    ("external link", "is an external link ('{kernel}' points into another file)"),
    ("soft link through an external link", "lies in another file"),
    ("virtual", "is virtual (mapped from other files)"),
])
@pytest.mark.parametrize("unsafe", [False, True])
def test_a_model_file_reading_outside_itself_is_refused(model_file, tmp_path, kind, message,
                                                        unsafe):
    from trainer import predict
    from trainer.errors import UserError

    path = _model_reading(kind, model_file, str(tmp_path / "m.h5"), str(tmp_path / "other.h5"))
    with pytest.raises(UserError) as exc:
        predict.load(path, allow_unsafe=unsafe)  # the opt-in is for code, not for other files
    with h5py.File(model_file) as f:
        kernel = _first_kernel(f)
    assert str(exc.value) == (f"dataset {kernel!r} {message.format(kernel=kernel)}, {path}, "
                              "expected datasets stored inside the file")


def test_a_whole_model_file_is_accepted_and_links_inside_it_too(model_file, tmp_path):
    from trainer import predict

    import shutil

    path = str(tmp_path / "m.h5")
    shutil.copy(model_file, path)
    with h5py.File(path, "a") as f:
        f["alias"] = h5py.SoftLink("/model_weights")  # inside the file: harmless
    assert predict.load(path).input_shape == (8, 8, 1)


# ----------------------------------------------------------------------------------------------
# Publishing never replaces what is not a regular file.

@pytest.mark.parametrize("kind", ["device", "FIFO", "directory", "link to a device",
                                  "link to a FIFO"])
def test_put_file_refuses_to_publish_over_anything_but_a_regular_file(tmp_path, kind):
    from trainer import storage
    from trainer.errors import UserError

    source = tmp_path / "finished.csv"
    source.write_text("a,b\n")
    target = tmp_path / "target"
    if "device" in kind:
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(tmp_path / "node", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    elif "FIFO" in kind:
        os.mkfifo(tmp_path / "node")
    else:
        os.mkdir(tmp_path / "node")
    if kind.startswith("link"):
        os.symlink(tmp_path / "node", target)
    else:
        os.rename(tmp_path / "node", target)
    mode = os.lstat(target).st_mode
    with pytest.raises(UserError, match=f"^output is .*, {target}, expected a regular file or a "
                                        "new file name"):
        storage.put_file(str(source), str(target))
    assert os.lstat(target).st_mode == mode
    assert sorted(os.listdir(tmp_path)) == sorted(["finished.csv", "target"] + (
        ["node"] if kind.startswith("link") else []))  # no partial file left beside it


def test_put_file_replaces_a_regular_file_and_writes_a_new_name(tmp_path):
    from trainer import storage

    source = tmp_path / "finished.csv"
    source.write_text("new\n")
    (tmp_path / "old.csv").write_text("old\n")
    storage.put_file(str(source), str(tmp_path / "old.csv"))
    storage.put_file(str(source), str(tmp_path / "sub" / "new.csv"))
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "sub" / "new.csv").read_text() == "new\n"


# ----------------------------------------------------------------------------------------------
# Files read whole are bounded by size, locally and in a bucket.

def test_files_read_whole_are_refused_by_size_before_reading(tmp_path):
    import fsspec

    from trainer import storage
    from trainer.errors import UserError

    for size, limit in ((11, 10), (2**20 + 1, 2**20)):
        path = tmp_path / f"f{size}"
        with open(path, "wb") as f:
            f.truncate(size)
        with pytest.raises(UserError) as exc:
            storage.read_bytes(str(path), limit, "a test file")
        shown = f" ({limit / 2**20:.3g} MiB)" if limit >= 2**20 else ""
        assert str(exc.value).startswith(f"file too large ({size} bytes")
        assert str(exc.value).endswith(f", {path}, expected at most {limit} bytes{shown} for a "
                                       "test file")
        assert len(storage.read_bytes(str(path), size)) == size
        fsspec.filesystem("memory").pipe_file(f"/bounds/f{size}", b"\0" * size)
        with pytest.raises(UserError, match=f"^file too large \\(more than {limit} bytes"):
            storage.read_bytes(f"memory://bounds/f{size}", limit, "a test file")
        assert len(storage.read_bytes(f"memory://bounds/f{size}", size)) == size


def test_a_folder_named_like_a_data_file_is_named_as_a_folder(tmp_path):
    from trainer import storage
    from trainer.errors import UserError

    for name in ("shards.npz", "x.npy", "data.h5", "labels.csv"):
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "other.npy", np.array(["text"]))
        with pytest.raises(UserError) as exc:
            storage.expand(str(folder), "data.train")
        suffix = os.path.splitext(name)[1]
        assert str(exc.value) == (f"path is a directory, data.train={folder}, expected a "
                                  f"{suffix} file (a folder of files is named without {suffix})")


def test_predict_batch_size_is_bounded_on_the_command_line(model_file, tmp_path, capsys):
    from PIL import Image

    from trainer.predict import command as predict

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    for size in (65537, 10**9):
        assert predict.main(["--model", model_file, "--batch_size", str(size),
                             str(tmp_path / "a.png")]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"error: flag --batch_size={size}: ") and "65536" in line, line
    assert predict.main(["--model", model_file, "--batch_size", "65536",
                         str(tmp_path / "a.png")]) == 0


# ----------------------------------------------------------------------------------------------
# The memory limit is the process's own cgroup's, the tightest along its ancestors.

def _fake_cgroups(tmp_path, version: str, limits: dict[str, str], group: str) -> tuple[str, str]:
    """A cgroup tree under tmp_path (`limits`: folder below the mount -> limit text), and the
    /proc/self/cgroup and mountinfo files that place this process in `group`."""
    mount = tmp_path / ("unified" if version == "v2" else "memory")
    name = "memory.max" if version == "v2" else "memory.limit_in_bytes"
    for folder, text in limits.items():
        (mount / folder).mkdir(parents=True, exist_ok=True)
        (mount / folder / name).write_text(text + "\n")
    proc = tmp_path / "cgroup"
    proc.write_text(f"0::{group}\n" if version == "v2" else
                    f"5:devices:/\n4:memory:{group}\n3:cpu,cpuacct:/other\n0::/\n")
    mountinfo = tmp_path / "mountinfo"
    kind = "cgroup2 cgroup2 rw" if version == "v2" else "cgroup cgroup rw,memory"
    mountinfo.write_text(f"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                         f"35 31 0:32 / {mount} rw,relatime - {kind}\n")
    return str(proc), str(mountinfo)


@pytest.mark.parametrize("version, unlimited", [("v1", "9223372036854771712"), ("v2", "max")])
def test_the_cgroup_limit_is_the_own_groups_tightest_ancestor(tmp_path, version, unlimited):
    from trainer.runtime import memory

    gib = 2**30
    cases = [  # (limits by folder, the process's group, expected)
        ({".": unlimited, "jobs": unlimited, "jobs/a": str(3 * gib)}, "/jobs/a", 3 * gib),
        ({".": unlimited, "jobs": str(2 * gib), "jobs/a": str(3 * gib)}, "/jobs/a", 2 * gib),
        ({".": str(gib), "jobs": unlimited, "jobs/a": unlimited}, "/jobs/a", gib),
        ({".": unlimited, "jobs": str(5 * gib), "jobs/a": unlimited}, "/jobs/a/gone", 5 * gib),
        ({".": unlimited, "jobs": unlimited}, "/jobs", None if version == "v2" else int(unlimited)),
        ({".": str(gib), "jobs/a": str(2 * gib)}, "/jobs/b", gib),  # a sibling's is not ours
    ]
    for n, (limits, group, expected) in enumerate(cases):
        proc, mountinfo = _fake_cgroups(tmp_path / str(n), version, limits, group)
        assert memory.cgroup_limit(proc, mountinfo) == expected, (limits, group)


def test_no_cgroup_files_means_no_cgroup_limit(tmp_path):
    from trainer.runtime import memory

    assert memory.cgroup_limit(str(tmp_path / "none"), str(tmp_path / "none")) is None


def _own_memory_group() -> str:
    """This process's own v1 memory cgroup folder, or skip."""
    from trainer.runtime import memory

    mounts = memory._cgroup_mounts("/proc/self/mountinfo")
    with open("/proc/self/cgroup") as f:
        line = next((x for x in f.read().splitlines() if "memory" in x.split(":")[1].split(",")),
                    None)
    if "v1" not in mounts or line is None:
        pytest.skip("no cgroup v1 memory controller here")
    folder = os.path.join(mounts["v1"][1], line.split(":", 2)[2].lstrip("/"))
    if not os.access(folder, os.W_OK):
        pytest.skip("this process may not make a memory cgroup")
    return folder


def test_inside_a_real_3_gib_cgroup_the_memory_check_sees_3_gib(tmp_path):
    group = os.path.join(_own_memory_group(), f"bounds-test-{os.getpid()}")
    try:
        os.mkdir(group)
        with open(os.path.join(group, "memory.limit_in_bytes"), "w") as f:
            f.write(str(3 << 30))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here ({exc})")
    try:
        code = ("from trainer.runtime import memory; from trainer.errors import UserError\n"
                "print(memory.available())\n"
                "try:\n    memory.check_fits(4 << 30, 'a test array', 'here')\n"
                "except UserError as exc:\n    print(exc)\n")
        proc = subprocess.run(
            ["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" -c "$1"',
             sys.executable, code], capture_output=True, text=True, timeout=60, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT))
        assert proc.returncode == 0, proc.stderr
        available, line = proc.stdout.strip().splitlines()
        assert int(available) <= 3 << 30
        assert line.endswith(f"here, expected at most the {available} bytes (3 GiB) of memory "
                             "available")
    finally:
        os.rmdir(group)


# ----------------------------------------------------------------------------------------------
# Sizes derived from a header: the read window of huge declared samples.

def test_huge_declared_samples_with_a_small_batch_end_in_one_line(tmp_path):
    """An .npy whose header declares 100 samples of 64 MiB (a sparse file, so its size agrees)
    read with batch 1: the read window (a block of rows) is checked against memory before it
    is made, instead of an allocation error from deep inside the pipeline."""
    from numpy.lib import format as npy_format

    header = {"descr": "|u1", "fortran_order": False, "shape": (100, 4096, 4096)}
    with open(tmp_path / "x0.npy", "wb") as f:
        npy_format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + 100 * 4096 * 4096)
    np.save(tmp_path / "y0.npy", np.arange(100) % 2)
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
        from trainer.config import DataConfig
        from trainer.data import images, pipeline, readers
        from trainer.data.source import Source, View
        from trainer.errors import UserError
        shards = readers.read_npy([{str(tmp_path / 'x0.npy')!r}], DataConfig(format="npy"),
                                  images.ImageSpec())
        view = View(Source(shards))
        try:
            pipeline.make_dataset(view, shards[0].labels, pipeline.PipelineOptions(batch_size=1))
        except UserError as exc:
            print(exc)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.stdout.strip().startswith(
        "a read window of 100 samples of shape (4096, 4096, 1) in float32 needs 6710886400 "
        "bytes (6.25 GiB), "), proc.stdout + proc.stderr[-2000:]
    assert "(data.shuffle_block=1024, train.batch_size=1), expected at most" in proc.stdout

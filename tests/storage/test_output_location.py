"""The output location, whatever it is: a folder that cannot be written is refused before any
data is read (one `error:` line naming the folder and the uid), a disk that fills up mid-run is
one error line that says truly what is left (a new run leaves nothing; a resumed one keeps what
was there), and published files get the mode the umask gives.

Read-only and full disks are small tmpfs mounts (skipped where mounting is not allowed); a
folder owned by another user is tried by a process running as `nobody` (when the tests run as
root, as in a container)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import tempfile

import pytest

from conftest import blob_images, error_line, run_cli, write_npz
from trainer import storage, task
from trainer.errors import UserError
from trainer.runtime.platform import Platform

# Data that does not exist: the folder's check must come first, so no data error can show.
NO_DATA = ["data.format=npz", "data.train=/nonexistent/never-read/*.npz", "model.name=tiny_cnn",
           "train.epochs=1", "name=run"]
NOBODY = 65534


@contextlib.contextmanager
def tmpfs(path, options: str):
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _refused(capsys, output_dir) -> str:
    code = task.train(None, NO_DATA, str(output_dir))
    captured = capsys.readouterr()
    assert code == 2, captured
    line = error_line(captured.err)
    assert "output folder not writable" in line and f"uid {os.getuid()}" in line, line
    assert "never-read" not in line
    return line


def test_a_file_as_the_output_folder(capsys, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    line = _refused(capsys, tmp_path / "out")
    assert f"{tmp_path / 'out'}" in line and "Not a directory" in line
    (tmp_path / "run").mkdir()  # the run's own folder a file inside a good output folder
    (tmp_path / "run" / "run").write_text("")
    assert f"{tmp_path / 'run' / 'run'}" in _refused(capsys, tmp_path / "run")


def test_a_folder_under_a_file_and_one_that_cannot_be_made(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    assert f"{tmp_path / 'f' / 'sub'}" in _refused(capsys, tmp_path / "f" / "sub")
    assert "/proc/trainer-out/x" in _refused(capsys, "/proc/trainer-out/x")
    assert "/dev/null/x" in _refused(capsys, "/dev/null/x")


def test_a_read_only_disk(capsys, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        assert "Read-only file system" in _refused(capsys, os.path.join(ro, "a", "b"))


def test_a_disk_full_from_the_start(capsys, tmp_path):
    with tmpfs(tmp_path / "full", "size=64k") as full:
        with contextlib.suppress(OSError), open(os.path.join(full, "filler"), "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        before = sorted(os.listdir(full))
        assert "No space left on device" in _refused(capsys, os.path.join(full, "runs"))
        assert sorted(os.listdir(full)) == before  # neither the probe nor its folders remain


NO_DATA_FLAGS = ["--set", "data.format=npz", "--set", "data.train=/nonexistent/never-read/*.npz"]


@pytest.mark.parametrize("tool, args", [
    ("trainer.tune", ["--space", "{space}", "--output_dir", "{out}", *NO_DATA_FLAGS]),
    ("trainer.datacheck", ["--out", "{out}", *NO_DATA_FLAGS]),
    ("trainer.compare", ["{run}", "--out", "{out}"]),
])
def test_every_tool_refuses_an_output_folder_that_is_a_file(tmp_path, tool, args):
    (tmp_path / "out").write_text("")
    (tmp_path / "space.yaml").write_text("metric: val_accuracy\nparams:\n"
                                         "  train.learning_rate: [0.001, 0.01]\n")
    names = {"space": tmp_path / "space.yaml", "out": tmp_path / "out", "run": tmp_path}
    proc = run_cli(*[a.format(**names) for a in args], module=tool)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc.stderr)
    assert "output folder not writable (Not a directory" in line and str(tmp_path / "out") in line


def test_the_probe_leaves_nothing_behind_and_keeps_what_was_there(tmp_path):
    storage.check_writable(str(tmp_path / "a" / "b" / "c"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()
    storage.check_writable(str(tmp_path / "kept"))
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_a_root_owned_folder_and_a_user_who_is_not_root():
    """The container case: a host folder owned by root, mounted for a user who is not root
    (here this process, acting as `nobody` for the check alone)."""
    shared = tempfile.mkdtemp(prefix="trainer-root-owned-")
    try:
        os.chmod(shared, 0o755)
        os.seteuid(NOBODY)
        try:
            with pytest.raises(UserError) as refused:
                storage.check_writable(os.path.join(shared, "runs", "run"))
        finally:
            os.seteuid(0)
        line = str(refused.value)
        assert f"{shared}/runs/run" in line and f"uid {NOBODY}" in line, line
        assert "Permission denied" in line and "--user $(id -u)" in line
        assert os.listdir(shared) == []
    finally:
        os.rmdir(shared)


def test_output_dir_on_the_command_line_wins_over_the_platforms_folder(capsys, tmp_path):
    """`task.train` hands the flag to the one rule (`rundir.locate`): with both an AIP_MODEL_DIR
    and --output_dir, the run goes to the flag's folder, else to the platform's; each is seen
    here by the folder the refusal names (both cannot be written, so nothing trains)."""
    (tmp_path / "flag").write_text("a file, not a folder")
    vertex = Platform(model_dir=str(tmp_path / "flag" / "aip-model"))  # as AIP_MODEL_DIR sets
    for flag, refused in ((str(tmp_path / "flag"), tmp_path / "flag" / "run"),
                          (None, tmp_path / "flag" / "aip-model")):
        code = task.train(None, NO_DATA, flag, platform=vertex)
        captured = capsys.readouterr()
        assert code == 2, captured
        line = error_line(captured.err)
        assert line.startswith("error: output folder not writable") and f", {refused}," in line


def test_a_bucket_is_probed_with_an_object_it_then_deletes(gcs):
    storage.check_writable(gcs.url("probe", "runs"))
    assert not list(gcs.client().list_blobs(gcs.bucket, prefix="probe/"))
    with pytest.raises(UserError, match="no-such-bucket-for-runs"):
        storage.check_writable("gs://no-such-bucket-for-runs/runs")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_published_files_have_the_mode_the_umask_gives(tmp_path, umask):
    (tmp_path / "staged").write_bytes(b"x")
    previous = os.umask(umask)
    try:
        storage.put_file(str(tmp_path / "staged"), str(tmp_path / "run" / "model.h5"))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "run" / "model.h5").st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("exc, why", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/r/model.h5"),
     "No space left on device: /r/model.h5"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "Disk quota exceeded"),
    (OSError(errno.EFBIG, os.strerror(errno.EFBIG)), "File too large"),
    (RuntimeError("CreateSummaryFileWriter /r/tb/events; No space left on device"),
     "No space left on device"),
    (OSError(errno.EACCES, "Permission denied"), None),
    (ValueError("bad shape"), None),
])
def test_what_counts_as_a_full_disk(exc, why):
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = exc
    assert storage.out_of_space(exc) == why and storage.out_of_space(wrapped) == why


def test_a_disk_that_fills_up_mid_run_is_one_line_and_leaves_nothing_of_a_new_run(tmp_path):
    """The probe's few kilobytes fit; TensorBoard's event files and the checkpoints do not."""
    x, label, _ = blob_images(80)
    path = write_npz(tmp_path / "d", "a.npz", x, label)
    with tmpfs(tmp_path / "small", "size=64k") as small:
        proc = run_cli("--set", "data.format=npz", "--set", f"data.train={path}",
                       "--set", "model.name=tiny_cnn", "--set", "train.epochs=1",
                       "--set", "name=run", "--output_dir", small)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = error_line(proc.stderr)
        assert "out of disk space while writing the run (No space left on device" in line
        assert f"{small}/run" in line and line.endswith(
            "(the new run's folder was removed: free some space and run it again)")
        assert os.listdir(small) == []  # nothing of the run, no .partial- copy either


def _fill(disk: str, leave_kib: int) -> None:
    """Fill the file system at `disk` until `leave_kib` KiB are free."""
    stat = os.statvfs(disk)
    with open(os.path.join(disk, f"filler-{len(os.listdir(disk))}"), "wb") as f:
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_kib * 1024, 0))


def _train(capsys, out, *overrides) -> tuple[int, str]:
    code = task.train(None, ["name=full", "model.name=tiny_cnn", "data.samples_per_class=20",
                             "output.saved_model=false", "output.report=false", *overrides],
                      str(out))
    return code, capsys.readouterr().err


def _files(folder) -> dict:
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}


def _whole_records(path) -> bool:
    """Whether an event file (TFRecord framing) ends exactly at the end of a record."""
    data, at = open(path, "rb").read(), 0
    while at + 12 <= len(data):
        at += 16 + int.from_bytes(data[at:at + 8], "little")
    return at == len(data)


@pytest.mark.parametrize("leave_kib", [20, 60, 200])
def test_a_new_run_on_a_full_disk_leaves_nothing(tmp_path, capsys, leave_kib):
    """The disk fills at the first events, mid-checkpoint, or as the first checkpoint is
    published: the message names the file on that disk, and the run's folders are gone, even
    the output folders it made."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        _fill(disk, leave_kib)
        code, err = _train(capsys, os.path.join(disk, "runs", "here"), "train.epochs=2")
        assert code == 2
        line = error_line(err.splitlines()[-1])
        assert line.startswith("error: out of disk space while writing the run (")
        assert line.endswith("(the new run's folder was removed: free some space and run it "
                             "again)")
        named = line.split("(", 1)[1].split(")", 1)[0]  # the file being written, when named
        if ": /" in named:  # the one on the full disk, not the local copy it came from
            assert named.split(": ", 1)[1].startswith(f"{disk}/runs/"), line
        assert os.listdir(disk) == ["filler-0"]


def test_a_resumed_run_on_a_full_disk_keeps_what_was_there(tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        run = os.path.join(disk, "runs", "full")
        code, err = _train(capsys, os.path.join(disk, "runs"), "train.epochs=1")
        assert code == 0, err[-2000:]
        before = _files(run)
        _fill(disk, 150)
        code, err = _train(capsys, os.path.join(disk, "runs"), "train.epochs=4")
        assert code == 2
        line = error_line(err.splitlines()[-1])
        with open(os.path.join(run, "checkpoints", "state.json")) as f:
            epoch = json.load(f)["epoch"]
        assert line.endswith(f"(its last checkpoint, epoch {epoch}, is intact and the "
                             "TensorBoard logs end at their last whole record: free some space "
                             "and re-run the same name to resume from it)")
        after = _files(run)
        if epoch == 1:  # nothing of the first run was touched
            assert {k: after.get(k) for k in before} == before
        events = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(run, "tensorboard"))
                  for n in names]
        assert events and all(_whole_records(p) for p in events)


def test_a_new_run_that_diverges_in_its_first_epoch_leaves_nothing(capsys, tmp_path):
    code, err = _train(capsys, tmp_path / "runs", "train.epochs=2", "train.learning_rate=1e308")
    assert code == 2
    assert error_line(err.splitlines()[-1]).startswith("error: loss became nan in epoch 1")
    assert not (tmp_path / "runs").exists()

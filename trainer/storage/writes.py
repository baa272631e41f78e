"""Writes: never streamed into their final name. A file is finished locally, then copied whole
(`put_file`), so an interruption leaves either the old object or the new one, never a truncated
one. `unwritable` is the one write probe: a run's folders are probed with it before any data is
read (`check_writable`), and predict's `--csv`/`--mat`/`--out` before the model is loaded."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from typing import Optional

from trainer.errors import UserError
from trainer.storage import gcs
from trainer.storage.faults import FULL_ERRNOS, unavailable
from trainer.storage.guards import check_output
from trainer.storage.paths import call_options, filesystem, is_local, join, normalize


def check_writable(folder: str) -> None:
    """Refuse, as one error, an output folder that cannot be written (`unwritable` says why)."""
    folder = normalize(folder)
    reason = unwritable(folder)
    if reason is None:
        return
    if is_local(folder):
        raise UserError(
            f"output folder not writable ({reason}), {_local_folder(folder)}, expected a folder "
            f"that uid {os.geteuid()} can create and write (for a host folder mounted into the "
            "container, run it with --user $(id -u) or chown the folder to that uid)")
    raise UserError(f"output location not writable ({reason}), {folder}, expected a bucket that "
                    "exists and that this account may write")


def unwritable(folder: str) -> Optional[str]:
    """Why nothing can be written in `folder`, or None when it can: a file, a place where no
    folder can be made, a read-only or full disk, a folder owned by another uid (a mounted host
    folder in a container), a bucket that refuses this account. The one write probe: writes a
    small file (an object on a bucket) and deletes it; leaves nothing behind, not even the
    folders made for the probe."""
    folder = normalize(folder)
    if is_local(folder):
        return _local_problem(_local_folder(folder))
    probe = join(folder, f".write-probe-{os.getpid()}-{os.urandom(4).hex()}")
    fs, p = filesystem(probe)
    try:
        with unavailable("writing a probe object to", folder):
            fs.pipe_file(p, b"probe", **call_options(fs))
            fs.rm_file(p, **call_options(fs))
    except (FileNotFoundError, PermissionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _local_folder(folder: str) -> str:
    return os.path.abspath(folder.removeprefix("file://"))


_PROBE_BYTES = 4096  # a disk too full for one block refuses it


def _local_problem(path: str) -> Optional[str]:
    made: list[str] = []
    try:
        missing, parent = [], path
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(missing):
            os.mkdir(folder)
            made.append(folder)
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    return None


def _umask() -> int:
    """This process's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def put_file(local_path: str, dest: str) -> None:
    """Copy a finished local file to `dest` whole; readers never see a partial file. A local
    `dest` must be a regular file or absent (`check_output`)."""
    dest = normalize(dest)
    if is_local(dest):
        dest = dest.removeprefix("file://")
        check_output(dest)
        if os.path.abspath(local_path) == os.path.abspath(dest):
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"output folder is not a folder, {os.path.dirname(dest)}, expected a "
                            "folder, or a name where one can be made") from None
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(os.path.abspath(dest)))
        os.close(fd)
        try:
            # mkstemp makes it private (0600); a run folder may be shared, as the umask says
            os.chmod(tmp, 0o666 & ~_umask())
            shutil.copyfile(local_path, tmp)
            check_output(dest)  # again, just before: nothing swapped in meanwhile
            os.replace(tmp, dest)
        except BaseException as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:  # copyfile names the source
                raise OSError(exc.errno, exc.strerror, dest) from None
            raise
        return
    fs, p = filesystem(dest)
    with unavailable("uploading to", dest):  # one object, committed whole or not at all
        gcs.upload(fs, local_path, p, **call_options(fs))


def remove(path: str) -> None:
    """Delete a file; a file that is already gone is fine."""
    fs, p = filesystem(path)
    try:
        with unavailable("deleting", path):
            fs.rm_file(p, **call_options(fs))
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it; a folder that is already gone is fine."""
    fs, p = filesystem(path)
    try:
        with unavailable("deleting", path):
            fs.rm(p, recursive=True, **call_options(fs))
    except FileNotFoundError:
        pass

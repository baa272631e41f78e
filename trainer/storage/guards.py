"""What the storage layer refuses before a byte moves: special files (devices, pipes, sockets,
also behind links) read or written over, links that lead out of a data folder, and files read
whole that are larger than their bound or than the memory there is."""

from __future__ import annotations

import os
import stat

from trainer.errors import UserError
from trainer.runtime import memory
from trainer.storage.paths import is_local, os_path


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def refuse_special(mode: int, path: str) -> None:
    if stat.S_ISDIR(mode):
        raise UserError(f"path is a directory, {path}, expected a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"path is {_kind(mode)}, {path}, expected a regular file (links to "
                        "devices, pipes and sockets are never read)")


def open_regular(path: str) -> int:
    """A descriptor of the local regular file `path` (links followed). Anything else (`/dev/zero`
    behind a link, a named pipe called `x.png`) is refused before a byte is read: checked by
    name first, so a device is never opened, then again on the descriptor, opened non-blocking
    so that a pipe swapped in meanwhile cannot stall the open."""
    local = os_path(path)
    try:
        refuse_special(os.stat(local).st_mode, path)
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"file not found, {path}, expected an existing file") from None
    except PermissionError:
        raise UserError(f"permission denied, {path}, expected a file this user may read") from None
    try:
        refuse_special(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(path: str) -> None:
    """Refuse a local path that is not a regular file (for readers that open files by name)."""
    if is_local(path):
        os.close(open_regular(path))


def within(path: str, root: str) -> bool:
    """Whether the local `path`, its links followed, lies inside the folder `root` (its links
    followed too). Bucket paths have no links and always do."""
    if not is_local(path):
        return True
    real, top = os.path.realpath(os_path(path)), os.path.realpath(os_path(root))
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def confine(path: str, root: str, context: str = "") -> None:
    """Refuse a local `path` that a link leads out of the data folder `root`."""
    if not within(path, root):
        raise UserError(f"link leads out of the data folder, {path} -> "
                        f"{os.path.realpath(os_path(path))}, expected files and links inside "
                        f"{os.path.realpath(os_path(root))}{context}")


# Files read whole are refused above these sizes (and above the memory there is), by their size
# before a byte is read: a damaged or hostile file cannot take the machine's memory.
READ_LIMIT = 1 << 30  # an image, a single-array .npy, a .mat of labels
TEXT_LIMIT = 256 << 20  # a CSV manifest, a JSON or YAML file
CONFIG_LIMIT = 16 << 20  # a config: a few kilobytes in practice


def size_text(nbytes: int) -> str:
    if nbytes >= 2**30:
        return f"{nbytes} bytes ({nbytes / 2**30:.3g} GiB)"
    return f"{nbytes} bytes ({nbytes / 2**20:.3g} MiB)" if nbytes >= 2**20 else f"{nbytes} bytes"


def read_bound(limit: int, what: str) -> tuple[int, str]:
    """The bound on a file read whole: `limit`, or the memory there is where that is less."""
    have = memory.available()
    return (limit, what) if limit <= have else (have, "the memory available")


def check_size(path: str, size: int, limit: int, what: str = "a file read whole") -> None:
    """Refuse a file of `size` bytes over `limit`, or over the memory this process may use."""
    bound, why = read_bound(limit, what)
    if size > bound:
        raise UserError(f"file too large ({size_text(size)}), {path}, expected at most "
                        f"{size_text(bound)} for {why}")


def check_output(dest: str, what: str = "") -> None:
    """Refuse a local output name that holds anything but a regular file (links followed): a
    device, a named pipe, a socket, a folder. Publishing renames a finished file onto the name,
    which would replace `/dev/full` itself with a regular file, or swallow the output in a
    pipe. An absent name (or a link to nothing) is fine. `what` names it (`--csv=...`)."""
    if not is_local(dest):
        return
    try:
        mode = os.stat(os_path(dest)).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise UserError(f"cannot look at the output ({exc.strerror}), {what or dest}, expected a "
                        "file name in a folder this process can write to") from None
    if stat.S_ISREG(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else _kind(mode)
    raise UserError(f"output is {kind}, {what or dest}, expected a regular file or a new file "
                    "name (devices, pipes, sockets and folders are never written over)")

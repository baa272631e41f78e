"""The one file layer: local paths, `gs://` URLs and Vertex AI's `/gcs/` mount through fsspec.

Nothing else in the package touches fsspec or checks for `gs://`. Writes are never streamed into
their final name: a file is finished locally, then copied whole (`put_file`), so an interruption
leaves either the old object or the new one, never a truncated one.

Transient faults of a bucket (connection refused or reset, timeouts, 429 and 5xx answers) are
retried by the storage library itself: every gcsfs request goes through its `retry_request`
(6 tries, backoff 1, 2, 4, 8, 16 s plus jitter, about 35 s in all). `TRAINER_STORAGE_RETRY_S`
caps one call, retries included, through fsspec's own per-call `timeout`. When the retries run out
the library's last exception becomes one `StorageUnavailable` naming the operation and the object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
import sys
import tempfile
from typing import Callable, Iterable, Optional, Union

import fsspec
import numpy as np

from trainer.runtime import secrets
from trainer.storage import options
from trainer.errors import StorageUnavailable, UserError

GCS_MOUNT = "/gcs/"
# gcsfs logs a traceback when its retries run out; `_unavailable` turns that same exception into
# the one error line, so for every tool the traceback would only be noise on stderr.
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def normalize(path: str) -> str:
    """Map `/gcs/BUCKET/...` to `gs://BUCKET/...` where the Cloud Storage FUSE mount is absent."""
    path = os.fspath(path)
    if path.startswith(GCS_MOUNT) and not os.path.isdir(GCS_MOUNT):
        return "gs://" + path[len(GCS_MOUNT):]
    return path


def is_local(path: str) -> bool:
    return "://" not in normalize(path) or normalize(path).startswith("file://")


def _fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    path = normalize(path)
    secrets.remember_url(path)  # a library may quote a piece of its password without the URL
    protocol = path.split("://", 1)[0] if "://" in path else "file"
    try:
        return fsspec.core.url_to_fs(path, **options.storage_options(protocol))
    except Exception as exc:  # noqa: BLE001 - narrowed below; google.auth is imported only here
        from google.auth.exceptions import GoogleAuthError

        if not isinstance(exc, (ValueError, OSError, KeyError, GoogleAuthError)):
            raise
        # gcsfs checks the credentials when the file system is made (a raw token against
        # Google's token-info service, quoting it in the URL it fails to reach).
        reason = secrets.redact_text(" ".join(f"{type(exc).__name__}: {exc}".split()))
        raise UserError(f"cannot connect to {protocol}:// storage ({reason}), "
                        f"{secrets.redact_text(path)}, expected credentials it accepts "
                        "(FSSPEC_GS_TOKEN, GOOGLE_APPLICATION_CREDENTIALS, the VM's service "
                        "account) and a reachable service") from None


def _limit(fs: fsspec.AbstractFileSystem) -> dict:
    """fsspec's per-call `timeout` for remote (async) file systems when a budget is set: the call,
    the library's retries included, is cancelled when it runs out."""
    budget = options.storage_retry_budget()
    return {"timeout": budget} if budget and getattr(fs, "async_impl", False) else {}


def _transient(exc: BaseException) -> bool:
    """What the storage library itself retries (its own `is_retriable`), or a spent budget."""
    from fsspec.exceptions import FSTimeoutError

    if isinstance(exc, FSTimeoutError):
        return True
    if "gcsfs" not in sys.modules:  # imported lazily: it reads its settings when first imported
        return False
    from gcsfs.retry import is_retriable

    return is_retriable(exc)


# What the callers handle themselves: a missing file, a folder where a file was expected.
_ANSWERS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _refused(exc: BaseException, path: str) -> bool:
    """A remote store's lasting refusal (no such host, a URL it cannot parse, access denied):
    bad input, not a bug, and not worth retrying."""
    if is_local(path) or isinstance(exc, _ANSWERS) or _transient(exc):
        return False
    if isinstance(exc, (OSError, ValueError)):
        return True
    client_error = getattr(sys.modules.get("aiohttp"), "ClientError", ())
    http_error = getattr(sys.modules.get("gcsfs.retry"), "HttpError", ())
    return isinstance(exc, (client_error, http_error))


@contextlib.contextmanager
def _unavailable(operation: str, path: str):
    """Turn the library's final exception, once its retries are spent, into one clear error."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only storage faults are translated, others re-raised
        if _refused(exc, path):
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            raise UserError(f"storage refused it, {operation} {path} failed ({why}), expected a "
                            "reachable location, a valid URL and credentials it accepts") from None
        if not _transient(exc):
            raise
        if str(exc):
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        else:  # the budget ran out first
            why = (f"no answer within {options.STORAGE_RETRY_ENV}="
                   f"{options.storage_retry_budget():g} s")
        raise StorageUnavailable(
            f"storage did not answer, {operation} {path} failed after retrying ({why}), expected "
            "the bucket to be reachable (what was already written is intact: re-run the same "
            "name to resume)") from None


@contextlib.contextmanager
def _fetching(operation: str, path: str):
    """A read of an existing file: storage faults as in `_unavailable`, a missing file as one
    clear error."""
    try:
        with _unavailable(operation, path):
            yield
    except FileNotFoundError:
        raise UserError(f"file not found, {path}, expected an existing file") from None


def join(base: str, *parts: str) -> str:
    base = normalize(base)
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def exists(path: str) -> bool:
    fs, p = _fs(path)
    with _unavailable("looking up", path):
        return fs.exists(p, **_limit(fs))


def _local(path: str) -> str:
    return normalize(path).removeprefix("file://")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_special(mode: int, path: str) -> None:
    if stat.S_ISDIR(mode):
        raise UserError(f"path is a directory, {path}, expected a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"path is {_kind(mode)}, {path}, expected a regular file (links to "
                        "devices, pipes and sockets are never read)")


def _open_regular(path: str) -> int:
    """A descriptor of the local regular file `path` (links followed). Anything else (`/dev/zero`
    behind a link, a named pipe called `x.png`) is refused before a byte is read: checked by
    name first, so a device is never opened, then again on the descriptor, opened non-blocking
    so that a pipe swapped in meanwhile cannot stall the open."""
    local = _local(path)
    try:
        _refuse_special(os.stat(local).st_mode, path)
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"file not found, {path}, expected an existing file") from None
    except PermissionError:
        raise UserError(f"permission denied, {path}, expected a file this user may read") from None
    try:
        _refuse_special(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(path: str) -> None:
    """Refuse a local path that is not a regular file (for readers that open files by name)."""
    if is_local(path):
        os.close(_open_regular(path))


def within(path: str, root: str) -> bool:
    """Whether the local `path`, its links followed, lies inside the folder `root` (its links
    followed too). Bucket paths have no links and always do."""
    if not is_local(path):
        return True
    real, top = os.path.realpath(_local(path)), os.path.realpath(_local(root))
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def confine(path: str, root: str, context: str = "") -> None:
    """Refuse a local `path` that a link leads out of the data folder `root`."""
    if not within(path, root):
        raise UserError(f"link leads out of the data folder, {path} -> "
                        f"{os.path.realpath(_local(path))}, expected files and links inside "
                        f"{os.path.realpath(_local(root))}{context}")


# Files read whole are refused above these sizes (and above the memory there is), by their size
# before a byte is read: a damaged or hostile file cannot take the machine's memory.
READ_LIMIT = 1 << 30  # an image, a single-array .npy, a .mat of labels
TEXT_LIMIT = 256 << 20  # a CSV manifest, a JSON or YAML file
CONFIG_LIMIT = 16 << 20  # a config: a few kilobytes in practice


def _size_text(nbytes: int) -> str:
    if nbytes >= 2**30:
        return f"{nbytes} bytes ({nbytes / 2**30:.3g} GiB)"
    return f"{nbytes} bytes ({nbytes / 2**20:.3g} MiB)" if nbytes >= 2**20 else f"{nbytes} bytes"


def _bound(limit: int, what: str) -> tuple[int, str]:
    """The bound on a file read whole: `limit`, or the memory there is where that is less."""
    from trainer.runtime import memory

    have = memory.available()
    return (limit, what) if limit <= have else (have, "the memory available")


def check_size(path: str, size: int, limit: int, what: str = "a file read whole") -> None:
    """Refuse a file of `size` bytes over `limit`, or over the memory this process may use."""
    bound, why = _bound(limit, what)
    if size > bound:
        raise UserError(f"file too large ({_size_text(size)}), {path}, expected at most "
                        f"{_size_text(bound)} for {why}")


def read_bytes(path: str, limit: int = READ_LIMIT, what: str = "a file read whole") -> bytes:
    """A whole file, refused when over `limit` (or the memory there is): a local file by its
    size before a byte is read, a remote one after at most one byte more than the bound."""
    if is_local(path):
        with os.fdopen(_open_regular(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            check_size(path, size, limit, what)
            data = f.read(size)  # no more than was checked, should the file grow meanwhile
            if f.read(1):
                raise UserError(f"file grew while it was read, {path}, expected a finished file")
            return data
    fs, p = _fs(path)
    bound, why = _bound(limit, what)
    try:
        with _fetching("reading", path):
            try:
                data = fs.cat_file(p, start=0, end=bound + 1, **_limit(fs))
            except Exception as exc:  # noqa: BLE001 - one answer is handled, others re-raised
                if getattr(exc, "code", None) != 416:
                    raise
                data = b""  # an empty object has no byte 0 to range over (HTTP 416)
    except IsADirectoryError:
        raise UserError(f"path is a directory, {path}, expected a file") from None
    if len(data) > bound:
        raise UserError(f"file too large (more than {_size_text(bound)}), {path}, expected at "
                        f"most {_size_text(bound)} for {why}")
    return data


def read_text(path: str, limit: int = TEXT_LIMIT, what: str = "a text file") -> str:
    try:
        return read_bytes(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"file is not UTF-8 text, {path}, expected a text file") from None


def open_read(path: str):
    """A readable binary file object; local files are opened directly (no copy), and only
    when they are regular files."""
    if is_local(path):
        return os.fdopen(_open_regular(path), "rb")
    fs, p = _fs(path)
    with _fetching("opening", path):
        f = fs.open(p, "rb")
    return f if is_local(path) else _RemoteFile(f, path)


class _RemoteFile:
    """A remote file whose reads end in `StorageUnavailable` once the library's retries are spent
    (the readers that hold files open, h5py and PyAV among them, see only a file object)."""

    def __init__(self, f, path: str):
        self._f, self._path = f, path

    def read(self, *args):
        with _unavailable("reading", self._path):
            return self._f.read(*args)

    def readinto(self, buffer):
        with _unavailable("reading", self._path):
            return self._f.readinto(buffer)

    def seek(self, *args):
        with _unavailable("reading", self._path):
            return self._f.seek(*args)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._f.close()


_IOV_MAX = 1024  # iovecs per preadv call (Linux's IOV_MAX; os.sysconf may say more, never less)
_GAP_READ = 1 << 16  # gaps up to this many bytes are read and dropped; longer ones are skipped


def _libc_preadv():
    """libc's preadv through ctypes (it releases the GIL), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.preadv
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    fn.restype = ctypes.c_ssize_t
    return fn


_PREADV = _libc_preadv() if sys.platform.startswith("linux") else None


def read_rows_into(path: str, offsets: np.ndarray, size: int, dest: np.ndarray,
                   dest_offsets: np.ndarray) -> int:
    """Copy the `size` bytes at each file offset in `offsets` (ascending) into the C-contiguous
    array `dest`, at byte `dest_offsets[i]`; returns the rows copied, fewer only when the file
    ends early.

    The one copy out of the file. A local file is read by `preadv` straight into `dest`, up to
    512 rows a system call, its list of buffers built by NumPy (no Python object per row);
    short gaps between rows are read into a scratch buffer, long ones skipped. A remote file is
    read in spans through fsspec and its rows copied out.
    """
    offsets = np.asarray(offsets, np.int64)
    dest_offsets = np.asarray(dest_offsets, np.int64)
    if not len(offsets):
        return 0
    if not dest.flags.c_contiguous or dest_offsets.min() < 0 or dest_offsets.max() + size > dest.nbytes:
        raise ValueError("rows do not fit in the destination")
    gaps = np.zeros(len(offsets), np.int64)
    gaps[1:] = offsets[1:] - offsets[:-1] - size
    if np.any(gaps < 0):
        raise ValueError("rows overlap or are not in ascending order")
    # A new call (or span) where a gap is too long to read through, and locally every so many
    # rows (a preadv takes so many buffers); a remote span is one request whatever its rows, as
    # each request waits out the bucket's latency (docs/performance.md, remote data).
    first = (gaps > _GAP_READ) | (np.arange(len(offsets)) % (_IOV_MAX // 2) == 0
                                  if is_local(path) else np.arange(len(offsets)) == 0)
    gaps[first] = 0  # the first row of a call is sought, not read up to
    starts = [*np.flatnonzero(first).tolist(), len(offsets)]
    if not is_local(path):
        return _copy_rows(path, starts, offsets.tolist(), size, memoryview(dest).cast("B"),
                          dest_offsets.tolist())
    fd = _open_regular(path)
    try:
        if _PREADV is None:
            return _preadv_rows(fd, starts, offsets, gaps, size, dest, dest_offsets)
        return _preadv_iovecs(fd, starts, offsets, gaps, size, dest, dest_offsets)
    finally:
        os.close(fd)


def _preadv_iovecs(fd, starts, offsets, gaps, size, dest, dest_offsets) -> int:
    """preadv calls whose iovec arrays NumPy builds: (address, length) per row and per gap."""
    scratch = np.empty(max(int(gaps.max()), 1), np.uint8)
    gapped = gaps > 0
    at = np.arange(len(offsets)) + np.cumsum(gapped)  # each row's iovec; a gap's comes before it
    iov = np.empty((len(offsets) + int(gapped.sum()), 2), np.uint64)
    iov[at, 0] = dest.ctypes.data + dest_offsets
    iov[at, 1] = size
    iov[at[gapped] - 1, 0] = scratch.ctypes.data
    iov[at[gapped] - 1, 1] = gaps[gapped]
    done = 0
    for a, b in zip(starts[:-1], starts[1:]):
        first, last = int(at[a]), (int(at[b]) if b < len(at) else len(iov))
        want = int(offsets[b - 1] + size - offsets[a])
        got = _PREADV(fd, iov[first:].ctypes.data, last - first, int(offsets[a]))
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        if got < want:  # the file ended, or (rarely) the kernel stopped early: row by row
            return done + _row_by_row(fd, range(a, b), offsets, size, dest, dest_offsets)
        done += b - a
    return done


def _row_by_row(fd, rows, offsets, size, dest, dest_offsets) -> int:
    """Rows read one at a time until one comes short (the end of the file)."""
    out = memoryview(dest).cast("B")
    for n, i in enumerate(rows):
        d = int(dest_offsets[i])
        if os.preadv(fd, [out[d:d + size]], int(offsets[i])) < size:
            return n
    return len(rows)


def _preadv_rows(fd, starts, offsets, gaps, size, dest, dest_offsets) -> int:
    """The same with `os.preadv` (a memoryview per row), where libc's is not at hand."""
    out = memoryview(dest).cast("B")
    scratch = memoryview(bytearray(max(int(gaps.max()), 1)))
    offs, dst, gap = offsets.tolist(), dest_offsets.tolist(), gaps.tolist()
    done = 0
    for a, b in zip(starts[:-1], starts[1:]):
        iov = []
        for i in range(a, b):
            if gap[i]:
                iov.append(scratch[:gap[i]])
            iov.append(out[dst[i]:dst[i] + size])
        if os.preadv(fd, iov, offs[a]) < offs[b - 1] + size - offs[a]:
            return done + _row_by_row(fd, range(a, b), offsets, size, dest, dest_offsets)
        done += b - a
    return done


def _copy_rows(path, starts, offsets, size, dest, dest_offsets) -> int:
    """Each span one ranged read (one request on a bucket), its rows copied out."""
    fs, p = _fs(path)
    done = 0
    for a, b in zip(starts[:-1], starts[1:]):
        with _fetching("reading", path):
            span = memoryview(fs.cat_file(p, start=offsets[a], end=offsets[b - 1] + size,
                                          **_limit(fs)))
        for i in range(a, b):
            at = offsets[i] - offsets[a]
            if at + size > len(span):
                return done
            dest[dest_offsets[i]:dest_offsets[i] + size] = span[at:at + size]
            done += 1
    return done


# Names of files, not folders: a folder named so is a mistake (refused, naming it, rather than
# searched, which would end in a message about whatever file lies inside).
FILE_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".tfrecord", ".tfrecords", ".csv", ".png", ".jpg",
                 ".jpeg", ".tif", ".tiff", ".mp4", ".avi", ".mat", ".yaml", ".yml", ".json")


def expand(patterns: Union[str, Iterable[str]], what: str,
           skip: Optional[Callable[[str], bool]] = None) -> list[str]:
    """Resolve paths and globs to a sorted list of files; each pattern must match something.

    `skip(relative)` drops a file found by searching a folder or glob, given its `/`-separated
    path below the folder searched (a file named on its own is always kept)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        fs, p = _fs(pattern)
        limit = _limit(fs)
        with _unavailable("listing", pattern):
            if any(ch in p for ch in "*?["):
                root = _glob_root(p)
                matches = sorted(m for m in fs.glob(p, **limit) if fs.isfile(m, **limit))
            elif fs.isdir(p, **limit):
                if p.rstrip("/").lower().endswith(FILE_SUFFIXES):  # not a folder of such files
                    suffix = os.path.splitext(p.rstrip("/"))[1]
                    raise UserError(f"path is a directory, {what}={pattern}, expected a {suffix} "
                                    f"file (a folder of files is named without {suffix})")
                root = p
                matches = _walk(p) if is_local(pattern) else sorted(fs.find(p, **limit))
            elif fs.exists(p, **limit):
                root, matches = None, [p]  # named by the user: whatever it links to
            else:
                root, matches = None, []
        skipped = 0
        if root is not None and skip is not None:
            kept = [m for m in matches if not skip(_below(m, root))]
            matches, skipped = kept, len(matches) - len(kept)
        if not matches:
            also = f" ({skipped} system or hidden files skipped)" if skipped else ""
            raise UserError(f"no files found{also}, {what}={pattern}, expected an existing path "
                            "or glob")
        for m in matches if root is not None else ():
            confine(m, root, f" ({what}={pattern})")
        found.extend(_unstrip(pattern, m) for m in matches)
    return found


def _below(match: str, root: str) -> str:
    """`match`'s path below the folder `root` it was found in, `/`-separated."""
    if os.path.isabs(match) or os.path.isabs(root):
        return os.path.relpath(os.path.abspath(match), os.path.abspath(root)).replace(os.sep, "/")
    return match[len(root.rstrip("/")) + 1:] if match.startswith(root.rstrip("/") + "/") else match


def _glob_root(pattern: str) -> str:
    """The folder a glob searches: its path up to the first part with a wildcard."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    return "/".join(parts[:fixed]) or "/"


def _walk(top: str) -> list[str]:
    """Every file under the local folder `top`, sorted. Links to folders are followed (each
    real folder once, so a link to an ancestor cannot loop); `expand` then refuses any entry
    whose real path leaves `top`."""
    files: list[str] = []
    seen: set[str] = set()
    pending = [os.path.abspath(top)]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if not within(folder, top):
            files.append(folder)  # a link out of `top`: refused by the caller, by name
            continue
        if real in seen:
            continue
        seen.add(real)
        for entry in os.scandir(folder):
            (pending if entry.is_dir() else files).append(entry.path)
    return sorted(files)


def _unstrip(pattern: str, match: str) -> str:
    """fsspec drops the protocol from matches; put it back so the path opens anywhere."""
    norm = normalize(pattern)
    if "://" in norm and not norm.startswith("file://"):
        return norm.split("://", 1)[0] + "://" + match
    return match


def makedirs(path: str) -> None:
    fs, p = _fs(path)
    with _unavailable("creating", path):
        fs.makedirs(p, exist_ok=True, **_limit(fs))


def check_writable(folder: str) -> None:
    """Refuse, as one error, an output folder that cannot be written: a file, a place where no
    folder can be made, a read-only or full disk, a folder owned by another uid (a mounted host
    folder in a container), a bucket that refuses this account. Probes by writing a small file
    (an object on a bucket) and deleting it; leaves nothing behind, not even the folders made
    for the probe."""
    folder = normalize(folder)
    if is_local(folder):
        _check_local_folder(os.path.abspath(folder.removeprefix("file://")))
        return
    probe = join(folder, f".write-probe-{os.getpid()}-{os.urandom(4).hex()}")
    fs, p = _fs(probe)
    try:
        with _unavailable("writing a probe object to", folder):
            fs.pipe_file(p, b"probe", **_limit(fs))
            fs.rm_file(p, **_limit(fs))
    except (FileNotFoundError, PermissionError) as exc:
        raise UserError(f"output location not writable ({type(exc).__name__}: {exc}), {folder}, "
                        "expected a bucket that exists and that this account may write") from None


_PROBE_BYTES = 4096  # a disk too full for one block refuses it


def _check_local_folder(path: str) -> None:
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
        reason = f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else exc
        raise UserError(
            f"output folder not writable ({reason}), {path}, expected a folder that uid "
            f"{os.geteuid()} can create and write (for a host folder mounted into the container, "
            "run it with --user $(id -u) or chown the folder to that uid)") from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_TEXTS = tuple(os.strerror(e) for e in _FULL_ERRNOS)


def out_of_space(exc: BaseException) -> Optional[str]:
    """Why `exc` (or an exception it came from) is a full disk, quota or file-size limit; None
    when it is not. TensorFlow's own writers (TensorBoard, checkpoints) say so only in their
    message."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return f"{exc.strerror}: {exc.filename}" if exc.filename else os.strerror(exc.errno)
        found = [text for text in _FULL_TEXTS if text in str(exc)]
        if found:
            return found[0]
        exc = exc.__cause__ or exc.__context__
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


def check_output(dest: str, what: str = "") -> None:
    """Refuse a local output name that holds anything but a regular file (links followed): a
    device, a named pipe, a socket, a folder. Publishing renames a finished file onto the name,
    which would replace `/dev/full` itself with a regular file, or swallow the output in a
    pipe. An absent name (or a link to nothing) is fine. `what` names it (`--csv=...`)."""
    if not is_local(dest):
        return
    try:
        mode = os.stat(_local(dest)).st_mode
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
            if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:  # copyfile names the source
                raise OSError(exc.errno, exc.strerror, dest) from None
            raise
        return
    fs, p = _fs(dest)
    with _unavailable("uploading to", dest):  # one object, committed whole or not at all
        if "gs" in _protocols(fs) and os.path.getsize(local_path) < _ONE_REQUEST_UPLOAD:
            _gcs_upload_with_md5(fs, local_path, p, **_limit(fs))
        else:
            fs.put_file(local_path, p, **_limit(fs))


# gcsfs sends a smaller file as one multipart request and a larger one as a resumable upload,
# which Cloud Storage completes only when the last byte has come.
_ONE_REQUEST_UPLOAD = 5 * 2**20


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _gcs_upload_with_md5(fs, local_path: str, path: str, timeout=None) -> None:
    """One multipart upload (what gcsfs's `put_file` sends for a small file) whose metadata also
    names the file's MD5. Cloud Storage refuses a body that does not match it, so a transfer cut
    off midway (the job preempted, the network gone) never becomes a shorter object, whatever
    the server makes of a request that ended early."""
    import base64
    import hashlib
    import json
    import secrets as random_tokens
    from urllib.parse import quote

    from fsspec.asyn import sync

    with open(local_path, "rb") as f:
        data = f.read()
    bucket, key, _ = fs.split_path(path)
    boundary = "==" + random_tokens.token_hex(16) + "=="
    metadata = json.dumps({"name": key, "md5Hash": base64.b64encode(hashlib.md5(data).digest())
                           .decode("ascii")})
    body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data + (
        f"\r\n--{boundary}--\r\n").encode()
    sync(fs.loop, fs._call, "POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
         uploadType="multipart", data=body, json_out=True, timeout=timeout,
         headers={"Content-Type": f'multipart/related; boundary="{boundary}"'})
    fs.invalidate_cache(path)


def get_file(src: str, local_path: str, limit: Optional[int] = None, what: str = "") -> None:
    """Download `src` to `local_path`; with `limit`, refused first when larger (`check_size`)."""
    fs, p = _fs(src)
    with _fetching("downloading", src):
        if limit is not None:
            check_size(src, int(fs.size(p, **_limit(fs)) or 0), limit, what)
        fs.get_file(p, local_path, **_limit(fs))


def remove(path: str) -> None:
    """Delete a file; a file that is already gone is fine."""
    fs, p = _fs(path)
    try:
        with _unavailable("deleting", path):
            fs.rm_file(p, **_limit(fs))
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it; a folder that is already gone is fine."""
    fs, p = _fs(path)
    try:
        with _unavailable("deleting", path):
            fs.rm(p, recursive=True, **_limit(fs))
    except FileNotFoundError:
        pass

"""A storage library's exceptions as the package's errors.

Transient faults of a bucket (connection refused or reset, timeouts, 429 and 5xx answers) are
retried by the storage library itself: every gcsfs request goes through its `retry_request`
(6 tries, backoff 1, 2, 4, 8, 16 s plus jitter, about 35 s in all). `TRAINER_STORAGE_RETRY_S`
caps one call, retries included, through fsspec's own per-call `timeout`. When the retries run out
the library's last exception becomes one `StorageUnavailable` naming the operation and the object;
a lasting refusal (no such host, access denied) one `UserError`. `out_of_space` tells a full disk
from other write errors."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Optional

from fsspec.exceptions import FSTimeoutError

from trainer.errors import StorageUnavailable, UserError
from trainer.storage import options
from trainer.storage.paths import is_local


def transient(exc: BaseException) -> bool:
    """What the storage library itself retries (its own `is_retriable`), or a spent budget."""
    if isinstance(exc, FSTimeoutError):
        return True
    # gcsfs is imported by fsspec when a gs:// path is first used, and reads its settings (the
    # emulator's switches, options.py) then: never earlier, and never here for a local fault.
    if "gcsfs" not in sys.modules:
        return False
    from gcsfs.retry import is_retriable

    return is_retriable(exc)


# What the callers handle themselves: a missing file, a folder where a file was expected.
_ANSWERS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)


def refused(exc: BaseException, path: str) -> bool:
    """A remote store's lasting refusal (no such host, a URL it cannot parse, access denied):
    bad input, not a bug, and not worth retrying."""
    if is_local(path) or isinstance(exc, _ANSWERS) or transient(exc):
        return False
    if isinstance(exc, (OSError, ValueError)):
        return True
    client_error = getattr(sys.modules.get("aiohttp"), "ClientError", ())
    http_error = getattr(sys.modules.get("gcsfs.retry"), "HttpError", ())
    return isinstance(exc, (client_error, http_error))


@contextlib.contextmanager
def unavailable(operation: str, path: str):
    """Turn the library's final exception, once its retries are spent, into one clear error."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only storage faults are translated, others re-raised
        if refused(exc, path):
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            raise UserError(f"storage refused it, {operation} {path} failed ({why}), expected a "
                            "reachable location, a valid URL and credentials it accepts") from None
        if not transient(exc):
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
def fetching(operation: str, path: str):
    """A read of an existing file: storage faults as in `unavailable`, a missing file as one
    clear error."""
    try:
        with unavailable(operation, path):
            yield
    except FileNotFoundError:
        raise UserError(f"file not found, {path}, expected an existing file") from None


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_TEXTS = tuple(os.strerror(e) for e in FULL_ERRNOS)


def out_of_space(exc: BaseException) -> Optional[str]:
    """Why `exc` (or an exception it came from) is a full disk, quota or file-size limit; None
    when it is not. TensorFlow's own writers (TensorBoard, checkpoints) say so only in their
    message."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return f"{exc.strerror}: {exc.filename}" if exc.filename else os.strerror(exc.errno)
        found = [text for text in _FULL_TEXTS if text in str(exc)]
        if found:
            return found[0]
        exc = exc.__cause__ or exc.__context__
    return None

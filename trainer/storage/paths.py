"""Where a path lives (a local path, a `gs://` URL, Vertex AI's `/gcs/` mount) and the fsspec
file system that serves it. Nothing else in the package touches fsspec or checks for `gs://`."""

from __future__ import annotations

import logging
import os

import fsspec

from trainer.errors import UserError
from trainer.runtime import secrets
from trainer.storage import options


GCS_MOUNT = "/gcs/"
# gcsfs logs a traceback when its retries run out; `unavailable` turns that same exception into
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


def join(base: str, *parts: str) -> str:
    base = normalize(base)
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def parent(path: str) -> str:
    """The folder `path` lies in (a local one made absolute)."""
    path = normalize(path)
    if is_local(path):
        return os.path.dirname(os.path.abspath(os_path(path)))
    return path.rstrip("/").rsplit("/", 1)[0]


def os_path(path: str) -> str:
    return normalize(path).removeprefix("file://")


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    path = normalize(path)
    secrets.remember_url(path)  # a library may quote a piece of its password without the URL
    protocol = path.split("://", 1)[0] if "://" in path else "file"
    try:
        return fsspec.core.url_to_fs(path, **options.storage_options(protocol))
    except Exception as exc:  # noqa: BLE001 - narrowed below
        # google.auth comes with gcsfs: imported when a connection fails, so that a local
        # path never loads it
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


def call_options(fs: fsspec.AbstractFileSystem) -> dict:
    """fsspec's per-call `timeout` for remote (async) file systems when a budget is set: the call,
    the library's retries included, is cancelled when it runs out."""
    budget = options.storage_retry_budget()
    return {"timeout": budget} if budget and getattr(fs, "async_impl", False) else {}

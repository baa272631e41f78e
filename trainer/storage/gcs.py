"""Uploading a finished file to a remote store, with a small file sent to Cloud Storage as one
request that names its MD5, so that the server refuses a body cut short instead of storing it.

Neither fsspec nor gcsfs offers that through a public call: gcsfs's `consistency="md5"` compares
the checksums only after the object is stored, and its upload metadata takes only the fixed keys
(`fixed_key_metadata`: content encoding, cache control, ...), not `md5Hash`. google-cloud-storage
does send the checksum for the server to check (`Blob.upload_from_filename`: in the metadata of
a multipart upload, in `X-Goog-Hash` on a resumable one's last request), but it would need its
own client and credentials beside gcsfs's, with other exceptions and retries. So the request is
built here on gcsfs's private `_call` and `_location`, and setup.py holds gcsfs to the versions
the tests ran it against (tests/storage/test_gcs.py, on the GCS emulator).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random_tokens
from typing import Optional
from urllib.parse import quote

import fsspec
from fsspec.asyn import sync

# gcsfs sends a smaller file as one multipart request and a larger one as a resumable upload,
# which Cloud Storage completes only when the last byte has come.
_ONE_REQUEST_UPLOAD = 5 * 2**20


def upload(fs: fsspec.AbstractFileSystem, local_path: str, path: str,
           timeout: Optional[float] = None) -> None:
    """Copy the local file to `path` on the remote `fs` as one object, committed whole or not
    at all; `timeout` is fsspec's per-call budget, retries included."""
    if "gs" in _protocols(fs) and os.path.getsize(local_path) < _ONE_REQUEST_UPLOAD:
        _gcs_upload_with_md5(fs, local_path, path, timeout)
    else:
        fs.put_file(local_path, path, **({"timeout": timeout} if timeout else {}))


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _gcs_upload_with_md5(fs, local_path: str, path: str, timeout: Optional[float]) -> None:
    """One multipart upload (what gcsfs's `put_file` sends for a small file) whose metadata also
    names the file's MD5. Cloud Storage refuses a body that does not match it, so a transfer cut
    off midway (the job preempted, the network gone) never becomes a shorter object, whatever
    the server makes of a request that ended early."""
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

"""A real GCS JSON-API server on loopback (`gcp-storage-emulator`), for the bucket tests.

`start()` runs it on a free port in its own process and waits until it answers; it raises with
the server's own output when it does not come up. Clients find it through STORAGE_EMULATOR_HOST
(gcsfs with anonymous tokens, google-cloud-storage with AnonymousCredentials).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Emulator:
    process: subprocess.Popen
    port: int
    bucket: str
    log: IO[str]
    data_dir: Optional[str] = None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    @property
    def host(self) -> str:
        """The value for STORAGE_EMULATOR_HOST."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])

    def client(self):
        """A google-cloud-storage client talking to this server."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(credentials=AnonymousCredentials(), project="test",
                              client_options={"api_endpoint": self.host})

    def env(self) -> dict[str, str]:
        """Environment for a child process that should use this server."""
        return {"STORAGE_EMULATOR_HOST": self.host, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def stop(self, keep_log: bool = False) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not keep_log:
            self.log.close()

    def restart(self, timeout_s: float = 30.0) -> "Emulator":
        """The same server again on the same port and folder: a bucket back after an outage."""
        assert self.data_dir is not None, "an in-memory server loses its objects when stopped"
        return start(self.bucket, timeout_s, port=self.port, data_dir=self.data_dir)


def start(bucket: str = "test-bucket", timeout_s: float = 30.0, port: int = 0,
          data_dir: Optional[str] = None) -> Emulator:
    """Start the server on `port` (0: a free one) and wait until it answers.

    With `data_dir` its objects live in that folder, so a server stopped and started again on
    the same folder still has them (an outage, not a wipe); otherwise in memory."""
    port = port or free_port()
    # Its output goes to a file: a pipe nobody reads would fill up and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    where = ["--in-memory"] if data_dir is None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator",
         *(["--data-dir", data_dir] if data_dir is not None else []), "start", "--host",
         "127.0.0.1", "--port", str(port), *where, "--quiet", "--default-bucket", bucket],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    emulator = Emulator(proc, port, bucket, log, data_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with status {proc.returncode} before "
                               f"answering on port {port}:\n{emulator.output()}")
        try:
            with urllib.request.urlopen(f"{emulator.host}/storage/v1/b/{bucket}", timeout=1) as r:
                if r.status == 200:
                    return emulator
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    emulator.stop(keep_log=True)
    raise RuntimeError(f"gcp-storage-emulator did not answer on port {port} within {timeout_s:.0f} s:"
                       f"\n{emulator.output()}")


def use(emulator: Emulator) -> dict[str, str]:
    """Point this process at `emulator`; returns the previous values to restore."""
    previous = {k: os.environ.get(k) for k in emulator.env()}
    os.environ.update(emulator.env())
    return previous


class StallingProxy:
    """A TCP relay to `target_port` that forwards the first `budget` bytes a client sends on each
    connection and then holds the rest: an upload hangs mid-body, as when a job is preempted or
    its network drops in the middle of a transfer. `stalled` is set once that happens."""

    def __init__(self, target_port: int, budget: int):
        self.target_port = target_port
        self.budget = budget
        self.stalled = threading.Event()
        self.forwarded = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, self.budget),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, budget) -> None:
        sent = 0
        try:
            while chunk := src.recv(65536):
                if budget is not None and sent + len(chunk) > budget:
                    dst.sendall(chunk[:budget - sent])
                    self.forwarded += budget - sent
                    self.stalled.set()
                    while src.recv(65536):  # forward nothing more until the client goes away,
                        pass
                    break  # then drop the server's side too, mid-request

                dst.sendall(chunk)
                sent += len(chunk)
                if budget is not None:
                    self.forwarded += len(chunk)
        except OSError:
            pass
        # shutdown, not just close: it wakes the other direction's thread blocked on this socket.
        for sock in (dst, src):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._server.close()

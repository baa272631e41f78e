"""A real GCS JSON-API server on loopback (`gcp-storage-emulator`), for the bucket tests.

`start()` runs it on a free port in its own process and waits until it answers; it raises with
the server's own output when it does not come up. Clients find it through STORAGE_EMULATOR_HOST
(gcsfs with anonymous tokens, google-cloud-storage with AnonymousCredentials).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO


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


def start(bucket: str = "test-bucket", timeout_s: float = 30.0, port: int = 0) -> Emulator:
    """Start the server on `port` (0: a free one) and wait until it answers.

    Its objects live in its memory: an outage is made with a `Relay` in front of it, never by
    stopping it (the emulator's on-disk mode cannot survive a kill: it rewrites its state files in
    place, and a restart can find them half written)."""
    port = port or free_port()
    # Its output goes to a file: a pipe nobody reads would fill up and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
         str(port), "--in-memory", "--quiet", "--default-bucket", bucket],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    emulator = Emulator(proc, port, bucket, log)
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


class _Listener:
    """A TCP server on a free loopback port; `_serve` gets each accepted client, in the accepting
    thread."""

    def __init__(self):
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
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
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._server.close()


class StallingProxy(_Listener):
    """A TCP relay to `target_port` that forwards the first `budget` bytes a client sends on each
    connection and then holds the rest: an upload hangs mid-body, as when a job is preempted or
    its network drops in the middle of a transfer. `stalled` is set once that happens."""

    def __init__(self, target_port: int, budget: int):
        self.target_port = target_port
        self.budget = budget
        self.stalled = threading.Event()
        self.forwarded = 0
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
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


class Relay(_Listener):
    """A TCP relay in front of `emulator` whose line can be cut and restored: a network outage for
    real, while the server keeps its objects untouched in memory.

    While cut, every connection is reset: those open at the cut, and each new one as soon as it
    is accepted, before a byte of it reaches the server. `turned_away` counts the new ones, i.e.
    the requests a client tried during the outage: its retries are observable."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.turned_away = 0
        self._up = True
        self._lock = threading.Lock()
        self._lines: set["_Line"] = set()
        super().__init__()

    def env(self) -> dict[str, str]:
        """Environment for a child process that should reach the server through this relay."""
        return dict(self.emulator.env(), STORAGE_EMULATOR_HOST=self.host)

    def cut(self) -> None:
        with self._lock:
            self._up = False
            self.turned_away = 0
            lines, self._lines = self._lines, set()
        for line in lines:
            line.reset()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self.cut()
        super().close()

    def _forget(self, line: "_Line") -> None:
        with self._lock:
            self._lines.discard(line)

    def _serve(self, client: socket.socket) -> None:
        upstream = _upstream(self.emulator, client)
        if upstream is None:
            return
        line = _Line(client, upstream, on_end=self._forget)
        with self._lock:  # decided under the lock: a cut either sees this line or refuses it
            admitted = self._up
            if admitted:
                self._lines.add(line)
            else:
                self.turned_away += 1
        if admitted:
            line.start()
        else:
            upstream.close()
            _reset(client)


def _upstream(emulator: Emulator, client: socket.socket):
    """A connection to the server for `client`; None (and `client` reset) when it refuses."""
    try:
        return socket.create_connection(("127.0.0.1", emulator.port))
    except OSError:
        _reset(client)
        return None


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (RST) instead of an orderly end (FIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Line:
    """One client connection relayed to the server, a thread per direction."""

    def __init__(self, client: socket.socket, upstream: socket.socket, on_end):
        self.client, self.upstream = client, upstream
        self._on_end = on_end
        self._cut = False
        self._ended = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def reset(self) -> None:
        """Wake both directions (a read shut down returns at once); the last to end resets the client."""
        self._cut = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._cut and (chunk := src.recv(65536)):
                dst.sendall(chunk)
        except OSError:
            pass
        if not self._cut:  # an orderly end of one side ends the other side too
            for sock in (dst, src):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with self._lock:
            self._ended += 1
            last = self._ended == 2
        if not last:
            return
        self._on_end(self)
        self.upstream.close()
        if self._cut:
            _reset(self.client)
        else:
            self.client.close()


class SlowRelay(Relay):
    """A TCP relay in front of `emulator` that answers as a real bucket does at a distance: each
    response's first byte comes `latency_s` after the request (the time to first byte), and each
    connection carries at most `bytes_per_s` towards the client (a per-connection bandwidth cap).
    Requests go through at once; a request is whatever the client sends after a response began."""

    def __init__(self, emulator: Emulator, latency_s: float = 0.03,
                 bytes_per_s: float = 100e6):
        self.latency_s = latency_s
        self.bytes_per_s = bytes_per_s
        self.responses = 0  # responses started: the requests the server answered
        super().__init__(emulator)

    def _serve(self, client: socket.socket) -> None:
        upstream = _upstream(self.emulator, client)
        if upstream is None:
            return
        asked = threading.Event()  # set by a request, cleared when its response starts
        sent_at = [0.0]
        threading.Thread(target=self._requests, args=(client, upstream, asked, sent_at),
                         daemon=True).start()
        threading.Thread(target=self._responses, args=(upstream, client, asked, sent_at),
                         daemon=True).start()

    def _requests(self, src, dst, asked, sent_at) -> None:
        try:
            while chunk := src.recv(65536):
                if not asked.is_set():
                    sent_at[0] = time.monotonic()
                    asked.set()
                dst.sendall(chunk)
        except OSError:
            pass
        _end(src, dst)

    def _responses(self, src, dst, asked, sent_at) -> None:
        try:
            while chunk := src.recv(65536):
                if asked.is_set():  # the first bytes of a response: wait out the latency
                    asked.clear()
                    self.responses += 1
                    wait = sent_at[0] + self.latency_s - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    started, carried = time.monotonic(), 0
                dst.sendall(chunk)
                carried += len(chunk)
                ahead = started + carried / self.bytes_per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except (OSError, UnboundLocalError):
            pass
        _end(src, dst)


def _end(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

"""A run's home, `<output.dir>/<name>/`, and the private local folder where its files are made.

Every file is finished in the local staging folder first and then published whole to the run's
URL (local or `gs://`), so readers of the run directory never see a half-written file.

Two things can move where files go, without the code that writes them knowing:
- the platform may place the run or its top-level folders elsewhere (`homes`): Vertex AI's
  AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR, unless the command line's
  --output_dir says where the run goes (`locate`, the one rule);
- in a multi-worker job only the chief publishes to the run. The other workers run the same
  saving code (collective ops need every worker in step) into a private folder that `cleanup`
  deletes, and read the chief's run (to resume from its checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from typing import Optional

from trainer import storage
from trainer.errors import UserError
from trainer.runtime.platform import Platform


def _clean(url: str) -> str:
    url = storage.normalize(url)
    return url.rstrip("/") if url.rstrip("/") else url


def locate(output_dir: str, name: str, platform: Optional[Platform] = None) -> dict[str, str]:
    """Where a run's files go, the one rule: "" is the run's own folder; `checkpoints` and
    `tensorboard`, when present, are those folders placed elsewhere. In this order:
    1. `--output_dir` given on the command line (`platform.output_dir`): `<it>/<name>`, with
       every folder inside, whatever the platform sets;
    2. the platform's folders, each where it sets one: Vertex AI's AIP_MODEL_DIR for the run
       itself, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR for those two folders;
    3. `<output_dir>/<name>`, `output_dir` being the config's `output.dir`."""
    platform = platform or Platform()
    if platform.output_dir:
        return {"": storage.join(storage.normalize(platform.output_dir), name)}
    homes = {"": platform.model_dir, "checkpoints": platform.checkpoint_dir,
             "tensorboard": platform.tensorboard_dir}
    homes = {k: _clean(v) for k, v in homes.items() if v}
    return {"": storage.join(storage.normalize(output_dir), name), **homes}


class RunDir:
    def __init__(self, output_dir: str, name: str, *, platform: Optional[Platform] = None,
                 chief: bool = True):
        """The run `name` in `output_dir` (the config's `output.dir`), or where `platform` puts
        it (`locate`); `chief` is false on the other workers of a multi-worker job."""
        homes = locate(output_dir, name, platform)
        self.url = homes.pop("")
        self.homes = homes
        self.chief = chief
        try:
            self.staging = tempfile.mkdtemp(prefix=f"trainer-{name}-")
        except OSError as exc:
            raise UserError(f"cannot make a staging folder ({exc.strerror}), "
                            f"{tempfile.gettempdir()}, expected a temporary folder (TMPDIR) that "
                            f"uid {os.geteuid()} can write") from None
        # A worker's private stand-in for the run; inside staging, so cleanup removes it.
        self._private = None if chief else os.path.join(self.staging, ".worker-run")
        self._published: dict[str, tuple[int, int]] = {}
        # The outermost folder of a local run's path that does not exist yet: a new run that
        # fails removes what it made, up to there (`remove_new`).
        self._made_from = None
        if chief and storage.is_local(self.url):
            path = os.path.abspath(self.url.removeprefix("file://"))
            while not os.path.lexists(path) and os.path.dirname(path) != path:
                self._made_from, path = path, os.path.dirname(path)

    def check_writable(self) -> None:
        """Refuse, before any data is read, a run folder (or platform folder) the chief cannot
        write; the other workers write only to their private folder."""
        if self.chief:
            for url in [self.url, *self.homes.values()]:
                storage.check_writable(url)

    def local(self, *rel: str) -> str:
        """A path in the staging folder, with its parent created."""
        path = os.path.join(self.staging, *rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _read_url(self, *rel: str) -> str:
        if rel and rel[0] in self.homes:
            return storage.join(self.homes[rel[0]], *rel[1:])
        return storage.join(self.url, *rel)

    def remote(self, *rel: str) -> str:
        """Where the run's file `rel` is published (a worker's private copy on non-chiefs)."""
        if self._private is not None:
            return os.path.join(self._private, *rel)
        return self._read_url(*rel)

    def live_dir(self, rel: str) -> str:
        """A folder written to continuously (TensorBoard): in place when local, staged otherwise
        (then `publish_tree` uploads it as it grows)."""
        dest = self.remote(rel)
        path = dest if storage.is_local(dest) else self.local(rel, "")
        os.makedirs(path, exist_ok=True)
        return path

    def publish(self, *rel: str) -> str:
        dest = self.remote(*rel)
        storage.put_file(self.local(*rel), dest)
        return dest

    def publish_tree(self, rel: str) -> None:
        """Upload the files of a staged live folder that are new or changed since the last call."""
        dest = self.remote(rel)
        if storage.is_local(dest):
            return
        root = os.path.join(self.staging, rel)
        for folder, _dirs, files in os.walk(root):
            for name in sorted(files):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                if self._published.get(path) == (stat.st_size, stat.st_mtime_ns):
                    continue
                parts = os.path.relpath(path, root).split(os.sep)
                storage.put_file(path, storage.join(dest, *parts))
                self._published[path] = (stat.st_size, stat.st_mtime_ns)

    def fetch(self, *rel: str) -> Optional[str]:
        """Download a file of the run into staging; None when the run has no such file."""
        src = self._read_url(*rel)
        if not storage.exists(src):
            return None
        dest = self.local(*rel)
        storage.get_file(src, dest)
        return dest

    def remove_new(self) -> None:
        """Delete a new run's folder, and the folders above it that this run made and that
        nothing else has filled since."""
        storage.remove_tree(self.url)
        if self._made_from is None:
            return
        folder = os.path.dirname(os.path.abspath(self.url.removeprefix("file://")))
        while len(folder) >= len(self._made_from) and folder.startswith(self._made_from):
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    def committed_epoch(self) -> Optional[int]:
        """The epoch of the run's committed checkpoint (`checkpoints/state.json`), or None; the
        chief's on every worker (what each resumes from), so that all decide alike."""
        path = self._read_url("checkpoints", "state.json")
        if not storage.exists(path):
            return None
        try:
            epoch = json.loads(storage.read_text(path)).get("epoch")
        except (ValueError, AttributeError, UserError):
            return None
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    def trim_records(self, rel: str) -> list[str]:
        """Cut each file of the local live folder `rel` (TensorBoard's event files, TFRecord
        framing: length, its CRC, data, its CRC) after its last whole record, as a full disk
        leaves a record half-written; returns the files cut. A staged (remote) folder is left
        alone: it is uploaded only as whole files."""
        root = self.remote(rel)
        cut = []
        if not storage.is_local(root) or not os.path.isdir(root):
            return cut
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "r+b") as f:
                    size, end = os.fstat(f.fileno()).st_size, 0
                    while end + 12 <= size:
                        f.seek(end)
                        (length,) = struct.unpack("<Q", f.read(8))
                        if end + 16 + length > size:
                            break
                        end += 16 + length
                    if end < size:
                        f.truncate(end)
                        cut.append(path)
        return cut

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

"""A run's home, `<output.dir>/<name>/`, and the private local folder where its files are made.

Every file is finished in the local staging folder first and then published whole to the run's
URL (local or `gs://`), so readers of the run directory never see a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

from trainer import storage


class RunDir:
    def __init__(self, output_dir: str, name: str):
        self.url = storage.join(storage.normalize(output_dir), name)
        self.staging = tempfile.mkdtemp(prefix=f"trainer-{name}-")

    def local(self, *rel: str) -> str:
        """A path in the staging folder, with its parent created."""
        path = os.path.join(self.staging, *rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def remote(self, *rel: str) -> str:
        return storage.join(self.url, *rel)

    @property
    def is_local(self) -> bool:
        return storage.is_local(self.url)

    def live_dir(self, rel: str) -> str:
        """A folder written to continuously (TensorBoard): in place when local, staged otherwise."""
        path = self.remote(rel) if self.is_local else self.local(rel, "")
        os.makedirs(path, exist_ok=True)
        return path

    def publish(self, *rel: str) -> str:
        dest = self.remote(*rel)
        storage.put_file(self.local(*rel), dest)
        return dest

    def publish_tree(self, rel: str) -> None:
        if not self.is_local:
            storage.put_tree(os.path.join(self.staging, rel), self.remote(rel))

    def fetch(self, *rel: str) -> Optional[str]:
        """Download a file of the run into staging; None when the run has no such file."""
        src = self.remote(*rel)
        if not storage.exists(src):
            return None
        dest = self.local(*rel)
        storage.get_file(src, dest)
        return dest

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

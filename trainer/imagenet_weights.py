"""`model.weights: imagenet`: Keras's own download, once per job.

Every process of a multi-worker job would otherwise download the same file on its own, and a job
restarted before its first checkpoint (a preempted Vertex AI job lands on a fresh machine, with
an empty Keras cache) would download it again. So:
- the chief downloads (keras.applications with `weights="imagenet"`: Keras's cache in
  `~/.keras/models` and its hash check) and stores the backbone's weights in the run folder,
  `weights/imagenet-<model>.h5`, published whole (a reader sees the old state or the whole file);
- the other workers wait for that file (at most `WAIT_S`) and read it;
- a re-run of the same name finds the stored file and reads it instead of downloading (one that
  has a checkpoint needs no weights at all: `trainer.backbone_weights.prepare`).
A machine that cannot reach the download ends with one `error:` line saying to give a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Optional

from trainer import backbones, storage
from trainer.errors import UserError
from trainer.storage.rundir import RunDir

log = logging.getLogger("trainer")

FOLDER = "weights"  # in the run folder
# How long a worker waits for the chief's file: the chief's start, its download (ConvNeXt-Tiny's
# is 110 MB) and its upload, with room for a slow link.
WAIT_S = 900.0
_GIVE_A_FILE = ("or give the weights as a file: model.weights=PATH, gs:// or /gcs/ URL (a "
                "backbone's weights saved with save_weights)")


def file_name(config) -> str:
    """`imagenet-<model>.h5`; with constructor options (`alpha`, ...) their digest too, as
    they change the weights: a re-run with other options does not take this file."""
    options = backbones.options(config.model.params)
    if not options:
        return f"imagenet-{config.model.name}.h5"
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return f"imagenet-{config.model.name}-{digest}.h5"


def download(config, dest: str) -> None:
    """Keras's download of the ImageNet weights (cached in `~/.keras/models`, checked against
    their hash), saved to `dest` as the backbone this config builds, in Keras's `.h5` form."""
    try:
        model = backbones.construct(config.model.name, (224, 224), weights="imagenet",
                                    **backbones.options(config.model.params))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the download: no network, a proxy, a bad hash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot download the ImageNet weights of {config.model.name!r} "
                        f"({first}), model.weights=imagenet, expected a machine that reaches "
                        f"storage.googleapis.com, {_GIVE_A_FILE}") from None
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    model.save_weights(dest)


def to_temp(config) -> str:
    """The weights downloaded into a temporary folder (a model built outside a run)."""
    local = os.path.join(tempfile.mkdtemp(prefix="trainer-weights-"), file_name(config))
    download(config, local)
    return local


def for_run(config, run_dir: RunDir, wait_s: Optional[float] = None) -> str:
    """The local file (in the run's staging folder) with the weights of this job: the chief
    reads the run's stored file, or downloads and stores it; a worker waits for the chief's."""
    rel = (FOLDER, file_name(config))
    if not run_dir.chief:
        return _wait_for_chief(run_dir, rel, WAIT_S if wait_s is None else wait_s)
    stored = run_dir.fetch(*rel)
    if stored is not None:
        log.info("model.weights=imagenet: the run's stored copy, %s",
                 _url(run_dir, rel))
        return stored
    local = run_dir.local(*rel)
    download(config, local)
    run_dir.publish(*rel)
    log.info("model.weights=imagenet: downloaded once for the job, stored in %s",
             _url(run_dir, rel))
    return local


def _url(run_dir: RunDir, rel: tuple[str, str]) -> str:
    """Where the run keeps the file (the chief's run folder, whoever asks)."""
    return storage.join(run_dir.url, *rel)


def _wait_for_chief(run_dir: RunDir, rel: tuple[str, str], wait_s: float) -> str:
    """The chief's file, read once it is there; at most `wait_s` seconds of waiting."""
    deadline = time.monotonic() + wait_s
    delay, said = 0.25, False
    while True:
        path = run_dir.fetch(*rel)
        if path is not None:
            if said:
                log.info("model.weights=imagenet: the chief's copy has arrived")
            return path
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(
                f"the chief's ImageNet weights did not appear in {_url(run_dir, rel)} "
                f"within {wait_s:g} s, model.weights=imagenet, expected the chief to download "
                f"and store them (its log says why it did not), {_GIVE_A_FILE}")
        if not said:
            log.info("model.weights=imagenet: waiting for the chief's copy in %s",
                     _url(run_dir, rel))
            said = True
        time.sleep(min(delay, left))
        delay = min(delay * 2, 5.0)

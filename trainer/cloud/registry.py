"""A run's `saved_model/` as a Vertex AI Model, built as the API's own message type.

What the Model Registry needs comes from the run folder alone: the SavedModel (its
`assets.extra/trainer.json` names the TensorFlow version that wrote it), the run's name
(`config.yaml`) and its test metrics (`metrics.json`), which become labels, so runs can be
found and compared in the registry. The serving container is Vertex AI's pre-built TensorFlow
prediction image of that version, from the client library's own list of them.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Optional

import yaml

from trainer import storage
from trainer.errors import UserError
from trainer.outputs import servable

LABEL_LIMIT = 63  # characters in a label key or value
LABEL_CHARS = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class Run:
    """What the registry is told about a run."""

    url: str  # the run folder
    name: str
    tensorflow: str  # the version that wrote the SavedModel, e.g. "2.21.0"
    task: str
    test_metrics: dict

    @property
    def saved_model(self) -> str:
        return storage.join(self.url, servable.FOLDER)


def read_run(url: str) -> Run:
    """The run at `url` (local or gs://), refused with one line when it has no SavedModel."""
    url = storage.normalize(url).rstrip("/")
    if url.endswith("/" + servable.FOLDER):
        url = url[:-len(servable.FOLDER) - 1]  # the SavedModel's folder names its run
    flag = f"--upload_model={url}"
    model = storage.join(url, servable.FOLDER)
    if not storage.exists(storage.join(model, servable.LAST)):
        raise UserError(f"no {servable.FOLDER}/{servable.LAST} in the run, {flag}, expected a run "
                        "folder written with output.saved_model: true (the default)")
    for rel in (servable.INFO, "metrics.json", "config.yaml"):  # the run's own, not links out
        path = storage.join(model if rel == servable.INFO else url, rel)
        if storage.exists(path):
            storage.confine(path, url, f" ({flag})")
    info = _json(storage.join(model, servable.INFO), flag)
    metrics = _json(storage.join(url, "metrics.json"), flag) if storage.exists(
        storage.join(url, "metrics.json")) else {}
    name = info.get("name")
    if not name and storage.exists(storage.join(url, "config.yaml")):
        name = (yaml.safe_load(storage.read_text(storage.join(url, "config.yaml"))) or {}).get("name")
    tf_version = info.get("tensorflow")
    if not isinstance(tf_version, str) or not re.match(r"^\d+\.\d+", tf_version):
        raise UserError(f"no TensorFlow version in {servable.FOLDER}/{servable.INFO}, {flag}, "
                        "expected the file as this package writes it")
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    return Run(url=url, name=str(name or os.path.basename(url)), tensorflow=tf_version,
               task=str(info.get("task") or ""), test_metrics=test)


def _json(path: str, flag: str, expected: str = "the run's own file") -> dict:
    """A JSON object a run or a tool wrote, or one `error:` line naming `path` and `flag`."""
    try:
        data = json.loads(storage.read_text(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}), {flag}, expected {expected}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds no mapping, {flag}, expected {expected}")
    return data


def serving_image(tf_version: str, region: str, gpu: bool, flag: str) -> str:
    """Vertex AI's pre-built TensorFlow prediction image for `tf_version` (major.minor), from
    the repository nearest `region` (any of them serves every region)."""
    from google.cloud.aiplatform.constants import prediction

    version = ".".join(tf_version.split(".")[:2])
    repository = region.split("-")[0] if region.split("-")[0] in ("us", "europe", "asia") else "us"
    accelerator = "gpu" if gpu else "cpu"
    images = {}
    for uri in prediction.TF_CONTAINER_URIS:
        match = prediction.CONTAINER_URI_PATTERN.match(uri)
        if match and match["region"] == repository and match["accelerator"] == accelerator:
            images[match["version"].replace("-", ".")] = uri
    if version in images:
        return images[version]
    newest = max(images, key=lambda v: tuple(int(p) for p in v.split(".")))
    raise UserError(
        f"no pre-built Vertex AI prediction image for TensorFlow {version} ({accelerator}; the "
        f"newest is {newest}), {flag}, expected a model trained with TensorFlow {newest} or "
        "older, or --serving_image URI: a TensorFlow Serving image of the model's version "
        f"pushed to Artifact Registry, or {images[newest]} if the model loads there")


def label_value(value: object) -> str:
    """A label value as Vertex AI takes it: lowercase letters, digits, `_` and `-`, at most
    63 characters (`0.9667` becomes `0_9667`)."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return LABEL_CHARS.sub("_", text.lower())[:LABEL_LIMIT]


def labels(run: Run) -> dict[str, str]:
    """The run's name, task and test metrics (`test_accuracy`, `test_loss`, ...)."""
    found = {"run": label_value(run.name), "trainer_task": label_value(run.task or "unknown")}
    for metric, value in sorted(run.test_metrics.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            key = label_value(f"test_{metric}")
            found[key if key[0].isalpha() else f"m{key}"[:LABEL_LIMIT]] = label_value(float(value))
    return found


def build_model(run: Run, artifact_uri: str, image_uri: str, display_name: Optional[str]):
    """The Model resource: the SavedModel at `artifact_uri`, served by `image_uri`."""
    from google.cloud import aiplatform_v1 as v1

    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(run.test_metrics.items())
                        if isinstance(v, (int, float)) and not isinstance(v, bool))
    return v1.Model(
        display_name=display_name or run.name,
        description=(f"{run.task} model of run {run.url}, TensorFlow {run.tensorflow}"
                     + (f"; test: {metrics}" if metrics else ""))[:2000],
        artifact_uri=artifact_uri,
        container_spec=v1.ModelContainerSpec(image_uri=image_uri),
        labels=labels(run))


def staged_model_url(run: Run, staging_bucket: Optional[str], flag: str) -> str:
    """Where Vertex AI reads the SavedModel: the run's own folder when it is in a bucket; a
    local run's is copied to `<staging_bucket>/models/<name>-<time>/`."""
    if run.url.startswith("gs://"):
        return run.saved_model
    if not (staging_bucket or "").startswith("gs://"):
        raise UserError(f"a local run, {flag}, expected a gs:// run folder or --staging_bucket "
                        "gs://BUCKET to copy its saved_model/ to (Vertex AI reads models from "
                        "Cloud Storage)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return storage.join(staging_bucket, "models", f"{run.name}-{stamp}", servable.FOLDER)


def copy_saved_model(run: Run, dest: str) -> None:
    """Upload a local run's SavedModel file by file, `saved_model.pb` last."""
    local = run.saved_model.removeprefix("file://")
    try:
        for rel in servable.files(local):
            storage.confine(os.path.join(local, rel), local, f" (--upload_model={run.url})")
            storage.put_file(os.path.join(local, rel), storage.join(dest, *rel.split(os.sep)))
    except OSError as exc:  # no such bucket, or no permission to write there
        raise UserError(f"cannot copy the run's saved_model/ ({type(exc).__name__}: "
                        f"{str(exc)[:200]}), {dest}, expected a --staging_bucket this account "
                        "can write to") from None

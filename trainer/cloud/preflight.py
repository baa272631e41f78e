"""What a config must not carry to Vertex AI, checked before a job is built or anything uploaded.

Vertex AI keeps a job's spec and staged config, and the job reads only what it can reach from
the cloud; a config that breaks either rule would fail there, or leak, after the upload.
"""

from __future__ import annotations

from typing import Optional, Sequence

from trainer import storage
from trainer.config import Config
from trainer.errors import UserError
from trainer.runtime import secrets


def refuse_credentials(cfg: Config, config_path: Optional[str]) -> None:
    """Vertex AI keeps a job's spec (with its `--set` overrides) and its staged config, and shows
    them in its console: a credential in either would outlive the job. A job reaches its data as
    its service account (--service_account), never by a token it is handed."""
    where = [*secrets.find(cfg.to_dict()), *secrets.find(config_path or "", "--config")]
    if where:
        raise UserError(f"a credential in the job's config ({', '.join(where)}), "
                        f"{config_path or '--set'}, expected none: the job spec and config are "
                        "stored by Vertex AI; give the job a --service_account that can read "
                        "the data instead")


def refuse_local_data(cfg: Config) -> None:
    """The job runs on another machine: its data must be in a bucket."""
    for key in ("train", "val", "test"):
        paths = getattr(cfg.data, key) or []
        for path in [paths] if isinstance(paths, str) else paths:
            if storage.is_local(path):
                raise UserError(f"local data path, data.{key}={path}, expected gs:// or /gcs/ "
                                "paths that the job on Vertex AI can read")


def check(cfg: Config, config_path: Optional[str]) -> None:
    """Every rule above, in the order a user would fix them."""
    refuse_credentials(cfg, config_path)
    refuse_local_data(cfg)


def check_predict(model: str, inputs: Sequence[str], out: str,
                  staging_bucket: Optional[str]) -> None:
    """A batch-curation job reads its inputs and writes its results in buckets, and its spec (the
    paths) is kept by Vertex AI: no local path but a model to upload, and no credential."""
    named = [("--model", model), *[("--inputs", i) for i in inputs], ("--out", out)]
    where = [w for flag, path in named for w in secrets.find(path, flag)]
    if where:
        raise UserError(f"a credential in the job's paths ({', '.join(where)}), command line, "
                        "expected none: give the job a --service_account that can read them")
    for flag, path in named[1:]:
        if storage.is_local(path):
            raise UserError(f"local path, {flag}={path}, expected gs:// or /gcs/ paths that the "
                            "job on Vertex AI can read and write")
    if storage.is_local(model) and not (staging_bucket or "").startswith("gs://"):
        raise UserError(f"local model, --model={model}, expected a gs:// model, or "
                        "--staging_bucket gs://BUCKET to upload it to")

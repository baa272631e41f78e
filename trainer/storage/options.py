"""How the storage layer reaches a bucket: fsspec options (the GCS emulator's anonymous access)
and how long one remote call may keep retrying. Read from the environment, used only by storage."""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

from trainer.errors import UserError


def storage_options(protocol: str) -> dict:
    """fsspec options for `protocol`: anonymous access when STORAGE_EMULATOR_HOST points at a
    local GCS emulator (gcsfs reads that variable itself), unless the user gave a token through
    fsspec's own variables (FSSPEC_GS_TOKEN, FSSPEC_GS='{"token": ...}'), which fsspec applies.

    Credentials otherwise come from where gcsfs looks by itself: fsspec's variables and config
    files, GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the VM's service account."""
    if protocol not in ("gs", "gcs") or not os.environ.get("STORAGE_EMULATOR_HOST"):
        return {}
    # gcsfs first asks a gRPC control plane for the bucket type, which hangs a minute per call
    # against the emulator (NOTES.md); it reads this switch when it is first imported.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return {} if _fsspec_gcs_token(os.environ) else {"token": "anon"}


def _fsspec_gcs_token(env: Mapping[str, str]) -> bool:
    """Whether fsspec's variables give gcsfs a token (as fsspec's `config.set_conf_env` reads)."""
    for proto in ("GS", "GCS"):
        if env.get(f"FSSPEC_{proto}_TOKEN"):
            return True
        try:
            if "token" in json.loads(env.get(f"FSSPEC_{proto}", "{}")):
                return True
        except (ValueError, TypeError):
            continue
    return False


STORAGE_RETRY_ENV = "TRAINER_STORAGE_RETRY_S"


def storage_retry_budget() -> Optional[float]:
    """The seconds one remote storage call may take, its retries included ($TRAINER_STORAGE_RETRY_S);
    None leaves the storage library's own schedule (gcsfs: 6 tries, about 35 s) as the limit."""
    raw = os.environ.get(STORAGE_RETRY_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UserError(f"{STORAGE_RETRY_ENV}={raw!r}, environment, expected a number of seconds "
                        "above 0 (or unset, for the storage library's own retry schedule)")
    return seconds

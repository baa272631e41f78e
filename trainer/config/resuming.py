"""Resuming: which keys a re-run of the same name may change.

Each field declares it once, in its metadata: `resume="recorded"` (how training goes on: allowed,
and recorded from the epoch it takes effect), `resume="free"` (where files go, what is written,
speed: allowed as is); any other key says what was trained (the model, its input, the task, the
classes, the data) and must stay the same, or the checkpoint's weights would be another model's.
"""

from __future__ import annotations

import typing
from typing import Any

from trainer.config.schema import leaves


def flat(values: typing.Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys (`train.learning_rate`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "model.params":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_kinds() -> dict[str, str]:
    """Every dotted key and how a resume treats a change of it: same, recorded or free."""
    return {key: f.metadata.get("resume", "same") for key, f, _ in leaves()}

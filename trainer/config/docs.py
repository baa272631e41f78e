"""Documentation generated from the schema, so docs/reference.md cannot drift from the code: the
configuration table (`reference_markdown`) and what a resume may change (`resume_markdown`).
Both are pasted into docs/reference.md, and a test checks that they are still what it holds."""

from __future__ import annotations

import yaml

from trainer.config.resuming import resume_kinds
from trainer.config.schema import default_of, leaves
from trainer.config.values import type_name


def reference_markdown() -> str:
    """The configuration reference as a Markdown table, one row per key."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, f, kind in leaves():
        default = default_of(f)
        shown = "" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").strip()
        rows.append(f"| `{key}` | {type_name(kind)} | `{shown}` | {f.metadata.get('doc', '')} |")
    return "\n".join(rows)


def resume_markdown() -> str:
    """What a re-run of the same name may change, generated from the fields' declarations."""
    kinds = resume_kinds()

    def keys(kind: str) -> str:
        return ", ".join(f"`{k}`" for k, v in kinds.items() if v == kind)

    return ("- **may change, recorded** in `config.yaml`, `metrics.json` and the report as "
            "`from epoch N: key old -> new`: " + keys("recorded") + ".\n"
            "- **may change freely** (where files go, what is written, speed): " + keys("free")
            + ".\n- **must stay the same** (the model, its input, the task, the classes, the "
            "data; a change ends the re-run with one `error:` line naming the keys): "
            + keys("same") + ". The input shape and the classes the data gives must match too.")

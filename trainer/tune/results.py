"""What a search leaves for people: a ranked table (printed and `trials.csv`) and `objective.png`,
the objective against each parameter, so the sensitive parameters stand out at a glance.
"""

from __future__ import annotations

import math
from typing import Optional

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from trainer.outputs.table import text_table  # noqa: E402
from trainer.tune.space import Space  # noqa: E402
from trainer.tune.study import retried, shown_params  # noqa: E402

_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running"}


def ranked(study: optuna.Study, space: Space) -> list[dict]:
    """One row per trial (failures that were re-run left out): complete ones best first, then
    pruned ones by the value they had reached, then failures."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    sign = -1.0 if space.direction == "maximize" else 1.0
    rows = []
    for t in trials:
        if t.state not in _STATE or t.number in again:
            continue
        value = t.user_attrs.get("objective")
        value = float(value) if value is not None else math.nan
        group = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}.get(t.state, 2)
        number = t.user_attrs.get("trial", t.number)  # a re-run keeps its trial's number and run
        key = (group, sign * value if math.isfinite(value) else math.inf, number)
        row = {"trial": number, "run": t.user_attrs.get("run_name", ""), "state": _STATE[t.state],
               space.metric: value}
        row.update(shown_params(t, space))
        row.update({"epochs": t.user_attrs.get("epochs"), "wall_s": t.user_attrs.get("wall_s"),
                    "error": t.user_attrs.get("error", "")})
        rows.append((key, row))
    rows.sort(key=lambda item: item[0])
    return [{"rank": i + 1, **row} for i, (_, row) in enumerate(rows)]


def table(rows: list[dict]) -> str:
    """The ranked rows as text (errors left to the CSV)."""
    return text_table(rows, leave_out=("error",)) if rows else "no trials"


def plot(rows: list[dict], space: Space, path: str, title: Optional[str] = None) -> None:
    """One panel per parameter: complete trials as dots, pruned ones as crosses, the best starred."""
    params = list(space.params)
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False,
                             sharey=True)
    finished = [r for r in rows if r["state"] in ("complete", "pruned")
                and r[space.metric] is not None and math.isfinite(r[space.metric])]
    best = next((r for r in finished if r["state"] == "complete"), None)
    for ax, p in zip(axes[0], params):
        categorical = p.kind in ("grid", "choice") and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.values)
        labels = [str(v) for v in p.values]

        def x_of(row):
            return labels.index(str(row[p.key])) if categorical else row[p.key]

        for state, marker, colour in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:grey")):
            pts = [r for r in finished if r["state"] == state]
            ax.scatter([x_of(r) for r in pts], [r[space.metric] for r in pts], marker=marker,
                       color=colour, label=state)
        if best is not None:
            ax.scatter([x_of(best)], [best[space.metric]], marker="*", s=220, color="tab:orange",
                       label="best", zorder=3)
        if categorical:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif p.log or (p.values and min(p.values) > 0 and max(p.values) >= 100 * min(p.values)):
            ax.set_xscale("log")
        ax.set_xlabel(p.key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{space.metric} ({space.direction})")
    axes[0][0].legend()
    fig.suptitle(title or f"{space.metric} against each parameter")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

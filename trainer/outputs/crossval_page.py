"""`crossval.html`: one page with each metric's mean and spread over the folds of a
cross-validation (`trainer.crossval`), the per-fold table, and a figure per test metric
(each fold a dot, the mean a line, one standard deviation a band)."""

from __future__ import annotations

import numpy as np

from trainer.outputs import plots
from trainer.outputs.html_parts import CSS, esc, img, png_of, table


def _figure(summary: dict, names: list[str]) -> bytes:
    plt = plots.plt
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        folds = [f for f in summary["folds"] if name in f["metrics"]]
        values = [f["metrics"][name] for f in folds]
        mean, std = summary["mean"][name], summary["std"][name]
        ax.axhspan(mean - std, mean + std, color="#4c8bf5", alpha=0.2)
        ax.axhline(mean, color="#4c8bf5")
        ax.plot(np.zeros(len(values)), values, "o", color="black")
        for f, v in zip(folds, values):
            ax.annotate(str(f["fold"]), (0, v), xytext=(6, 0), textcoords="offset points",
                        fontsize="small", va="center")
        ax.set_xticks([])
        ax.set_title(name, fontsize="small")
    fig.tight_layout()
    return png_of(lambda f: (fig.savefig(f, format="png", dpi=90), plt.close(fig)))


def render(summary: dict, name: str) -> str:
    names = list(summary["mean"])
    spread = table(["metric", "mean", "std", "min", "max", "folds"], [
        [n, summary["mean"][n], summary["std"][n],
         *(lambda v: [min(v), max(v)] if v else [float("nan")] * 2)(
             [f["metrics"][n] for f in summary["folds"] if n in f["metrics"]]),
         sum(n in f["metrics"] for f in summary["folds"])] for n in names])
    per_fold = table(["fold", "run", "held-out groups", *names], [
        [f["fold"], f["run"], ", ".join(f["held_out_groups"]) or "-",
         *[f["metrics"].get(n, float("nan")) for n in names]] for f in summary["folds"]])
    shown = [n for n in names if n.startswith("test.")] or names
    figure = img(_figure(summary, shown), "each fold's figures") if summary["folds"] else ""
    asked = summary.get("folds_asked", len(summary["folds"]))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(name)}: cross-validation</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(name)}: cross-validation</h1>"
            f'<p class="sub">{len(summary["folds"])} of {asked} folds finished; std is the '
            f"sample standard deviation over folds</p>"
            f"<h2>Mean and spread</h2>{spread}{figure}<h2>Per fold</h2>{per_fold}</body></html>")

"""A trained classifier's probabilities, judged on the held-out splits: what `metrics.json`,
`plots/` and the report say about them, and the model that is saved.

In order: temperature scaling fitted on validation (`eval.calibrate`), which changes the model;
then, on the (calibrated) probabilities of each split, the ROC and precision-recall areas, the
expected calibration error and the reliability diagram; then, for two classes, the decision
threshold chosen on validation (`eval.threshold`) and the scores at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from trainer.evaluation import calibration, curves, thresholds

log = logging.getLogger("trainer")

PLOTS = ("roc.png", "pr.png", "reliability.png")


@dataclass
class Judged:
    """What `judge` found: the model to save, its probabilities per split, the additions to
    metrics.json, and the threshold that goes into the model's metadata."""

    model: object
    probabilities: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    metrics: dict = field(default_factory=dict)  # {split: {...}}, threshold, calibration, ...
    threshold: Optional[float] = None
    reliability: dict = field(default_factory=dict)  # split -> curves.reliability(...)


def judge(model, probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray],
          class_names: list[str], threshold_rule, calibrate: str) -> Judged:
    """`probabilities` and `labels` by split (`val`, `test`; either may be missing)."""
    out = Judged(model, dict(probabilities), labels)
    if calibrate == "temperature":
        _calibrate(out, class_names)
    for split, p in out.probabilities.items():
        y = labels[split]
        figures = curves.areas(p, y, class_names)
        per_class = figures.pop("per_class", None)
        # An area a split cannot define (one class only in it) is null in JSON, not NaN.
        figures = {k: curves.nan_to_none(v) for k, v in figures.items()}
        if per_class:
            per_class = {c: {k: curves.nan_to_none(v) for k, v in f.items()}
                         for c, f in per_class.items()}
        out.reliability[split] = curves.reliability(p, y)
        out.metrics[split] = {**figures, "ece": out.reliability[split]["ece"]}
        if per_class:
            out.metrics.setdefault("per_class_auc", {})[split] = per_class
    if len(class_names) == 2:
        val = out.probabilities.get("val")
        chosen = thresholds.choose(threshold_rule, None if val is None else val[:, 1],
                                   labels.get("val"))
        out.threshold = chosen["value"]
        out.metrics["threshold"] = chosen
        for split, p in out.probabilities.items():
            out.metrics[split].update(thresholds.scores_at(p, labels[split], out.threshold))
        log.info("decision threshold %s (%s)%s", f"{out.threshold:.4g}", chosen["rule"],
                 f": {chosen['note']}" if "note" in chosen else "")
    for split, m in out.metrics.items():
        if split in out.probabilities:
            log.info("%s: %s", split, " ".join(f"{k}={'undefined' if v is None else f'{v:.4g}'}"
                                               for k, v in m.items()))
    return out


def _calibrate(out: Judged, class_names: list[str]) -> None:
    val = out.probabilities.get("val")
    if val is None:
        log.warning("eval.calibrate: temperature needs a validation split; not calibrated")
        out.metrics["calibration"] = {"temperature": None,
                                      "note": "no validation split: not calibrated"}
        return
    logits = {k: calibration.logits_of(p) for k, p in out.probabilities.items()}
    temperature = calibration.fit_temperature(logits["val"], out.labels["val"])
    after = {k: calibration.softmax(z, temperature) for k, z in logits.items()}
    before_ece = {k: curves.ece(p, out.labels[k]) for k, p in out.probabilities.items()}
    after_ece = {k: curves.ece(p, out.labels[k]) for k, p in after.items()}
    out.model = calibration.with_temperature(out.model, temperature)
    out.probabilities = after
    out.metrics["calibration"] = {
        "temperature": temperature, "ece_before": before_ece, "ece_after": after_ece,
        "nll_before": {k: calibration.nll(z, out.labels[k]) for k, z in logits.items()},
        "nll_after": {k: calibration.nll(z, out.labels[k], temperature)
                      for k, z in logits.items()}}
    log.info("temperature scaling: T=%.4g; expected calibration error %s", temperature,
             ", ".join(f"{k} {before_ece[k]:.4f} -> {after_ece[k]:.4f}" for k in before_ece))


def draw(judged: Judged, class_names: list[str], folder_path, title: str) -> dict[str, str]:
    """`plots/roc.png`, `plots/pr.png` and `plots/reliability.png`; returns name -> path.
    `folder_path(name)` gives the local path of a plot."""
    from trainer.outputs import plots  # matplotlib, only when plots are drawn
    plt = plots.plt

    splits = list(judged.probabilities)
    if not splits:
        return {}
    ks = [1] if len(class_names) == 2 else list(range(len(class_names)))
    drawn = {}
    for name, curve, axes in (("roc.png", curves.roc_curve, ("false positive rate",
                                                             "true positive rate")),
                              ("pr.png", curves.pr_curve, ("recall", "precision"))):
        fig, grid = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4.2), squeeze=False)
        for ax, split in zip(grid[0], splits):
            p, y = judged.probabilities[split], np.asarray(judged.labels[split]).astype(int)
            for k in ks:
                xs, ys = curve(p[:, k], y == k)
                ax.plot(xs, ys, label=class_names[k])
            key = "roc_auc" if name == "roc.png" else "pr_auc"
            area = judged.metrics[split][key]
            ax.set_title(f"{split}: {key} " + ("undefined (one class)" if area is None
                                                 else f"{area:.3f}"))
            ax.set_xlabel(axes[0])
            ax.set_ylabel(axes[1])
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            if len(ks) > 1:
                ax.legend(fontsize="small")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(folder_path(name), dpi=100)
        plt.close(fig)
        drawn[name] = folder_path(name)
    fig, grid = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(grid[0], splits):
        r = judged.reliability[split]
        bins = len(r["count"])
        centres = (np.arange(bins) + 0.5) / bins
        acc = np.nan_to_num(np.asarray(r["accuracy"], float))
        ax.bar(centres, acc, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_title(f"{split}: ECE {r['ece']:.4f}")
        ax.set_xlabel("confidence (top class's probability)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(folder_path("reliability.png"), dpi=100)
    plt.close(fig)
    drawn["reliability.png"] = folder_path("reliability.png")
    return drawn


def judge_splits(config, splits, model, held: dict, predict) -> Optional[Judged]:
    """`judge` on a run's held-out splits (`held`: split -> dataset; `predict(model, ds)`);
    None for regression."""
    if not splits.class_names:
        return None
    probs = {k: np.asarray(predict(model, ds), np.float64) for k, ds in held.items()}
    labels = {k: np.asarray(getattr(splits, k).y).astype(int).ravel() for k in probs}
    return judge(model, probs, labels, list(splits.class_names), config.eval.threshold,
                 config.eval.calibrate)

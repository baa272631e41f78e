"""`report.html`: one self-contained page per run that a person can read without any tool.

Everything a reviewer asks after a run (seeds 000 and 004 plotted it by hand each time) is on it:
the headline metrics, the curves, where the model goes wrong, what data it saw, the architecture,
how fast it trained and on what. Images are embedded as base64 `data:` URIs and there is no
script or external stylesheet, so the file can be mailed, opened from a bucket or archived alone.
This module lays out the page and its sections; `html_parts.py` holds the pieces (escaping,
tables, embedded images), `architecture.py` the model's table and diagram.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import tempfile
from typing import Optional

import numpy as np

from trainer.runtime.platform import Platform
from trainer.runtime.provenance import provenance
from trainer.outputs import plots
from trainer.outputs.architecture import NO_GRAPHVIZ, architecture_png, graphviz_available, layer_rows
from trainer.outputs.configfile import config_yaml
from trainer.outputs.html_parts import CSS, cell, esc, image_png, img, png_of, table
from trainer.config import Config
from trainer.data import Splits
from trainer.kerasflavor import keras
from trainer.training.evaluation import per_target_scores
from trainer.training.fit import TrainResult

GALLERY_SIZE = 16



# ----------------------------------------------------------------------------------------------
# Sections. Each returns (anchor, title, html).


def _metrics_section(metrics: dict) -> str:
    names = sorted({k for split in ("val", "test") for k in metrics.get(split, {})})
    rows = [[split, *[metrics[split].get(k, float("nan")) for k in names]]
            for split in ("val", "test") if split in metrics]
    t = metrics.get("training", {})
    facts = [["epochs trained", t.get("epochs_trained")], ["best epoch", t.get("best_epoch")],
             ["stopped early", t.get("stopped_early")]]
    if t.get("resumed_from_epoch") is not None:  # a fresh run did not resume
        facts.append(["resumed from epoch", t["resumed_from_epoch"]])
    facts += [["changed on resuming", line] for line in t.get("config_changes") or ()]
    if isinstance(t.get("init_from"), dict):  # model.init_from: the layers taken and the new
        from trainer.init_from import lines as init_lines

        facts += [["started from", line] for line in init_lines(t["init_from"])]
    facts.append(["wall_time_s (every session)", round(float(t.get("wall_time_s", 0.0)), 1)])
    if t.get("session_wall_time_s") is not None and t.get("resumed_from_epoch") is not None:
        facts.append(["session_wall_time_s (this session)", round(float(t["session_wall_time_s"]), 1)])
    return table(["split", *names], rows) + table(["training", ""], facts)


def _curves_section(history: list[dict], name: str) -> str:
    if not history:
        return "<p>No epochs were trained in this run.</p>"
    return img(png_of(lambda f: plots.history_plot(history, f, name)), "training curves")


def per_class_scores(matrix: np.ndarray) -> list[tuple[float, float, float, int]]:
    """(precision, recall, F1, support) per class from a confusion matrix (rows: true)."""
    out = []
    for i in range(len(matrix)):
        tp = float(matrix[i, i])
        predicted, actual = float(matrix[:, i].sum()), float(matrix[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append((precision, recall, f1, int(actual)))
    return out


SPLIT_TITLES = {"val": "validation", "test": "test"}


def _classification_section(splits: Splits, probs: np.ndarray, matrix: np.ndarray,
                            name: str) -> str:
    """The confusion matrix is the one `metrics.json` holds, so the page and the file agree."""
    names = splits.class_names
    held = getattr(splits, splits.held_out)
    split = SPLIT_TITLES[splits.held_out]
    y = held.y
    predicted = probs.argmax(axis=1)
    confusion = png_of(lambda f: plots.confusion_plot(matrix, names, f, f"{name}: {split} set"))
    scores = per_class_scores(matrix)
    rows = [[c, p, r, f, n] for c, (p, r, f, n) in zip(names, scores)]
    macro = [float(np.mean([s[i] for s in scores])) for i in range(3)]
    rows.append(["macro average", *macro, int(matrix.sum())])
    parts = [f"<h3>Confusion matrix ({split} set)</h3>", img(confusion, "confusion matrix"),
             f"<h3>Per-class precision, recall and F1 ({split} set)</h3>",
             table(["class", "precision", "recall", "F1", "support"], rows)]
    wrong = np.flatnonzero(predicted != y)
    parts.append(f"<h3>Most confident mistakes ({len(wrong)} of {len(y)} {split} images wrong)</h3>")
    if len(wrong) == 0:
        parts.append(f"<p>No {split} image is misclassified.</p>")
        return "".join(parts)
    # Worst first: the probability the model gave to its wrong answer.
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:GALLERY_SIZE]
    images = dict(zip(order, held.view.take(order)))  # only the gallery's rows are read
    cells = []
    for i in order:
        source = held.view.origin(int(i))  # its file, or its shard and row
        caption = (f"#{i}<br>true: {esc(names[y[i]])}<br>predicted: {esc(names[predicted[i]])} "
                   f"({probs[i, predicted[i]]:.2f})<br><small>{esc(source)}</small>")
        cells.append(f"<figure>{img(image_png(images[i]), f'{split} image {i}')}"
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append(f'<div class="gallery">{"".join(cells)}</div>')
    return "".join(parts)


def probabilities_section(judged, class_names: list[str], name: str) -> str:
    """ROC, precision-recall and reliability plots with the threshold and calibration."""
    from trainer.evaluation import probabilities

    with tempfile.TemporaryDirectory() as tmp:
        drawn = probabilities.draw(judged, class_names, lambda n: os.path.join(tmp, n), name)
        images = {n: open(p, "rb").read() for n, p in drawn.items()}
    rows = [[k, json.dumps(v)] for k, v in judged.metrics.items()
            if k in ("threshold", "calibration")]
    return ((table(["", "value"], rows) if rows else "")
            + "".join(img(png, n) for n, png in images.items()))


def _regression_section(splits: Splits, pred: np.ndarray, name: str) -> str:
    split = SPLIT_TITLES[splits.held_out]
    y = getattr(splits, splits.held_out).y
    pred = pred.reshape(y.shape)
    figure = png_of(lambda f: plots.regression_plots(y, pred, f, f"{name}: {split} set"))
    err = pred - y
    names = splits.target_names or [f"target_{k}" for k in range(y.shape[1])]
    scores = per_target_scores(y, pred, names)
    rows = [[n, scores[n]["rmse"], scores[n]["mae"], scores[n]["r2"], float(err[:, k].mean()),
             float(np.corrcoef(y[:, k], pred[:, k])[0, 1])
             if y[:, k].std() > 0 and pred[:, k].std() > 0 else float("nan")]
            for k, n in enumerate(names)]
    rows.append(["overall", *[scores["overall"][k] for k in ("rmse", "mae", "r2")],
                 float(err.mean()), float("nan")])
    return (f"<h3>Predicted against true, and residuals ({split} set)</h3>"
            + img(figure, "predicted vs true and residuals")
            + table(["target", "RMSE", "MAE", "R²", "mean residual", "correlation"], rows))


def _data_section(splits: Splits) -> str:
    summary = splits.summary()
    keys = list(splits.present)
    rows = [[k, summary[k]["samples"], summary[k]["source"]] for k in keys]
    parts = [f"<p>Input shape {esc(tuple(summary['input_shape']))} "
             f"({esc(summary['layout'])}); split: {esc(summary['split_method'])}.</p>",
             table(["split", "samples", "source"], rows)]
    if summary.get("resized", {}).get("count"):
        r = summary["resized"]
        parts.append(f"<p>{r['count']} of {r['of']} image files were resized to {esc(r['to'])}, "
                     f"from: {esc(', '.join(f'{k} ({n})' for k, n in r['from'].items()))}.</p>")
    if splits.class_names:
        header = ["class", *[f"{k} samples" for k in keys], "train share"]
        total = max(1, summary["train"]["samples"])
        rows = []
        for c in splits.class_names:
            counts = [summary[k]["per_class"][c] for k in keys]
            share = counts[0] / total
            rows.append(f"<tr><td>{esc(c)}</td>" + "".join(cell(n) for n in counts)
                        + f'<td><span class="bar" style="width:{share * 200:.0f}px"></span> '
                          f"{share:.1%}</td></tr>")
        parts.append("<h3>Class balance</h3><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + "".join(rows)
                     + "</table>")
    else:
        y = splits.train.y
        names = splits.target_names or [f"target_{k}" for k in range(y.shape[1])]
        rows = [[n, float(y[:, k].mean()), float(y[:, k].std()), float(y[:, k].min()),
                 float(y[:, k].max())] for k, n in enumerate(names)]
        parts.append("<h3>Targets (training split)</h3>"
                     + table(["target", "mean", "std", "min", "max"], rows))
    return "".join(parts)



def _architecture_section(model: keras.Model, diagram: Optional[bytes] = None) -> str:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = model.count_params()
    parts = [f"<p>{total:,} parameters, {trainable:,} trainable.</p>",
             table(["layer", "type", "output shape", "parameters"], layer_rows(model))]
    graphviz = graphviz_available()  # how plots/architecture.png was drawn, when it was
    if diagram is None:
        diagram, graphviz = architecture_png(model)
    parts += ["<h3>Diagram (plots/architecture.png)</h3>", img(diagram, "architecture diagram")]
    if not graphviz:
        parts.append(f'<p class="sub">{esc(NO_GRAPHVIZ)}</p>')
    return "".join(parts)


def _dynamics_section(figures: dict[str, bytes]) -> str:
    """train.histograms: the per-layer curves, the histograms of every epoch, and their GIF."""
    gif = figures["histograms.gif"]
    return ("<p>Measured at the end of every epoch on one fixed training batch (the same figures "
            "TensorBoard's histograms hold). A zero fraction near 1 is a layer of dead ReLU "
            "units; a gradient norm falling to 0, a layer that stopped learning.</p>"
            "<h3>Per-layer curves (plots/layer_dynamics.png)</h3>"
            + img(figures["layer_dynamics.png"], "per-layer weight norm, gradient norm and "
                   "activation zero fraction")
            + "<h3>Histograms of every epoch (plots/histograms.png)</h3>"
            + img(figures["histograms.png"], "histograms of every epoch")
            + "<h3>The histograms epoch by epoch (plots/histograms.gif)</h3>"
            + f'<img alt="histograms, one frame per epoch" src="data:image/gif;base64,'
              f'{base64.b64encode(gif).decode("ascii")}">')


def _throughput_section(history: list[dict], training: dict) -> str:
    """The run's `train_samples_per_s` as the log and metrics.json give it, and both rates of
    every epoch under their history.csv names (`trainer.callbacks.epoch_timer` defines them)."""
    if not history:
        return "<p>No epochs were trained in this run.</p>"
    rows = [[row["epoch"], float(row.get("epoch_time_s", float("nan"))),
             *[plots.rate(row, k) for k in plots.RATES]] for row in history]
    rate = training.get("train_samples_per_s")
    head = (f"<p><b>train_samples_per_s {rate:,.0f}</b>: training samples per second of the "
            "training steps alone, the median over the epochs of the last session after its "
            "first (which includes building the graph), as in the log and metrics.json.</p>"
            if rate is not None else "")
    figure = png_of(lambda f: plots.throughput_plot(history, f, "throughput per epoch"))
    return (head + "<p>Per epoch: <code>train_samples_per_s</code> counts the training steps "
            "alone; <code>epoch_samples_per_s</code> the whole epoch, validation and callbacks "
            "included.</p>" + img(figure, "throughput per epoch")
            + table(["epoch", "epoch_time_s", *plots.RATES], rows))


def _environment_section(metrics: dict, run_url: str, platform: Platform) -> str:
    info = provenance(platform)
    packages = info.pop("packages")
    training = metrics.get("training", {})
    rows = [["run directory", run_url], *[[k, v] for k, v in info.items()],
            *[[k, training[k]] for k in ("precision_policy", "xla", "replicas", "global_batch",
                                         "learning_rate", "experiment_run") if k in training],
            *[[f"package {k}", v] for k, v in packages.items()]]
    return table(["", "value"], rows)


def render(config: Config, splits: Splits, result: TrainResult, metrics: dict, run_url: str,
           platform: Platform, figures: Optional[dict[str, bytes]] = None) -> str:
    """The whole page as a string. `figures`: the files of `plots/` already drawn (by name),
    embedded rather than drawn again."""
    figures = figures or {}
    sections: list[tuple[str, str, str]] = [
        ("metrics", "Final metrics", _metrics_section(metrics)
         + "".join(f'<p class="sub">{esc(line)}</p>'
                   for line in splits.absent_lines(config.train.monitor))),
        ("curves", "Training curves", _curves_section(result.history, config.name)),
    ]
    if result.test_predictions is not None and splits.held_out:
        if splits.class_names:
            sections.append(("errors", "Classification: where it goes wrong",
                             _classification_section(
                                 splits, result.test_predictions,
                                 np.asarray(metrics["confusion_matrix"]["matrix"]), config.name)))
        else:
            sections.append(("errors", "Regression: predictions against truth",
                             _regression_section(splits, result.test_predictions, config.name)))
    if result.judged is not None and result.judged.probabilities:
        sections.append(("probabilities", "Probabilities: ranking, calibration, threshold",
                         probabilities_section(result.judged, splits.class_names, config.name)))
    if all(name in figures for name in plots.DYNAMICS_FILES):
        sections.append(("dynamics", "Weights, gradients and activations",
                         _dynamics_section(figures)))
    sections += [
        ("data", "Data", _data_section(splits)),
        ("architecture", "Architecture", _architecture_section(
            result.model, figures.get("architecture.png"))),
        ("throughput", "Throughput", _throughput_section(result.history,
                                                      metrics.get("training", {}))),
        ("environment", "Environment", _environment_section(metrics, run_url, platform)),
        ("config", "Config", f"<pre>{esc(config_yaml(config, splits, result))}</pre>"),
    ]
    held = splits.held_out or "test"
    headline = ", ".join(f"{k} {v:.4g}" for k, v in metrics.get(held, {}).items()) or "none"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(config.name)}: run report</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(config.name)}</h1>"
            f'<p class="sub">{esc(config.task)} with {esc(config.model.name)}; {SPLIT_TITLES[held]}: '
            f"{esc(headline)}; written {when}</p><nav>{nav}</nav>{body}</body></html>")


def write_report(path: str, config: Config, splits: Splits, result: TrainResult, metrics: dict,
                 run_url: str, platform: Platform,
                 figures: Optional[dict[str, bytes]] = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(config, splits, result, metrics, run_url, platform, figures))

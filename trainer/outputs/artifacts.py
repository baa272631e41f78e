"""The files a run leaves in `<output.dir>/<name>/`, each made locally and then published whole.

`model.h5` is written by `modelfile`, with what prediction needs besides the weights: the task,
the class names in output order and the input shape. `saved_model/` (`servable`) is the same
model with its image decoding, for serving; a model that cannot be exported is logged, not fatal.
"""

from __future__ import annotations

import logging
import json
import os
from typing import Optional

import numpy as np

from trainer.evaluation import probabilities, thresholds
from trainer.outputs import modelfile
from trainer.outputs import plots
from trainer.outputs import architecture, report
from trainer.outputs import servable
from trainer.outputs.configfile import config_yaml
from trainer.outputs.table import write_csv
from trainer.runtime import secrets
from trainer.runtime.platform import Platform
from trainer.config import Config
from trainer.data import Splits
from trainer.models import as_float32
from trainer.storage.rundir import RunDir
from trainer.training.evaluation import per_target_scores
from trainer.training.fit import TrainResult

log = logging.getLogger("trainer")


def write_all(config: Config, splits: Splits, result: TrainResult, run: RunDir,
              platform: Platform, wall_time_s: float) -> dict[str, str]:
    """Write and publish every artefact; returns what went where. `wall_time_s` is this
    session's; metrics.json's `wall_time_s` adds the sessions a resumed run had before."""
    out = write_model(config, splits, result, run)
    out["config"] = write_config(config, splits, result, run)
    if result.history:
        write_csv(result.history, run.local("history.csv"))
        out["history"] = run.publish("history.csv")
    metrics, matrix = run_metrics(splits, result, run, wall_time_s)
    out["metrics"] = write_metrics(metrics, run)
    figures = write_figures(config, result, run) if platform.is_chief else {}
    if config.output.plots:
        out["plots"] = write_plots(config, splits, result, matrix, run)
    if config.output.report:
        out.update(write_report(config, splits, result, metrics, run, platform, figures))
    return out


def write_model(config: Config, splits: Splits, result: TrainResult, run: RunDir
                ) -> dict[str, str]:
    """`model.h5`, and with `output.saved_model` the `saved_model/` folder; what went where."""
    metadata = {"task": config.task, "class_names": splits.class_names,
                "target_names": splits.target_names,
                "input_shape": list(splits.input_shape), "num_outputs": splits.num_outputs,
                "model": config.model.name, "name": config.name,
                "threshold": result.judged.threshold if result.judged else None,
                "frame_context": config.data.frame_context}
    # Saved in float32 whatever the training precision, so it loads and predicts on any machine.
    model = as_float32(result.model)
    modelfile.save(model, run.local("model.h5"), metadata)
    out = {"model": run.publish("model.h5")}
    if config.output.saved_model:
        exported = write_saved_model(model, metadata, run)
        if exported:
            out["saved_model"] = exported
    return out


def write_config(config: Config, splits: Splits, result: TrainResult, run: RunDir) -> str:
    with open(run.local("config.yaml"), "w") as f:
        f.write(config_yaml(config, splits, result))
    return run.publish("config.yaml")


def run_metrics(splits: Splits, result: TrainResult, run: RunDir, wall_time_s: float
                ) -> tuple[dict, Optional[np.ndarray]]:
    """metrics.json's content (passwords in data URLs redacted), and the confusion matrix of
    the held-out split when the task has classes."""
    metrics = dict(result.metrics)
    metrics["data"] = splits.summary()
    metrics["training"] = training_figures(result, run, wall_time_s)
    held_out, matrix = held_out_figures(splits, result)
    metrics.update(held_out)
    return secrets.redact(metrics), matrix  # data sources are URLs, which may carry a password


def training_figures(result: TrainResult, run: RunDir, wall_time_s: float) -> dict:
    training = {"epochs_trained": len(result.history), "best_epoch": result.best_epoch,
                "resumed_from_epoch": result.resumed_from_epoch,
                "stopped_early": result.stopped_early,
                "wall_time_s": result.earlier_wall_time_s + wall_time_s,
                "session_wall_time_s": wall_time_s,
                "replicas": result.replicas, "global_batch": result.global_batch,
                "config_changes": result.changes, **result.runtime}
    if not result.trained:  # a finished run re-run: the figures of the session that trained
        training.update(_trained_figures(run))
    return training


def held_out_figures(splits: Splits, result: TrainResult) -> tuple[dict, Optional[np.ndarray]]:
    """The held-out split's confusion matrix (classes) or per-target scores (regression), as
    metrics.json keys, and the matrix; nothing without predictions on a held-out split."""
    held = getattr(splits, splits.held_out) if splits.held_out else None
    if result.test_predictions is None or held is None:
        return {}, None
    if splits.class_names:
        # Labels at the run's decision threshold (`eval.threshold`), as predict gives them.
        predicted = thresholds.decide(result.test_predictions,
                                      result.judged.threshold if result.judged else None)
        matrix = plots.confusion_matrix(held.y, predicted, splits.num_outputs)
        return {"confusion_matrix": {"labels": splits.class_names, "matrix": matrix.tolist(),
                                     "split": splits.held_out}}, matrix
    if splits.target_names:
        return {"per_target": {"split": splits.held_out, **per_target_scores(
            held.y, result.test_predictions, splits.target_names)}}, None
    return {}, None


def write_metrics(metrics: dict, run: RunDir) -> str:
    with open(run.local("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return run.publish("metrics.json")


def write_plots(config: Config, splits: Splits, result: TrainResult,
                matrix: Optional[np.ndarray], run: RunDir) -> str:
    """`plots/history.png`, `plots/confusion_matrix.png` and the probabilities' curves (ROC,
    precision-recall, reliability), those that apply; the folder."""
    if result.history:
        plots.history_plot(result.history, run.local("plots", "history.png"), config.name)
        run.publish("plots", "history.png")
    if matrix is not None:
        plots.confusion_plot(matrix, splits.class_names, run.local("plots", "confusion_matrix.png"),
                             f"{config.name}: {report.SPLIT_TITLES[splits.held_out]} set")
        run.publish("plots", "confusion_matrix.png")
    if result.judged is not None:
        for name in probabilities.draw(result.judged, splits.class_names,
                                       lambda n: run.local("plots", n), config.name):
            run.publish("plots", name)
    return run.remote("plots")


def write_report(config: Config, splits: Splits, result: TrainResult, metrics: dict,
                 run: RunDir, platform: Platform, figures: dict[str, bytes]) -> dict[str, str]:
    """`report.html`; nothing, and the error logged, when the page cannot be made."""
    try:
        report.write_report(run.local("report.html"), config, splits, result, metrics, run.url,
                            platform, figures)
        return {"report": run.publish("report.html")}
    except Exception:  # noqa: BLE001 - the model and metrics are saved; a page must not fail the run
        log.exception("report.html could not be written")
        return {}


def write_figures(config: Config, result: TrainResult, run: RunDir) -> dict[str, bytes]:
    """`plots/architecture.png` (with `output.plots`), and with `train.histograms` the
    training dynamics: `plots/layer_dynamics.png` and `.csv`, `plots/histograms.png` and
    `plots/histograms.gif`. Returns what was drawn, by name, for the report; a figure that
    cannot be drawn is logged, not fatal (the model and metrics are saved)."""
    drawn: dict[str, bytes] = {}

    def draw_architecture(path: str) -> None:
        png, graphviz = architecture.architecture_png(result.model)
        if not graphviz:
            log.info("plots/architecture.png: %s", architecture.NO_GRAPHVIZ)
        with open(path, "wb") as f:
            f.write(png)

    dynamics = result.dynamics
    todo = [("architecture.png", draw_architecture)] if config.output.plots else []
    if dynamics is not None:
        todo.append(("layer_dynamics.csv", lambda path: write_csv(dynamics.rows(), path)))
        todo += [(name, lambda path, draw=draw: draw(dynamics, path, config.name))
                 for name, draw in zip(plots.DYNAMICS_FILES, (
                     plots.dynamics_curves, plots.histogram_image, plots.histogram_gif))]
    for name, write in todo:
        try:
            write(run.local("plots", name))
        except Exception:  # noqa: BLE001 - a figure must not fail a run whose model is saved
            log.exception("plots/%s could not be drawn", name)
            continue
        run.publish("plots", name)
        with open(run.local("plots", name), "rb") as f:
            drawn[name] = f.read()
    return drawn


def write_saved_model(model, metadata: dict, run: RunDir) -> Optional[str]:
    """Export and publish `saved_model/`, file by file with `saved_model.pb` last (a reader
    never finds a SavedModel missing its variables); None, and one log line, when the model
    cannot be exported."""
    local = run.local(servable.FOLDER, "")
    # the names metrics.json and trainer.predict's columns use (data.target_names, the CSV's
    # label_columns, else target_K)
    reason = servable.export(model, metadata, local, metadata.get("target_names"))
    if reason:
        log.warning("saved_model/ not written (model.h5 is): %s", reason)
        return None
    for rel in servable.files(local):
        run.publish(servable.FOLDER, *rel.split(os.sep))
    return run.remote(servable.FOLDER)


def _trained_figures(run: RunDir) -> dict:
    """Wall time, resume point and training rate from the run's metrics.json, which a re-run
    that trains nothing keeps (its own seconds of evaluation are not the run's training time;
    `session_wall_time_s` gives them)."""
    path = run.fetch("metrics.json")
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            training = json.load(f).get("training", {})
    except (ValueError, UnicodeDecodeError, AttributeError):
        return {}
    return {k: training[k] for k in ("wall_time_s", "resumed_from_epoch", "train_samples_per_s",
                                     "mfu") if k in training}

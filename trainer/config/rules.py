"""What the config decides from several keys at once, after each key has been checked alone: the
defaults that depend on other keys (`with_defaults`: the task's loss and metrics, the format's
own image size), then every cross-field rule (`RULES`), each raising one UserError that names
the keys. Checked in this order by `loading.from_dict`; adding a rule is one `@_rule` function.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from trainer.config.schema import Config, DataConfig
from trainer.config.values import check_choice, invalid, parse_threshold
from trainer.data import augment_spec, formats
from trainer.errors import UserError

DEFAULT_LOSS = {"classification": "sparse_categorical_crossentropy", "regression": "rmse"}
DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mse", "mae"]}


def with_defaults(cfg: Config) -> Config:
    """The task's loss and metrics and the format's own image size, where the config left them
    empty, so that the config a run writes says what it used."""
    train = dataclasses.replace(
        cfg.train, loss=cfg.train.loss or DEFAULT_LOSS[cfg.task],
        metrics=cfg.train.metrics or list(DEFAULT_METRICS[cfg.task]))
    twin = train.monitor[len("val_"):]
    if ("val" in absent_splits(cfg.data) and train.monitor.startswith("val_")
            and twin in logged_quantities(dataclasses.replace(cfg, train=train))):
        # No validation split: early stopping and the best epoch follow the training quantity
        # (a name that is no quantity at all is left for the monitor rule to name).
        train = dataclasses.replace(train, monitor=twin)
    made = formats.FORMATS[cfg.data.format].image_size
    data = (cfg.data if cfg.data.image_size is not None or made is None
            else dataclasses.replace(cfg.data, image_size=list(made)))
    return dataclasses.replace(cfg, train=train, data=data)


# ----------------------------------------------------------------------------------------------
# Cross-field rules: each takes the config (defaults filled in) and its source, and raises one
# UserError when broken. Checked in this order by `loading.from_dict`.

Rule = Callable[[Config, str], None]
RULES: list[Rule] = []


def _rule(check: Rule) -> Rule:
    RULES.append(check)
    return check


SPLIT_FRACTIONS = {"val": "validation_split", "test": "test_split"}


def carved_splits(data: DataConfig) -> list[str]:
    """The evaluation splits carved out of `data.train`: those given neither a path nor rows,
    with a fraction above 0."""
    return [k for k in ("val", "test") if getattr(data, k) is None
            and getattr(data, f"{k}_rows") is None and getattr(data, SPLIT_FRACTIONS[k]) > 0]


def absent_splits(data: DataConfig) -> list[str]:
    """The evaluation splits the config leaves out: no path, no rows and a fraction of 0 (seed
    004's 70/30 train/test split has no validation split)."""
    return [k for k in ("val", "test") if getattr(data, k) is None
            and getattr(data, f"{k}_rows") is None and getattr(data, SPLIT_FRACTIONS[k]) == 0]


@_rule
def _data_matches_the_format(cfg: Config, source: str) -> None:
    d = cfg.data
    if not formats.FORMATS[d.format].reads_files:
        for key in ("train", "val", "test"):
            if getattr(d, key) is not None:
                raise UserError(f"data.{key} is set but data.format={d.format} draws its own "
                                f"data, {source}, expected no data.train, data.val or data.test "
                                "(or a format that reads files)")
    elif d.train is None:
        raise UserError(f"no training data given, data.train, {source}, expected a path or glob "
                        f"for data.format={d.format}")


@_rule
def _row_ranges_are_ranges(cfg: Config, source: str) -> None:
    for key in ("train", "val", "test"):
        rows = getattr(cfg.data, f"{key}_rows")
        if rows is not None and (len(rows) != 2 or not 0 <= rows[0] < rows[1]):
            raise UserError(f"invalid row range {rows}, data.{key}_rows, {source}, expected "
                            "[start, stop) with 0 <= start < stop")


@_rule
def _row_ranges_do_not_overlap(cfg: Config, source: str) -> None:
    d = cfg.data
    # Rows of the same files: `val_rows`/`test_rows` without their own path are rows of `train`.
    ranges = [(k, getattr(d, k) if k == "train" else (getattr(d, k) or d.train),
               getattr(d, f"{k}_rows")) for k in ("train", "val", "test")]
    for i, (a, files_a, rows_a) in enumerate(ranges):
        for b, files_b, rows_b in ranges[i + 1:]:
            if (rows_a is not None and rows_b is not None and files_a == files_b
                    and rows_a[0] < rows_b[1] and rows_b[0] < rows_a[1]):
                raise UserError(f"data.{a}_rows {rows_a} and data.{b}_rows {rows_b} overlap, "
                                f"{source}, expected disjoint row ranges (no sample in both "
                                f"{a} and {b})")


@_rule
def _carved_splits_leave_rows(cfg: Config, source: str) -> None:
    d = cfg.data
    total = d.validation_split + d.test_split
    if len(carved_splits(d)) == 2 and total >= 1:
        raise UserError(f"data.validation_split + data.test_split is {round(total, 6)}, {source}, "
                        "expected less than 1 (both are carved out of data.train, which must keep "
                        "rows to train on)")


@_rule
def _groups_exist_for_split_by_group(cfg: Config, source: str) -> None:
    d = cfg.data
    if d.split_by == "group" and carved_splits(d) and formats.FORMATS[d.format].groups is None:
        raise UserError(f"no group per sample (data.split_by=group), data.format={d.format}, "
                        f"{source}, expected {formats.groups_expected(d.format, d.group_key)}")


@_rule
def _regularisation_fits_the_task(cfg: Config, source: str) -> None:
    augment_spec.check_task(augment_spec.parse(cfg.data.augment, source=source), cfg.task, source)
    if cfg.train.label_smoothing and cfg.task != "classification":
        raise invalid(cfg.train.label_smoothing, "train.label_smoothing", source,
                      f"0 for task={cfg.task} (it smooths class labels; classification only)")


@_rule
def _class_weight_needs_classes(cfg: Config, source: str) -> None:
    if cfg.train.class_weight != "none" and cfg.task != "classification":
        raise invalid(cfg.train.class_weight, "train.class_weight", source,
                      f"none for task={cfg.task} (only classes are weighed)")


# Losses and metrics that fit each task's labels and outputs: classification trains on class
# indices (integers) against softmax probabilities, regression on numbers against numbers.
# Anything else fails inside `fit` (`categorical_crossentropy` wants one-hot labels, `auc` and
# `precision_at_k` want binary or ranked labels) or trains the wrong thing silently (`mse` on
# class indices).
TASK_LOSSES = {
    "classification": ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"),
    "regression": ("rmse", "mse", "mae", "mape", "msle", "huber", "log_cosh", "logcosh",
                   "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
                   "mean_squared_logarithmic_error", "MeanSquaredError", "MeanAbsoluteError",
                   "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "Huber", "LogCosh"),
}
TASK_METRICS = {
    "classification": ("accuracy", "acc", "sparse_categorical_accuracy",
                       "sparse_top_k_categorical_accuracy", "sparse_categorical_crossentropy",
                       "SparseCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
                       "SparseCategoricalCrossentropy"),
    "regression": ("mse", "mae", "mape", "msle", "mean_squared_error", "mean_absolute_error",
                   "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
                   "log_cosh", "logcosh", "MeanSquaredError", "MeanAbsoluteError",
                   "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
                   "RootMeanSquaredError", "LogCoshError"),
}


@_rule
def _loss_and_metrics_fit_the_task(cfg: Config, source: str) -> None:
    for key, value, allowed in (("train.loss", [cfg.train.loss], TASK_LOSSES[cfg.task]),
                                ("train.metrics", cfg.train.metrics, TASK_METRICS[cfg.task])):
        for name in value or ():
            if name not in allowed:
                raise invalid(name, key, source, f"one of {', '.join(allowed)} for "
                              f"task={cfg.task} (labels are "
                              f"{'class indices' if cfg.task == 'classification' else 'numbers'})")


@_rule
def _monitor_is_logged(cfg: Config, source: str) -> None:
    check_choice(cfg.train.monitor, tuple(logged_quantities(cfg)), "train.monitor", source)


@_rule
def _names_fit_the_task(cfg: Config, source: str) -> None:
    for key, task in (("target_names", "regression"), ("class_names", "classification")):
        names = getattr(cfg.data, key)
        if names is None:
            continue
        if cfg.task != task:
            raise invalid(names, f"data.{key}", source, f"nothing for task={cfg.task} (it "
                          f"names the outputs of task={task})")
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if not names or twice is not None or any(not n.strip() for n in names):
            raise invalid(names, f"data.{key}", source, "distinct, non-empty names")


@_rule
def _frame_context_needs_videos(cfg: Config, source: str) -> None:
    d = cfg.data
    if d.frame_context and formats.FORMATS[d.format].groups is None:
        raise UserError(f"no group per sample (data.frame_context={d.frame_context}), "
                        f"data.format={d.format}, {source}, expected "
                        f"{formats.groups_expected(d.format, d.group_key)} (the video of each "
                        "frame)")


@_rule
def _fold_is_a_fold(cfg: Config, source: str) -> None:
    d = cfg.data
    if d.fold is None:
        return
    if not (d.fold[1] >= 2 and d.fold[0] < d.fold[1]):
        raise invalid(d.fold, "data.fold", source, "[k, K] with K >= 2 and 0 <= k < K")
    if d.test is not None or d.test_rows is not None or not formats.FORMATS[d.format].reads_files:
        raise invalid(d.fold, "data.fold", source, "no data.test or data.test_rows and a "
                      "format that reads files (the fold is the test split, taken from "
                      "data.train)")


@_rule
def _threshold_is_a_rule(cfg: Config, source: str) -> None:
    if parse_threshold(cfg.eval.threshold) is None:
        raise invalid(cfg.eval.threshold, "eval.threshold", source, "a number from 0 to 1, f1, "
                      "precision@P or recall@R with P, R from 0 to 1 (e.g. precision@0.9)")


def logged_quantities(cfg: Config) -> list[str]:
    """What a run logs each epoch, as tf-keras names it: the loss and each metric, on the
    training data and then on the validation data (`val_`). A metric given by its class name
    (`AUC`) is logged under its snake_case name (`auc`)."""
    names = ["loss"]
    for metric in cfg.train.metrics or ():
        # A name tf-keras resolves to a function (`MSE`) is logged as given: allow both forms.
        names += [n for n in dict.fromkeys((metric, _keras_metric_name(metric))) if n not in names]
    return names + ([] if "val" in absent_splits(cfg.data) else [f"val_{n}" for n in names])


def _keras_metric_name(name: str) -> str:
    # tf-keras's own rule (generic_utils.to_snake_case); lower-case names are kept as given.
    words = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", words).lower()
"""Compile, fit with the project's callbacks, and evaluate.

Resumption follows one rule: a run directory that already has `checkpoints/state.json` continues
from the last checkpointed epoch up to `train.epochs` in total (seed 002's resume by name).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from trainer.runtime import devices, logs
from trainer.training.checkpoints import CheckpointStore, EpochCheckpoint, monitor_mode
from trainer.config import Config
from trainer.data import Splits
from trainer.data.pipeline import (PipelineOptions, data_errors, make_dataset, steps,
                                   window_rows)
from trainer.data.stats import channel_stats
from trainer.callbacks.histograms import HistogramLogger
from trainer.kerasflavor import keras, tf
from trainer.models import build_model, compile_model
from trainer.training.preemption import PreemptionBackup, SigtermWatch, prepare as prepare_backup
from trainer.callbacks.reporting import LiveTensorBoard
from trainer.storage.rundir import RunDir

log = logging.getLogger("trainer")


@dataclass
class TrainResult:
    model: keras.Model
    history: list[dict]
    resumed_from_epoch: int
    best_epoch: Optional[int]
    stopped_early: bool
    replicas: int = 1
    global_batch: int = 0
    runtime: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    test_predictions: Optional[np.ndarray] = None


class EpochTimer(keras.callbacks.Callback):
    """Adds the epoch's wall time and training throughput to the epoch logs."""

    def __init__(self, train_samples: int):
        super().__init__()
        self.train_samples = train_samples
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds = time.perf_counter() - self._start
            logs["epoch_time_s"] = seconds
            logs["samples_per_s"] = self.train_samples / seconds if seconds > 0 else 0.0


class EpochLog(keras.callbacks.Callback):
    """One log record per epoch, its metrics as fields (Cloud Logging reads them as JSON)."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        text = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
        log.info("epoch %d/%d %s", epoch + 1, self.total_epochs, text,
                 extra={"json_fields": {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}})


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, scaled so that a balanced data set gets weight 1 everywhere."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def pipeline_options(config: Config, batch_size: int, shuffle: bool) -> PipelineOptions:
    """The input pipeline's settings from the config; evaluation neither shuffles nor augments."""
    d = config.data
    return PipelineOptions(batch_size=batch_size, shuffle=shuffle, seed=config.train.seed,
                           window=d.shuffle_window, block=d.shuffle_block, threads=d.read_threads,
                           augment=tuple(d.augment) if shuffle else ())


def train_and_evaluate(config: Config, splits: Splits, run: RunDir,
                       strategy: tf.distribute.Strategy,
                       extra_callbacks: Sequence[keras.callbacks.Callback] = (),
                       sigterm: Optional[SigtermWatch] = None) -> TrainResult:
    """Train (or resume) and evaluate; `extra_callbacks` are the platform's (e.g. the tuner's).
    With `sigterm`, a preemption during `fit` saves a backup and ends the process (see
    `trainer.training.preemption`)."""
    t = config.train
    acc = devices.accelerators()
    policy = devices.precision_policy(t.mixed_precision, acc)
    xla = devices.use_xla(t.jit_compile, acc)
    replicas = strategy.num_replicas_in_sync
    global_batch = t.batch_size * replicas
    learning_rate = t.learning_rate * (replicas if t.scale_lr_with_replicas else 1)
    log.info("devices: %s; precision policy: %s; XLA: %s; replicas in sync: %d", acc.describe(),
             policy, "on" if xla else "off", replicas)
    log.info("global batch: %d (%d per replica x %d); learning rate: %g%s", global_batch,
             t.batch_size, replicas, learning_rate,
             " (scaled with replicas)" if t.scale_lr_with_replicas and replicas > 1 else "")
    train_opts = pipeline_options(config, global_batch, shuffle=True)
    eval_opts = pipeline_options(config, global_batch, shuffle=False)
    mean, var = None, None
    if config.data.standardize:  # one streaming pass; the model stores the result
        chunks = splits.train.view.iter_chunks(window_rows(splits.train.view, train_opts))
        mean, var = channel_stats(x for x, _ in chunks)
    with strategy.scope():
        model = build_model(config, splits.input_shape, splits.num_outputs, mean, var, policy=policy)
        compile_model(model, config, learning_rate=learning_rate, jit_compile=xla)
        store = CheckpointStore(run, model, t.monitor)
        resumed = store.load()
    start_epoch = int(store.state["epoch"])
    steps_per_epoch = steps(splits.train.view, train_opts)
    start_step = 0
    if sigterm is not None and start_epoch < t.epochs and not store.state.get("stopped_early"):
        start_epoch, start_step = prepare_backup(run, start_epoch, steps_per_epoch)
    if start_step:
        log.info("resuming %s from its backup in epoch %d, at batch %d of %d", run.url,
                 start_epoch + 1, start_step + 1, steps_per_epoch)
    elif resumed:
        log.info("resuming %s from epoch %d (of %d)", run.url, start_epoch, t.epochs)

    train_ds = make_dataset(splits.train.view, splits.train.y, train_opts, first_epoch=start_epoch,
                            epochs=max(t.epochs - start_epoch, 1), first_step=start_step)
    val_ds = make_dataset(splits.val.view, splits.val.y, eval_opts)
    weights = None
    if config.task == "classification" and t.class_weight == "balanced":
        weights = class_weights(splits.train.y, splits.num_outputs)
        log.info("class weights: %s", {splits.class_names[i]: round(w, 3) for i, w in weights.items()})

    early = None
    callbacks: list = [EpochTimer(len(splits.train)), keras.callbacks.TerminateOnNaN(),
                       EpochCheckpoint(store)]
    if t.early_stopping_patience > 0:
        early = keras.callbacks.EarlyStopping(monitor=t.monitor, patience=t.early_stopping_patience,
                                              mode=monitor_mode(t.monitor))
        callbacks.append(early)
    if t.histograms:
        probe = np.arange(min(t.batch_size, len(splits.train)))  # one fixed batch, read alone
        callbacks.append(HistogramLogger(run.live_dir("tensorboard/histograms"),
                                         splits.train.view.take(probe).astype(np.float32),
                                         splits.train.y[probe]))
    callbacks += [LiveTensorBoard(run), EpochLog(t.epochs), *extra_callbacks]
    if sigterm is not None:
        callbacks.append(PreemptionBackup(run, sigterm, steps_per_epoch, t.backup_every_steps))
    fitting = sigterm.deferred() if sigterm is not None else contextlib.nullcontext()

    if store.state.get("stopped_early"):
        log.info("run stopped early at epoch %d before; not training further", start_epoch)
    elif start_epoch >= t.epochs:
        log.info("already trained %d of %d epochs; evaluating only", start_epoch, t.epochs)
    else:
        with data_errors(), fitting:
            model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, initial_epoch=start_epoch,
                      steps_per_epoch=steps_per_epoch,
                      class_weight=weights, callbacks=callbacks,
                      verbose=1 if logs.interactive() else 0)
        if early is not None and early.stopped_epoch > 0:
            store.state["stopped_early"] = True
            store.write_state()
            log.info("early stopping after epoch %d: %s did not improve for %d epochs",
                     early.stopped_epoch + 1, t.monitor, t.early_stopping_patience)

    best_epoch = None
    if t.restore_best:
        with strategy.scope():
            best_epoch = store.restore_best()
        if best_epoch is not None:
            log.info("using the weights of the best epoch, %d (%s)", best_epoch, t.monitor)

    result = TrainResult(model=model, history=list(store.state["history"]),
                         resumed_from_epoch=start_epoch if resumed else 0, best_epoch=best_epoch,
                         stopped_early=bool(store.state.get("stopped_early")),
                         replicas=replicas, global_batch=global_batch,
                         runtime={"precision_policy": policy, "xla": xla,
                                  "learning_rate": learning_rate, "devices": acc.describe()})
    test_ds = make_dataset(splits.test.view, splits.test.y, eval_opts)
    for name, ds in (("val", val_ds), ("test", test_ds)):
        with data_errors():
            scores = model.evaluate(ds, return_dict=True, verbose=0)
        result.metrics[name] = {k: float(v) for k, v in scores.items()}
        log.info("%s: %s", name, " ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    if any(not math.isfinite(v) for v in result.metrics["test"].values()):
        log.warning("test metrics are not finite")
    with data_errors():
        result.test_predictions = model.predict(test_ds, verbose=0)
    return result

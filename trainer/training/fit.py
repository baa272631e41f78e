"""Train (or resume) and evaluate, as the list of its steps.

Resumption follows one rule: a run directory that already has `checkpoints/state.json` continues
from the last checkpointed epoch up to `train.epochs` in total (seed 002's resume by name), or
from its preemption backup inside the next epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from trainer.config import Config
from trainer.data import Splits, augment_spec
from trainer.data.pipeline import data_errors, make_dataset, pipeline_options, steps
from trainer.data.shares import WHOLE, Share, share_of
from trainer.data.windows import PipelineOptions, RowsRead, window_rows
from trainer.data.finite import Tally
from trainer.data.stats import channel_stats, target_stats
from trainer.evaluation import probabilities
from trainer.kerasflavor import keras, tf
from trainer.callbacks.epoch_timer import EpochTimer
from trainer.callbacks.histograms import Dynamics, HistogramLogger
from trainer import init_from
from trainer.models import build_model
from trainer.runtime import devices, logs
from trainer.outputs import modelfile
from trainer.storage.rundir import RunDir
from trainer.training.callback_list import fit_callbacks
from trainer.training.checkpoints import CheckpointStore
from trainer.training.compiling import compile_model
from trainer.training.class_weights import training_class_weights, with_sample_weights
from trainer.training.evaluation import evaluate, log_per_target, per_target_scores, predict
from trainer.training.preemption import SigtermWatch
from trainer.training.resume import Start, change_lines, check_continuity, identity, resume_point
from trainer.training import ema, finetune, schedule, utilisation
from trainer.training.scaling import Scaling, plan_scaling

log = logging.getLogger("trainer")


@dataclass
class TrainResult:
    model: keras.Model
    history: list[dict]
    resumed_from_epoch: Optional[int]  # None: a fresh run
    best_epoch: Optional[int]
    stopped_early: bool
    replicas: int = 1
    global_batch: int = 0
    runtime: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    test_predictions: Optional[np.ndarray] = None
    trained: bool = True  # whether this session trained any epoch (a finished run's re-run does not)
    changes: list[str] = field(default_factory=list)  # "from epoch N: key old -> new"
    earlier_wall_time_s: float = 0.0  # the sessions before this one (their checkpoint state)
    dynamics: Optional[Dynamics] = None  # train.histograms: per-layer figures of this session
    kept: dict = field(default_factory=dict)  # keys changed too late to take effect: their values
    judged: Optional[probabilities.Judged] = None  # classification: curves, threshold, calibration


def train_and_evaluate(config: Config, splits: Splits, run: RunDir,
                       strategy: tf.distribute.Strategy,
                       extra_callbacks: Sequence[keras.callbacks.Callback] = (),
                       sigterm: Optional[SigtermWatch] = None,
                       started: Optional[float] = None) -> TrainResult:
    """Train (or resume) and evaluate; `extra_callbacks` are the platform's (e.g. the tuner's).
    With `sigterm`, a preemption during `fit` saves a backup and ends the process (see
    `trainer.training.preemption`). `started`: when the session began (`time.perf_counter()`),
    from which the checkpoint state counts the run's wall time."""
    t = config.train
    scaling = plan_scaling(t, strategy)
    if ":" in config.model.name:  # the user's builder: what the run's end needs, checked first
        check_builder(config, splits, scaling)
    train_opts = pipeline_options(config.data, t.seed, scaling.global_batch, shuffle=True,
                                  classes=splits.num_outputs)
    eval_opts = pipeline_options(config.data, t.seed, scaling.global_batch, shuffle=False)
    steps_per_epoch = steps(splits.train.view, train_opts, devices.input_replicas(strategy))
    store, resumed, usage = build_and_restore(config, splits, run, strategy, scaling,
                                              standardization_stats(config, splits, train_opts),
                                              steps_per_epoch, started)
    start = resume_point(run, store, t.epochs, steps_per_epoch, sigterm, resumed)
    # Evaluation data, usually a small part, is read whole by each worker, which evaluates its
    # own part of every batch (the strategy splits them): the metrics cover every row once.
    held = {k: make_dataset(p.view, p.y, eval_opts, split=k)
            for k, p in splits.present.items() if k != "train"}
    val_ds = held.get("val")
    rows_read = RowsRead()
    callbacks = fit_callbacks(config, splits, run, store, steps_per_epoch, sigterm,
                              extra_callbacks, rows_read)
    trained = fit(store, config, splits, train_opts, val_ds, start, steps_per_epoch, callbacks,
                  sigterm, strategy, rows_read)
    usage.measured([c for c in callbacks if isinstance(c, EpochTimer)][0].train_rates,
                   scaling.replicas)
    best_epoch = restore_best_epoch(config, store, strategy)
    if best_epoch is None and not trained:  # `fit` puts `train.ema`'s average in at its end
        with strategy.scope():
            ema.finalize(store.model)
    metrics = evaluate(store.model, held)
    # Classification: calibration, curves and the threshold (`eval`), which may change the model.
    judged = probabilities.judge_splits(config, splits, store.model, held, predict)
    if judged is not None:
        for key, value in judged.metrics.items():
            metrics[key] = {**metrics.get(key, {}), **value} if key in held else value
    # The final figures' split: test, or validation where there is no test split.
    predictions = (judged.probabilities.get(splits.held_out) if judged is not None
                   else predict(store.model, held[splits.held_out]) if splits.held_out else None)
    if predictions is not None and splits.task == "regression":
        log_per_target(splits.held_out, per_target_scores(
            getattr(splits, splits.held_out).y, predictions, target_names(splits)))
    return TrainResult(model=judged.model if judged is not None else store.model, history=list(store.state["history"]),
                       resumed_from_epoch=start.epoch if start.resumed else None,
                       best_epoch=best_epoch,
                       stopped_early=bool(store.state.get("stopped_early")),
                       replicas=scaling.replicas, global_batch=scaling.global_batch,
                       runtime={**scaling.runtime(), **usage.runtime(),
                                **({"init_from": store.state["init_from"]}
                                   if store.state.get("init_from") else {})},
                       metrics=metrics,
                       test_predictions=predictions,
                       trained=trained, changes=change_lines(store.state.get("changes", [])),
                       kept={} if trained else {c["key"]: c["from"] for c in store.pending_changes},
                       earlier_wall_time_s=store.earlier_wall_time_s,
                       dynamics=next((c.dynamics for c in callbacks
                                      if isinstance(c, HistogramLogger) and c.dynamics.epochs),
                                     None),
                       judged=judged)


def check_builder(config: Config, splits: Splits, scaling: Scaling) -> None:
    """Build the user's model as training will (its precision policy) and refuse it when the
    saved model.h5 could not be written and loaded back, before the data's statistics pass and
    the first epoch, instead of after the last one. The weights this draws are reseeded away,
    so the model that trains starts as it would without the check."""
    model = build_model(config, splits.input_shape, splits.num_outputs,
                        policy=scaling.precision_policy)
    modelfile.round_trip(model, config.model.name)
    devices.seed_everything(config.train.seed, scaling.deterministic)


def standardization_stats(config: Config, splits: Splits, opts: PipelineOptions
                          ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Per-channel mean and variance of the training split, in one streaming pass, for the
    model's standardise layer (which stores them); (None, None) without `data.standardize`.
    The pass sees every training value, so it counts NaN and Inf over the whole split and stops
    before training under `data.nonfinite: error` (or computes the statistics of the zeroed
    data that training will see)."""
    if not config.data.standardize:
        return None, None
    view = splits.train.view
    tally = Tally("train", config.data.nonfinite)

    def checked():
        at = 0
        for x, _ in view.iter_chunks(window_rows(view, opts)):
            x = tally.scan(x, lambda i, start=at: view.locate(start + i))
            at += len(x)
            if tally.policy == "zero" or not tally.found:  # counting goes on; statistics stop
                yield x

    stats = channel_stats(checked())
    tally.check()
    return stats


def standardized_targets(config: Config, splits: Splits
                         ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Regression with `data.standardize_targets`: each target's mean and variance over the
    training split only (validation and test never shape the model), logged; else (None, None)."""
    if config.task != "regression" or not config.data.standardize_targets:
        return None, None
    mean, var = target_stats(splits.train.y)
    log.info("targets standardised with the training split's mean and std: %s",
             ", ".join(f"{n} {m:.4g} ± {v ** 0.5:.4g}"
                       for n, m, v in zip(target_names(splits), mean, var)))
    return mean, var


def target_names(splits: Splits) -> list[str]:
    return splits.target_names or [f"target_{k}" for k in range(splits.num_outputs)]


@dataclass
class DeviceUse:
    """The model's cost and the device's peak, decided before `fit`; the achieved utilisation
    once `fit` has run (see `trainer.training.utilisation`)."""

    train_flops_per_sample: int
    matmul_peak_flops: float
    steps_per_execution: int
    train_samples_per_s: Optional[float] = None
    replicas: int = 1

    def measured(self, epoch_rates: Sequence[float], replicas: int) -> None:
        """The run's `train_samples_per_s`: the median of the per-epoch figure of the same name
        (training steps alone) over this `fit`'s epochs, the first left out when there are more
        (for its tracing); per replica for the utilisation; logged with the utilisation."""
        rates = list(epoch_rates[1:] or epoch_rates)
        if not rates:
            return
        self.train_samples_per_s = float(np.median(rates))
        self.replicas = replicas
        which = (f"median of this session's {len(rates)} epochs after its first"
                 if len(epoch_rates) > 1 else "its one epoch")
        log.info("train_samples_per_s %.0f (training steps alone, %s): %.1f%% of the %s matmul "
                 "peak (model FLOPs utilisation)", self.train_samples_per_s, which,
                 100 * self.mfu(), _gflops(self.matmul_peak_flops))

    def mfu(self) -> float:
        """Per device: the rate of each replica against one device's peak."""
        return utilisation.utilisation(self.train_flops_per_sample,
                                       (self.train_samples_per_s or 0.0) / self.replicas,
                                       self.matmul_peak_flops)

    def runtime(self) -> dict:
        out = {"train_flops_per_sample": self.train_flops_per_sample,
               "matmul_peak_flops": self.matmul_peak_flops,
               "steps_per_execution": self.steps_per_execution}
        if self.train_samples_per_s is not None:
            out.update(train_samples_per_s=self.train_samples_per_s,
                       mfu=self.mfu())
        return out


def _gflops(flops: float) -> str:
    return f"{flops / 1e9:,.0f} GFLOP/s"


def build_and_restore(config: Config, splits: Splits, run: RunDir,
                      strategy: tf.distribute.Strategy, scaling: Scaling,
                      stats: tuple[Optional[np.ndarray], Optional[np.ndarray]],
                      steps_per_epoch: int, started: Optional[float] = None
                      ) -> tuple[CheckpointStore, bool, DeviceUse]:
    """The compiled model inside its checkpoint store, restored from the run's last epoch
    checkpoint when there is one (the second value says whether there was), and what it costs
    the device."""
    t = config.train
    mean, var = stats
    mixed_labels = augment_spec.mixes_labels(augment_spec.parse(config.data.augment))
    with strategy.scope():
        model = build_model(config, splits.input_shape, splits.num_outputs, mean, var,
                            policy=scaling.precision_policy,
                            targets=standardized_targets(config, splits))
        flops = utilisation.train_flops_per_sample(model)
        peak = utilisation.matmul_peak(scaling.precision_policy)
        several_workers = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        usage = DeviceUse(flops, peak, utilisation.steps_per_execution(
            t.steps_per_execution, flops, scaling.per_replica_batch, peak, several_workers))
        log.info("model: %.3g MFLOP per training sample; matmul peak (%s): %s; steps per "
                 "execution: %d; learning rate schedule: %s", flops / 1e6,
                 scaling.precision_policy, _gflops(peak), usage.steps_per_execution,
                 t.lr_schedule)
        committed = run.committed_epoch()
        done = committed or 0
        init = init_from.start(model, config, run, resuming=committed is not None)
        taken = init["taken"] if init else None

        def compile_phase(epochs_done: int) -> float:
            """Compile for the fine-tuning phase after `epochs_done`; returns its peak rate."""
            phase, peak = finetune.learning_rate_config(config, scaling.learning_rate, epochs_done)
            compile_model(model, t, mixed_labels, jit_compile=scaling.xla,
                          learning_rate=schedule.learning_rate(phase, peak, steps_per_epoch),
                          steps_per_execution=usage.steps_per_execution)
            return peak

        if finetune.active(config):  # frozen or not as the epochs trained say, before loading
            finetune.set_phase(model, config, finetune.frozen_at(config, done), taken)
        peak = compile_phase(done)
        now = identity(config, splits.input_shape, splits.class_names)
        store = CheckpointStore(run, model, config.train.monitor, now, started)
        resumed = store.load(check=lambda state: check_continuity(run, state, now))
        if init:
            store.state["init_from"] = init  # kept with every epoch: a resumed run reports it
        if t.freeze_epochs and 0 < t.freeze_epochs < t.epochs:
            store.finetune = finetune.Plan(t.freeze_epochs, lambda: compile_phase(t.freeze_epochs),
                                           taken)
            if resumed and store.state["epoch"] == t.freeze_epochs:
                store.finetune.recompile()  # the unfreeze's fresh optimizer, as in one session
        if resumed and t.lr_schedule == "constant":
            # The optimizer's checkpoint holds the old rate; a re-run may set another. (A
            # schedule computes its rate from the step; the plateau's rate is its own state.)
            model.optimizer.learning_rate.assign(peak)
    return store, resumed, usage


def fit(store: CheckpointStore, config: Config, splits: Splits, train_opts: PipelineOptions,
        val_ds: Optional[tf.data.Dataset], start: Start, steps_per_epoch: int,
        callbacks: Sequence[keras.callbacks.Callback], sigterm: Optional[SigtermWatch],
        strategy: tf.distribute.Strategy, rows_read: Optional[RowsRead] = None) -> bool:
    """Train from `start` to `train.epochs`, unless the run is complete or stopped early; an
    early stop is recorded in the checkpoint state, so a re-run trains no further. Returns
    whether any epoch was trained; the changes the re-run brings are recorded from its first."""
    t = config.train
    late = "; the changed " + ", ".join(c["key"] for c in store.pending_changes) + \
        " take no effect" if store.pending_changes else ""
    if start.stopped_early:
        log.info("run stopped early at epoch %d before; not training further%s", start.epoch, late)
        return False
    if start.epoch >= t.epochs:
        log.info("already trained %d of %d epochs; evaluating only%s", start.epoch, t.epochs, late)
        return False
    for change in store.pending_changes:
        store.state["changes"].append({"epoch": start.epoch + 1, **change})
    for line in change_lines(store.state["changes"][len(store.state["changes"])
                                                    - len(store.pending_changes):]):
        log.info("resumed with a change: %s", line)
    train_ds, class_weight = training_input(strategy, splits, train_opts, start, t.epochs,
                                            training_class_weights(config, splits), rows_read)
    fitting = sigterm.deferred() if sigterm is not None else contextlib.nullcontext()
    plan = getattr(store, "finetune", None)  # train.freeze_epochs: the unfreeze inside this fit
    end = plan.unfreeze_epoch if plan and start.epoch < plan.unfreeze_epoch else t.epochs
    with data_errors(), fitting:
        store.model.fit(train_ds, validation_data=val_ds, epochs=end,
                        initial_epoch=start.epoch, steps_per_epoch=steps_per_epoch,
                        class_weight=class_weight, callbacks=callbacks,
                        verbose=1 if logs.interactive() else 0)
        preempted = sigterm is not None and sigterm.received.is_set()
        if end < t.epochs and not store.model.stop_training and not preempted:
            # The unfreeze, as a resume from the frozen phase's last checkpoint would do it.
            plan.unfreeze(store.model, config)
            after = dataclasses.replace(start, epoch=end, step=0)
            train_ds, class_weight = training_input(strategy, splits, train_opts, after, t.epochs,
                                                    training_class_weights(config, splits),
                                                    rows_read)
            for callback in callbacks:
                if hasattr(callback, "resume_from"):
                    callback.resume_from(store.state["history"])
            store.model.fit(train_ds, validation_data=val_ds, epochs=t.epochs,
                            initial_epoch=end, steps_per_epoch=steps_per_epoch,
                            class_weight=class_weight, callbacks=callbacks,
                            verbose=1 if logs.interactive() else 0)
    stopped = [c.stopped_epoch for c in callbacks
               if isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0]
    if stopped:
        store.state["stopped_early"] = True
        store.write_state()
        log.info("early stopping after epoch %d: %s did not improve for %d epochs",
                 stopped[0] + 1, t.monitor, t.patience())
    return True


def training_input(strategy: tf.distribute.Strategy, splits: Splits, opts: PipelineOptions,
                   start: Start, epochs: int, class_weight: Optional[dict[int, float]],
                   rows_read: Optional[RowsRead]):
    """The training batches from `start` to `epochs`, and the class weights `fit` still has to
    apply. One machine: one pipeline, whose global batches the strategy splits between its
    replicas. Several workers: one pipeline per worker, made by the strategy from its input
    context, each reading only its share of every epoch (the weights are applied in it)."""
    view, y = splits.train.view, splits.train.y

    def pipeline(share: Share) -> tf.data.Dataset:
        return make_dataset(view, y, opts, first_epoch=start.epoch, epochs=epochs - start.epoch,
                            first_step=start.step, split="train", share=share,
                            rows_read=rows_read)

    if devices.input_replicas(strategy) == 1:
        return pipeline(WHOLE), class_weight

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = pipeline(share_of(context))
        return ds if class_weight is None else with_sample_weights(ds, class_weight)

    return strategy.distribute_datasets_from_function(per_worker), None


def restore_best_epoch(config: Config, store: CheckpointStore,
                       strategy: tf.distribute.Strategy) -> Optional[int]:
    """With `train.restore_best`, load the best epoch's weights (from the checkpoint state, so
    a resumed run picks the same epoch); returns that epoch, or None."""
    if not config.train.restore_best:
        return None
    with strategy.scope():
        best_epoch = store.restore_best()
    if best_epoch is not None:
        log.info("using the weights of the best epoch, %d (%s)", best_epoch, config.train.monitor)
    return best_epoch

"""The training steps alone, on the embedded demo data: each one can be checked without a `fit`."""

import optuna
import pytest

from trainer import config
from trainer.callbacks.early_stopping import ResumableEarlyStopping
from trainer.callbacks.epoch_checkpoint import EpochCheckpoint
from trainer.callbacks.preemption_backup import PreemptionBackup
from trainer.callbacks.pruning import PruneOnEpoch
from trainer.data import load_splits
from trainer.kerasflavor import tf
from trainer.models import build_model
from trainer.storage.rundir import RunDir
from trainer.training.callback_list import fit_callbacks
from trainer.training.checkpoints import CheckpointStore
from trainer.training.class_weights import training_class_weights
from trainer.training.preemption import SigtermWatch
from trainer.training.resume import Start, resume_point
from trainer.training.scaling import plan_scaling


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = config.load(None, ["train.early_stopping_patience=3", "model.name=tiny_cnn"],
                      output_dir=str(tmp_path_factory.mktemp("out")))
    return cfg, load_splits(cfg)


def _store(cfg, splits):
    run = RunDir(cfg.output.dir, cfg.name)
    model = build_model(cfg, splits.input_shape, splits.num_outputs)
    return run, CheckpointStore(run, model, cfg.train.monitor)


def test_one_replica_keeps_the_batch_and_the_learning_rate(demo):
    cfg, _ = demo
    scaling = plan_scaling(cfg.train, tf.distribute.get_strategy())
    assert (scaling.replicas, scaling.global_batch) == (1, cfg.train.batch_size)
    assert scaling.learning_rate == cfg.train.learning_rate
    assert set(scaling.runtime()) == {"precision_policy", "xla", "learning_rate", "devices"}


def test_a_run_without_a_checkpoint_starts_at_the_beginning(demo):
    cfg, splits = demo
    run, store = _store(cfg, splits)
    assert not store.load()
    start = resume_point(run, store, cfg.train.epochs, 10, SigtermWatch(), resumed=False)
    assert start == Start(epoch=0, step=0, resumed=False, stopped_early=False)


def test_callbacks_with_state_are_given_the_checkpointed_history(demo):
    cfg, splits = demo
    run, store = _store(cfg, splits)
    store.state["history"] = [{"epoch": 1, "val_loss": 0.4}]
    prune = PruneOnEpoch(optuna.create_study().ask(), "val_loss")  # the tuner's, passed in
    callbacks = fit_callbacks(cfg, splits, run, store, 10, SigtermWatch(), extra=[prune])
    kinds = [type(c) for c in callbacks]
    early = callbacks[kinds.index(ResumableEarlyStopping)]
    assert early.history == store.state["history"] and early.patience == 3
    assert prune.history == store.state["history"]
    # early stopping reads the epoch after it is checkpointed; the backup comes last
    assert kinds.index(EpochCheckpoint) < kinds.index(ResumableEarlyStopping)
    assert kinds[-1] is PreemptionBackup


def test_no_early_stopping_and_no_backup_when_not_asked(demo):
    cfg, splits = demo
    cfg = config.load(None, ["train.early_stopping_patience=0"], output_dir=cfg.output.dir)
    run, store = _store(cfg, splits)
    kinds = [type(c) for c in fit_callbacks(cfg, splits, run, store, 10, sigterm=None)]
    assert ResumableEarlyStopping not in kinds and PreemptionBackup not in kinds


def test_class_weights_only_when_balanced_is_asked(demo):
    cfg, splits = demo
    assert training_class_weights(cfg, splits) is None
    balanced = config.load(None, ["train.class_weight=balanced"], output_dir=cfg.output.dir)
    weights = training_class_weights(balanced, splits)
    assert sorted(weights) == list(range(splits.num_outputs)) and min(weights.values()) > 0

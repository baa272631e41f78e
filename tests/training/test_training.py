"""The training steps alone, on the embedded demo data: each one can be checked without a `fit`."""

import optuna
import pytest

from trainer.errors import UserError
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
from trainer.training.schedule import learning_rate
from trainer.training.utilisation import matmul_peak, steps_per_execution


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
    size = cfg.train.batch_size
    assert (scaling.replicas, scaling.per_replica_batch, scaling.global_batch) == (1, size, size)
    assert scaling.learning_rate == cfg.train.learning_rate
    assert set(scaling.runtime()) == {"precision_policy", "deterministic", "xla", "learning_rate",
                                      "devices"}


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


def test_steps_per_execution_follows_the_predicted_step_time():
    # 1 GFLOP a step at half of a 10 GFLOP/s peak: 0.2 s, one step per call
    assert steps_per_execution("auto", 10**7, 100, 1e10) == 1
    # a hundredth of that: as many steps as fill 0.2 s (100), but at most 64
    assert steps_per_execution("auto", 10**5, 100, 1e10) == 64
    assert steps_per_execution("auto", 10**5, 1000, 1e10) == 10
    assert steps_per_execution(3, 1, 1, 1.0) == 3
    # workers measure their own peaks, and must agree: one step per call
    assert steps_per_execution("auto", 10**5, 1000, 1e10, several_workers=True) == 1


def test_the_matmul_peak_is_measured_once_per_precision():
    first = matmul_peak("float32")
    assert first > 1e8 and matmul_peak("float32") is first


def test_the_cosine_schedule_warms_up_for_an_epoch_then_decays_to_zero():
    train = config.load(None, ["train.epochs=20", "train.lr_schedule=cosine"]).train
    lr = learning_rate(train, 0.01, steps_per_epoch=50)
    assert float(lr(0)) == pytest.approx(0.001) and float(lr(50)) == pytest.approx(0.01)
    assert float(lr(525)) == pytest.approx(0.005, rel=0.01) and float(lr(1000)) == pytest.approx(0)
    short = config.load(None, ["train.epochs=2", "train.lr_schedule=cosine"]).train
    # a short run warms up for a tenth of it
    assert learning_rate(short, 0.01, steps_per_epoch=50).warmup_steps == 10
    constant = config.load(None, []).train  # the default
    assert learning_rate(constant, 0.01, steps_per_epoch=50) == 0.01


@pytest.mark.parametrize("epochs, patience", [(10, 10), (30, 10), (100, 25)])
def test_auto_patience_grows_with_the_run(epochs, patience):
    assert config.load(None, [f"train.epochs={epochs}"]).train.patience() == patience
    assert config.load(None, ["train.early_stopping_patience=4"]).train.patience() == 4


def test_a_word_other_than_auto_is_refused_for_a_number_key():
    with pytest.raises(UserError, match="steps_per_execution.*expected one of auto"):
        config.load(None, ["train.steps_per_execution=fast"])


def test_precision_off_is_read_as_the_word_it_is():
    assert config.load(None, ["train.mixed_precision=off"]).train.mixed_precision == "off"

"""The tf-keras and TensorFlow internals of `trainer.kerasinternals`, on real objects of the
installed versions: a tf-keras bump that renames or removes one fails here, naming it and the
version, before a preempted job or a resumed run finds out."""

import numpy as np
import pytest
import tf_keras

from trainer import kerasinternals as internals
from trainer.kerasflavor import keras, tf
from trainer.runtime import devices

VERSION = tf_keras.__version__


class Subclassed(keras.Model):
    def call(self, x):
        return x


@pytest.fixture(scope="module")
def owners(tmp_path_factory):
    """One real instance per owner class that `INTERNALS` names, as a run makes them."""
    tmp = tmp_path_factory.mktemp("internals")
    devices.seed_everything(0, deterministic=False)  # as a run does: dropout's generator is a variable
    inner = keras.Sequential([keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dropout(0.5)], name="inner")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32), epochs=1, verbose=0)
    dropout = inner.layers[-1]
    backup = keras.callbacks.BackupAndRestore(str(tmp / "backup"), save_freq=10 ** 9)
    backup.set_model(model)
    backup.on_train_begin()
    backup.on_epoch_begin(0)
    state = getattr(backup, "_training_state", None)
    handler = None
    if state is not None:
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            None, state.write_checkpoint_manager,
            termination_config=tf.distribute.experimental.TerminationConfig(
                termination_watcher_fn=lambda: False, exit_fn=lambda: None, grace_period=0))
    board = keras.callbacks.TensorBoard(str(tmp / "tensorboard"))
    board.set_model(model)
    board.on_train_begin()
    yield {"model": model, "backup": backup, "handler": handler, "board": board,
           "BaseRandomLayer": dropout,
           "RandomGenerator": getattr(dropout, "_random_generator", None),
           "BackupAndRestore": backup, "WorkerTrainingState": state,
           "PreemptionCheckpointHandler": handler, "TensorBoard": board, "Functional": model,
           "Node": next((n for depth in getattr(model, "_nodes_by_depth", {}).values()
                         for n in depth if n.layer is inner), None),
           "LossesContainer": model.compiled_loss}
    board.on_train_end()
    if handler is not None:
        internals.stop_watching(handler)


@pytest.mark.parametrize("version", [VERSION])  # the test's id names the tf-keras it checked
def test_every_internal_is_where_the_adapter_reaches_it(owners, version):
    missing = []
    for internal in internals.INTERNALS:
        owner, name = internal.split(".")
        if owners[owner] is None or not hasattr(owners[owner], name):
            missing.append(internal)
    assert not missing, (f"tf-keras {version} lacks {', '.join(missing)}, which "
                         "trainer/kerasinternals.py relies on: adapt it there, or keep the "
                         "tf-keras version in constraints.txt")


def test_the_adapter_works_on_real_objects(owners):
    model, backup = owners["model"], owners["backup"]
    assert len(internals.dropout_generators(model)) == 1, (
        f"tf-keras {VERSION}: a built Dropout layer's generator is no longer at "
        "layer._random_generator._generator: checkpoints would lose the dropout state, and a "
        "resumed run would differ from an uninterrupted one")
    assert internals.backup_epoch(backup) == 0
    for batch in (3, 0, 7):
        internals.set_backup_batch(backup, batch)
        assert internals.backup_point(backup) == (0, batch)
    assert isinstance(internals.backup_state(backup).write_checkpoint_manager,
                      tf.train.CheckpointManager)
    assert internals.tensorboard_writers(owners["board"])  # on_train_begin opened "train"
    nodes = list(internals.graph_nodes(model))
    assert {n.layer.name for n in nodes} == {layer.name for layer in model.layers}
    assert internals.graph_nodes(Subclassed()) is None  # not a graph of layers
    made = keras.metrics.Mean(name="loss")
    internals.replace_loss_tracker(model, lambda: made, keras.metrics.Mean)
    assert model.compiled_loss._total_loss_mean is made


def test_a_checkpoints_weights_read_back_under_another_optimizer(tmp_path):
    # as the best epoch of a frozen phase reads back after the unfreeze's new optimizer
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "weights"))
    saved = [w.numpy() for w in model.weights]
    for w in model.weights:
        w.assign(tf.zeros_like(w))
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    tf.train.Checkpoint(model=internals.weights_only(model)).read(path).expect_partial()
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(saved, model.weights))


def test_a_missing_internal_is_named_with_the_version():
    fresh = keras.callbacks.BackupAndRestore("unused")  # its state exists only once training began
    with pytest.raises(internals.KerasInternalMissing) as caught:
        internals.backup_state(fresh)
    assert f"tf-keras {VERSION}: BackupAndRestore._training_state is gone" in str(caught.value)

"""Every private part of tf-keras and TensorFlow the project relies on, and nothing else.

tf-keras offers no public way to do a few things a run needs: carry the dropout layers' random
state in a checkpoint (a resumed run drops the same units), save and restore a mid-epoch
backup at a batch of our choosing, stop a preemption handler's watcher thread, flush the
TensorBoard callback's writers before an upload, replay a model's graph to flatten it, and make
the `rmse` loss figure whole-split. Each function here is the only place its internal is
touched, and `INTERNALS` names every one. tests/training/test_kerasinternals.py checks each on real objects
of the installed tf-keras, so a version bump that renames or removes one fails there, by name,
instead of inside a preempted job.

This is kept apart from `kerasflavor`, which chooses and imports the Keras flavour: that module
changes when the flavour does, this one with every tf-keras version. It sits above
`kerasflavor` and imports Keras through it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

from trainer.kerasflavor import keras, tf

# "owner.attribute" for every internal the functions below reach (owner: the tf-keras or
# TensorFlow class whose instances carry it), with the attributes of the private classes they
# lead to (WorkerTrainingState, Node) that callers use.
INTERNALS = (
    "BaseRandomLayer._random_generator",  # dropout_generators
    "RandomGenerator._generator",  # dropout_generators
    "BackupAndRestore._training_state",  # backup_state
    "BackupAndRestore._current_epoch",  # backup_epoch
    "WorkerTrainingState._ckpt_saved_epoch",  # backup_point
    "WorkerTrainingState.read_checkpoint_manager",  # preemption_backup: what a backup restores
    "WorkerTrainingState.write_checkpoint_manager",  # preemption_backup: where it saves
    "WorkerTrainingState.restore",  # preemption_backup
    "WorkerTrainingState.back_up",  # preemption_backup
    "WorkerTrainingState._ckpt_saved_batch",  # set_backup_batch, backup_point
    "PreemptionCheckpointHandler._stop_poll_termination_signal_thread",  # stop_watching
    "TensorBoard._writers",  # tensorboard_writers
    "Functional._is_graph_network",  # graph_nodes
    "Functional._nodes_by_depth",  # graph_nodes
    "Node.is_input",  # modelfile's replay of graph_nodes
    "Node.map_arguments",
    "Node.flat_output_ids",
    "Node.layer",
    "LossesContainer._total_loss_mean",  # replace_loss_tracker
    "Functional._trackable_children",  # weights_only
)


class KerasInternalMissing(RuntimeError):
    """An internal this module relies on is not where this tf-keras keeps it."""


def tf_keras_version() -> str:
    return getattr(keras, "__version__", "unknown")


def reach(obj: Any, name: str) -> Any:
    """`obj.name`, or an error naming the internal and the installed tf-keras version."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise KerasInternalMissing(
            f"tf-keras {tf_keras_version()}: {type(obj).__name__}.{name} is gone (a private "
            "part of tf-keras this package relies on, see trainer/kerasinternals.py); use the "
            "tf-keras version in constraints.txt") from None


# -- dropout state -----------------------------------------------------------------------------

def dropout_generators(model) -> list:
    """The dropout layers' random generators. tf-keras keeps them out of the model's own
    checkpoint dependencies, so a checkpoint names them itself: without their state, a resumed
    run would drop other units than an uninterrupted one. Layers that draw no random numbers
    have no `_random_generator`, and a generator has no `_generator` before its first use, or
    None when it is stateless: neither has state to carry. (So a rename here would pass
    silently; the test checks that a built Dropout layer's generator is found.)"""
    found = []
    for layer in model.submodules:
        rng = getattr(layer, "_random_generator", None)
        if rng is not None and getattr(rng, "_generator", None) is not None:
            found.append(rng._generator)
    return found


# -- BackupAndRestore's training state (after its `on_train_begin`) ----------------------------

def backup_state(callback):
    """The callback's `WorkerTrainingState`: its checkpoint managers, `restore` and `back_up`."""
    return reach(callback, "_training_state")


def backup_epoch(callback) -> int:
    """The epoch in progress, as the callback recorded it at `on_epoch_begin`."""
    return reach(callback, "_current_epoch")


def set_backup_batch(callback, batch: int) -> None:
    """The batch the next backup stands for (tf-keras assigns it every batch; this only when a
    backup is saved)."""
    reach(backup_state(callback), "_ckpt_saved_batch").assign(batch)


def backup_point(callback) -> tuple[int, int]:
    """(epoch, batch) of the backup last saved or restored, both 0-based."""
    state = backup_state(callback)
    return (int(reach(state, "_ckpt_saved_epoch").numpy()),
            int(reach(state, "_ckpt_saved_batch").numpy()))


# -- TensorFlow's preemption handler ----------------------------------------------------------

def stop_watching(handler) -> None:
    """Stop the handler's thread that polls the termination watcher: it would poll a finished
    run's flag for good (the handler stops it only when it is deleted)."""
    reach(handler, "_stop_poll_termination_signal_thread")()


# -- TensorBoard callback ----------------------------------------------------------------------

def tensorboard_writers(callback) -> list:
    """The summary writers the callback has opened so far."""
    return list(reach(callback, "_writers").values())


# -- a functional model's graph ----------------------------------------------------------------

def graph_nodes(model) -> Optional[Iterator]:
    """The model's nodes in the order tf-keras's own `Functional._run_internal_graph` calls
    them (deepest first); None for a model that is not a graph of layers (a subclassed one)."""
    if not reach(model, "_is_graph_network"):
        return None
    by_depth = reach(model, "_nodes_by_depth")
    return (node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth])


# -- the compiled loss figure ------------------------------------------------------------------

def replace_loss_tracker(model, make: Callable[[], Any], kind: type) -> None:
    """Put `make()` in place of the compiled model's loss tracker (`Mean(name="loss")` of its
    LossesContainer), which must be a `kind` now: anything else means this tf-keras computes the
    loss figure elsewhere, and the replacement would not take effect."""
    tracker = reach(model.compiled_loss, "_total_loss_mean")
    if not isinstance(tracker, kind):
        raise KerasInternalMissing(
            f"tf-keras {tf_keras_version()}: LossesContainer._total_loss_mean is a "
            f"{type(tracker).__name__}, not a {kind.__name__}: this tf-keras keeps its loss "
            "figure elsewhere, and the rmse loss figure would be a mean of per-batch RMSEs")
    model.compiled_loss._total_loss_mean = make()


# -- a checkpoint's weights without its optimizer ----------------------------------------------

def weights_only(model):
    """A trackable with the model's checkpoint children but its optimizer: reads the weights of a
    checkpoint written with `tf.train.Checkpoint(model=model)` whatever optimizer the model has
    now (TensorFlow's private tracking base class, and the model's `_trackable_children`)."""
    children = reach(model, "_trackable_children")
    base = reach(reach(tf, "__internal__").tracking, "AutoTrackable")

    class WeightsOnly(base):
        def _trackable_children(self, save_type="checkpoint", **kwargs):
            return {k: v for k, v in children(save_type, **kwargs).items() if k != "optimizer"}

    return WeightsOnly()

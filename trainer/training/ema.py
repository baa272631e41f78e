"""`train.ema`: an exponential moving average of the weights, for evaluation and the saved model.

The average is the optimizer's own (tf-keras's `use_ema`, `ema_momentum`): updated inside every
training step, in the same graph call, on every replica, whatever `steps_per_execution` is; its
variables are optimizer slots, so the epoch checkpoints and the preemption backup carry them and
a resumed run goes on with the same average. What tf-keras lacks is evaluating with it during
training: it swaps the average in only at the end of `fit` (`finalize_variable_values`), or
overwrites the training weights with it every so many steps, which changes training itself. So
`averaged` swaps it in for a while and puts the training weights back bit for bit: around each
validation (`trainer.callbacks.ema`) and the best epoch's checkpoint. Non-trainable variables
(BatchNorm's moving statistics) are averages already and are not averaged again.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from trainer.kerasflavor import keras


def optimizer_options(momentum: float) -> dict:
    """The optimizer's keyword arguments for `train.ema` (0: none, the optimizer's default)."""
    return {"use_ema": True, "ema_momentum": float(momentum)} if momentum else {}


def _inner(model: keras.Model):
    optimizer = getattr(model, "optimizer", None)
    return getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer


def _averaged_variables(model: keras.Model) -> list:
    """The model's trainable variables that the optimizer averages (none before its first
    step, when the average would be the weights themselves)."""
    optimizer = _inner(model)
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_built", False):
        return []
    index = optimizer._index_dict
    return [v for v in model.trainable_variables if optimizer._var_key(v) in index]


@contextlib.contextmanager
def averaged(model: keras.Model) -> Iterator[None]:
    """Within, the model's weights are the moving average; after, the training weights again,
    bit for bit. Without `train.ema`, nothing changes."""
    variables = _averaged_variables(model)
    if not variables:
        yield
        return
    kept = [v.numpy() for v in variables]
    _inner(model)._overwrite_model_variables_with_average_value(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, kept):
            variable.assign(value)


def finalize(model: keras.Model) -> None:
    """Put the average into the model for good (what `fit` does at its end), for a session that
    trained no epoch: the optimizer, restored from the checkpoint but never stepped, is built
    here, which restores its average from the checkpoint."""
    optimizer = _inner(model)
    if not getattr(optimizer, "use_ema", False):
        return
    if not getattr(optimizer, "_built", False):
        optimizer.build(model.trainable_variables)
    optimizer.finalize_variable_values(model.trainable_variables)

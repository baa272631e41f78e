"""Fine-tuning as a schedule: the pretrained part frozen for `train.freeze_epochs`, then trained
at `train.finetune_learning_rate` (from `model.trainable_from` up, when given).

The pretrained part is the backbone of a `model.name` backbone, or, with `model.init_from`, every
layer that took an earlier run's weights. While it is frozen only the head trains, at
`train.learning_rate`; its BatchNorm layers run in inference mode (a frozen BatchNorm does in
tf-keras, and a pretrained backbone is called with `training=False` throughout, as the Keras
transfer-learning guide does, so that unfreezing does not wreck the statistics it learned).

At the unfreeze the model is compiled again: a fresh Adam, whose learning rate schedule runs
over the epochs left. A run that resumes exactly there (from the checkpoint of the last frozen
epoch) does the same: it loads that checkpoint and then starts the fresh optimizer, so it goes on
bit for bit as an uninterrupted run does. A run that resumes on either side of the unfreeze
builds the model frozen or not as the epochs it has trained say, before its checkpoint is read.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from typing import Callable, Optional

from trainer.config import Config
from trainer.errors import UserError
from trainer.kerasflavor import keras

log = logging.getLogger("trainer")


def pretrained_part(model: keras.Model, config: Config, taken: Optional[list[str]] = None) -> list:
    """The layers the schedule freezes: the backbone's, or the layers `init_from` filled."""
    from trainer import backbones

    if taken:
        names = set(taken)
        return [layer for layer in _leaves(model) if layer.name in names]
    return backbones.backbone_layers(model)


def _leaves(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out += _leaves(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def active(config: Config) -> bool:
    return config.train.freeze_epochs > 0 or config.model.trainable_from is not None


def frozen_at(config: Config, epochs_done: int) -> bool:
    """Whether the epoch after `epochs_done` trains with the pretrained part frozen."""
    return epochs_done < config.train.freeze_epochs


def set_phase(model: keras.Model, config: Config, frozen: bool,
              taken: Optional[list[str]] = None) -> None:
    """Freeze the pretrained part, or unfreeze it from `model.trainable_from` up."""
    part = pretrained_part(model, config, taken)
    if not part:
        raise UserError(f"model {config.model.name!r} has no pretrained part to freeze, "
                        "train.freeze_epochs / model.trainable_from, expected a backbone "
                        "(model.name resnet50v2, ...) or model.init_from")
    start = 0
    if not frozen and config.model.trainable_from is not None:
        names = [layer.name for layer in part]
        if config.model.trainable_from not in names:
            near = difflib.get_close_matches(config.model.trainable_from, names, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else (
                f"expected a layer of the backbone, e.g. {names[len(names) * 3 // 4]!r}")
            raise UserError(f"no layer {config.model.trainable_from!r} in the pretrained part, "
                            f"model.trainable_from, {hint}")
        start = names.index(config.model.trainable_from)
    if not frozen:  # a nested model's flag reaches all of its layers; then the bottom freezes
        for outer in _containers(model):
            outer.trainable = True
    for i, layer in enumerate(part):
        layer.trainable = not frozen and i >= start


def _containers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += [layer, *_containers(layer)]
    return out


def learning_rate_config(config: Config, peak: float, epochs_done: int) -> tuple:
    """(train config for the schedule, peak rate) of the phase after `epochs_done`: the fine-tune
    phase runs its schedule over the epochs left after the unfreeze, from its own rate (scaled
    with the replicas as `train.learning_rate` is)."""
    t = config.train
    if t.freeze_epochs <= 0 or frozen_at(config, epochs_done):
        return t, peak
    scaled = peak / t.learning_rate * t.finetune_learning_rate
    return dataclasses.replace(t, epochs=max(1, t.epochs - t.freeze_epochs)), scaled


@dataclasses.dataclass
class Plan:
    """What `fit` needs at the unfreeze: the epoch, and how to compile the model again."""

    unfreeze_epoch: int
    recompile: Callable[[], None]
    taken: Optional[list[str]] = None

    def unfreeze(self, model: keras.Model, config: Config) -> None:
        set_phase(model, config, frozen=False, taken=self.taken)
        self.recompile()
        trainable = sum(int(keras.backend.count_params(w)) for w in model.trainable_weights)
        log.info("unfrozen after epoch %d: %d trainable parameters, learning rate %g%s",
                 self.unfreeze_epoch, trainable, config.train.finetune_learning_rate,
                 f" (from layer {config.model.trainable_from})"
                 if config.model.trainable_from else "")

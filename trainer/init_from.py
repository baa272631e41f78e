"""`model.init_from`: start a new run from the weights of an earlier one.

The earlier run's `model.h5` (given as the run's folder or the file, local, `gs://` or `/gcs/`) is
fetched and checked like any model file before data is read. When the new model is built, its
layers with weights are paired with the earlier model's in order (Keras numbers the names of
unnamed layers per process, so the same network built twice has other names; a backbone's own
names always match), and every pair of the same kind whose weights have the same shapes takes
the earlier weights: the layers "taken". The others, a head with another number of classes or
targets, keep their fresh weights: "new". The input standardisation (`standardize`) and the
targets' scale follow the new data unless `model.keep_standardization` asks for the old ones.

What was taken is logged, kept in the checkpoint state (so a resumed run reports it and freezes
the same layers) and written to `metrics.json` and the report.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Optional

from trainer import storage
from trainer.errors import UserError
from trainer.kerasflavor import keras

log = logging.getLogger("trainer")

STATS_LAYERS = ("standardize", "targets")  # follow the new data unless asked otherwise
KEY = "model.init_from"
_LOCAL: dict[str, str] = {}


def _model_file(source: str) -> str:
    return source if source.endswith(".h5") else storage.join(source, "model.h5")


def fetch(config) -> Optional[str]:
    """The earlier model file, local and checked (before any data is read); None when unset."""
    source = getattr(config.model, "init_from", None)
    if not source:
        return None
    if source in _LOCAL and os.path.exists(_LOCAL[source]):
        return _LOCAL[source]
    from trainer.outputs import modelfile

    path = _model_file(source)
    if not storage.exists(path):
        raise UserError(f"no model file at {path}, {KEY}={source}, expected a run folder with "
                        "a model.h5 or a model.h5 written by this package")
    local = path
    if not storage.is_local(path):
        local = os.path.join(tempfile.mkdtemp(prefix="trainer-init-"), "model.h5")
        storage.get_file(path, local, modelfile.MODEL_LIMIT, "a model file")
    modelfile.check(local, path)
    _LOCAL[source] = local
    return local


def _weighted(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _weighted(layer)
        elif layer.weights:
            out.append(layer)
    return out


def transfer(model: keras.Model, config) -> dict:
    """Give `model` the earlier run's weights where they fit; returns what was taken and what is
    new, by the new model's layer names."""
    from trainer.outputs import modelfile

    local = fetch(config)
    earlier, _ = modelfile.load(local)
    source = config.model.init_from
    if tuple(earlier.input_shape[1:]) != tuple(model.input_shape[1:]):
        raise UserError(f"the earlier model takes inputs of shape {earlier.input_shape[1:]}, "
                        f"{KEY}={source}, expected the new data's shape {model.input_shape[1:]} "
                        "(set data.image_size and data.color to the earlier run's)")
    keep = bool(getattr(config.model, "keep_standardization", False))
    old = [layer for layer in _weighted(earlier) if keep or layer.name not in STATS_LAYERS]
    taken, new = [], []
    i = 0
    for layer in _weighted(model):
        if layer.name in STATS_LAYERS and not keep:
            continue
        pair = old[i] if i < len(old) else None
        fits = (pair is not None and type(pair) is type(layer)
                and [tuple(w.shape) for w in pair.weights] == [tuple(w.shape) for w in layer.weights])
        if fits:
            layer.set_weights(pair.get_weights())
            taken.append(layer.name)
        else:
            new.append(layer.name)
        i += 1
    if not taken:
        raise UserError(f"no layer of the earlier model fits the new one (kinds and weight "
                        f"shapes differ from the first layer on), {KEY}={source}, expected a "
                        f"model of the same architecture ({config.model.name})")
    return {"source": source, "taken": taken, "new": new,
            "standardization": "kept" if keep else "the new data's"}


def lines(record: dict) -> list[str]:
    """How the log and the report say what `init_from` gave."""
    return [f"init_from {record['source']}: {len(record['taken'])} layers took its weights "
            f"({', '.join(record['taken'])}); {len(record['new'])} new "
            f"({', '.join(record['new']) or 'none'}); standardisation: {record['standardization']}"]


def recorded(run) -> Optional[dict]:
    """What an earlier session of this run took (its checkpoint state), for a resumed run."""
    path = run.fetch("checkpoints", "state.json")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f).get("init_from")
    except (ValueError, OSError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def start(model: keras.Model, config, run, resuming: bool) -> Optional[dict]:
    """A fresh run takes the earlier weights; a resumed one only recalls what it took."""
    if not getattr(config.model, "init_from", None):
        return None
    record = recorded(run) if resuming else transfer(model, config)
    for line in lines(record) if record else ():
        log.info("%s", line)
    return record

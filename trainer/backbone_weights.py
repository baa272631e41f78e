"""A backbone's starting weights, `model.weights`: none, imagenet, or a weights file (a path,
`gs://` or `/gcs/` URL).

Kept apart from the architectures (`trainer.backbones`) because it is another job with other
failures: a file that is missing or of another backbone, a download that cannot be reached.
Both are found before any data is read (`prepare`), so a wrong setting costs seconds, not a
data load; a wrong file is one line naming the first layer that does not fit. `load_into`
puts the checked weights into the model `trainer.models` has built.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import h5py

from trainer import backbones, imagenet_weights
from trainer.errors import UserError
from trainer.kerasflavor import keras

# (model, weights) -> the local file this process starts from; None: nothing to load (a resumed
# run, whose checkpoint holds every weight). Set by `prepare`, read when the model is built.
_LOCAL: dict[tuple[str, str], Optional[str]] = {}


def local_weights(config) -> Optional[str]:
    """The local weights file the backbone of `config` starts from; None for `weights: none`,
    and for a run that resumes (`prepare` said so). Without `prepare` (a model built outside a
    run), fetched here once per process: `imagenet` by Keras's download into a temporary
    folder, a path or URL copied here."""
    name, setting = config.model.name, backbones.weights_setting(config)
    if setting == "none" or not backbones.is_backbone(name):
        return None
    key = (name, setting)
    if key not in _LOCAL or (_LOCAL[key] is not None and not os.path.exists(_LOCAL[key])):
        _LOCAL[key] = (imagenet_weights.to_temp(config) if setting == "imagenet"
                       else _fetch(setting))
    return _LOCAL[key]


def _fetch(url: str) -> str:
    from trainer import storage

    if storage.is_local(url):
        if not os.path.isfile(url):
            raise UserError(f"weights file {url!r} does not exist, model.weights, expected "
                            "none, imagenet, or a weights file (path, gs:// or /gcs/ URL)")
        return url
    local = os.path.join(tempfile.mkdtemp(prefix="trainer-weights-"), os.path.basename(url))
    storage.get_file(url, local, what="a weights file")
    return local


def _file_layers(path: str, where: str) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(layer name, weight shapes) of a Keras `.h5` weights file, in its order."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group.attrs.get("layer_names", [])]
            out = []
            for n in names:
                g = group[n]
                wnames = [w.decode() if isinstance(w, bytes) else str(w)
                          for w in g.attrs.get("weight_names", [])]
                if wnames:
                    out.append((n, [tuple(g[w].shape) for w in wnames]))
            return out
    except (OSError, KeyError) as exc:
        raise UserError(f"cannot read weights ({str(exc).splitlines()[0]}), {where}, expected a "
                        "Keras .h5 weights file (save_weights of the backbone)") from None


def check_weights(backbone: keras.Model, path: str, where: str) -> None:
    """The file's layers with weights, in order, against the backbone's (how Keras loads them):
    the first layer that does not fit is named."""
    have = _file_layers(path, where)
    want = [(layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in backbone.layers if layer.weights]
    if not have:
        raise UserError(f"weights file has no layers with weights, {where}, expected the weights "
                        f"of {backbone.name} (save_weights of the backbone)")
    for i, (name, shapes) in enumerate(want):
        if i >= len(have):
            raise UserError(f"weights file ends before layer {name!r} (it has {len(have)} layers "
                            f"with weights, the backbone {len(want)}), {where}, expected the "
                            "weights of this backbone and its params")
        got_name, got = have[i]
        if got != shapes:
            raise UserError(f"weights do not fit layer {name!r}: the file's layer {got_name!r} "
                            f"holds {got}, the layer takes {shapes}, {where}, expected the "
                            "weights of this backbone and its params")
    if len(have) > len(want):
        raise UserError(f"weights file has {len(have)} layers with weights, the backbone "
                        f"{len(want)} (the next is {have[len(want)][0]!r}), {where}, expected the "
                        "weights of this backbone and its params")


def load_weights(backbone: keras.Model, path: str, where: str) -> None:
    check_weights(backbone, path, where)
    backbone.load_weights(path)


def load_into(model: keras.Model, config) -> None:
    """The starting weights of `config` into the backbone of the built `model` (nothing for
    `weights: none`, other models, or a resumed run)."""
    path = local_weights(config)
    backbone = backbones.find_backbone(model)
    if path is not None and backbone is not None:
        load_weights(backbone, path, f"model.weights={backbones.weights_setting(config)}")


def prepare(config, run_dir=None) -> Optional[str]:
    """Before any data is read: the backbone built at the size it will see and checked against
    memory, its weights fetched (imagenet: once per job, see `trainer.imagenet_weights`) and
    checked against it; returns the local weights file. A run that resumes from a checkpoint
    fetches nothing: the checkpoint holds every weight. Nothing for other models."""
    setting = backbones.weights_setting(config)
    if not backbones.is_backbone(config.model.name):
        if setting != "none":
            raise UserError(f"model.weights={setting} needs a backbone, model.weights, expected "
                            f"none for model {config.model.name!r} or a model.name among "
                            f"{', '.join(backbones.SPECS)}")
        return None
    key = (config.model.name, setting)
    if run_dir is not None and run_dir.committed_epoch() is not None:
        _LOCAL[key] = None
        return None
    size = backbones.input_size(config.data.image_size or (backbones.MIN_SIZE,) * 2,
                                config.model.params)
    backbone = backbones.construct(config.model.name, size,
                                   **backbones.options(config.model.params))
    backbones.check_memory(backbone, config, size)
    if setting == "imagenet" and run_dir is not None:
        _LOCAL[key] = imagenet_weights.for_run(config, run_dir)
    elif _LOCAL.get(key) is None:
        _LOCAL.pop(key, None)  # an earlier resumed run's "nothing": this one fetches
    local = local_weights(config)
    if local is not None:
        check_weights(backbone, local, f"model.weights={setting}")
    return local

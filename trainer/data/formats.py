"""The data formats: one registry that config, the readers and the dataset assembly all read.

Adding a format is one entry here plus its reader function. This module is cheap to import (no
numpy, no TensorFlow), because the config checks `data.format` and the rules that depend on it
against it when it is loaded; a format's reader module is imported only when data is read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from trainer.data.images import ImageSpec
    from trainer.data.source import Shard

# files (expanded from data.train/val/test), the config's data section (its `DataConfig`, not
# named here: the config imports this module, which stays below it), the image size and colour
# asked for -> the shards of those files
Reader = Callable[[list[str], Any, "ImageSpec"], list["Shard"]]


@dataclass(frozen=True)
class Format:
    reader: str  # "module:function", imported when data is read
    doc: str  # what the data looks like, for the configuration reference
    # Where a file of this format keeps each sample's group (`{key}` is data.group_key), or None
    # when the format cannot carry groups; then `no_groups` says what to do instead.
    groups: Optional[str] = None
    no_groups: str = ""
    reads_files: bool = True  # False: it draws its own data, and takes no data.train/val/test
    # The image size it makes when data.image_size is empty (data that it draws itself); None:
    # the first image decides.
    image_size: Optional[tuple[int, int]] = None
    channels: Optional[int] = None  # the channels of the images it makes; None: the data's own


FORMATS: dict[str, Format] = {
    "npz": Format("trainer.data.readers:read_npz", "shards with arrays `x`, `y`",
                  groups="an array '{key}' in every .npz shard beside 'x' and 'y' (data.group_key)"),
    "npy": Format("trainer.data.readers:read_npy", "paired `x*.npy`/`y*.npy`",
                  groups="a g*.npy file of groups beside every x*.npy file"),
    "tfrecord": Format("trainer.data.readers:read_tfrecord",
                       "`tf.train.Example` shards, raw or PNG images, optionally GZIP",
                       groups="a feature '{key}' in every record (data.group_key; trainer.convert "
                              "--video writes it)"),
    "image_folder": Format("trainer.data.readers:read_image_folder",
                           "one sub-directory per class of PNG/JPEG/TIFF files",
                           no_groups="image folders have none, convert or list them in a csv "
                                     "manifest with a group column"),
    "csv": Format("trainer.data.readers:read_csv", "a manifest of file paths and label columns",
                  groups="a column '{key}' in every manifest (data.group_key)"),
    "hdf5": Format("trainer.data.readers:read_hdf5", "named datasets `x_key`, `y_key`",
                   groups="a dataset '{key}' in every file (data.group_key)"),
    "shapes": Format("trainer.data.demo:read_shapes",
                     "the generated demo set of circles, squares and triangles",
                     no_groups="the generated demo set has none",
                     reads_files=False, image_size=(32, 32), channels=3),
}


def names() -> tuple[str, ...]:
    """Every `data.format` the config accepts."""
    return tuple(FORMATS)


def described() -> str:
    """Every format with what its data looks like: "`npz` (...), ... or `shapes` (...)"."""
    items = [f"`{name}` ({entry.doc})" for name, entry in FORMATS.items()]
    return ", ".join(items[:-1]) + " or " + items[-1]


def reader(name: str) -> Reader:
    """The reader function of format `name`, imported now."""
    module, _, function = FORMATS[name].reader.partition(":")
    return getattr(importlib.import_module(module), function)


def groups_expected(name: str, key: str) -> str:
    """The `expected` part of "no group per sample": where format `name` keeps groups."""
    entry = FORMATS[name]
    if entry.groups is not None:
        return entry.groups.format(key=key)
    carrying = ", ".join(n for n, f in FORMATS.items() if f.groups is not None)
    return f"a format that carries groups ({carrying}); {entry.no_groups}"

"""HDF5 files that read nothing outside themselves: the one check for data files, MATLAB v7.3
label files and model files alike.

HDF5 lets a file's objects live elsewhere: an external link names another file, a soft link may
lead through one, a virtual dataset maps other files' datasets, and a dataset's raw bytes may be
kept in any host file (`external=[("/etc/passwd", 0, n)]`). h5py follows each of them silently,
so a file could make a job read, train on, predict with or show whatever file it names. Links
are looked at without being followed (an external file is never opened) and every dataset's
layout is checked before a byte of it is read.
"""

from __future__ import annotations

import posixpath
from typing import Iterable, Optional

import h5py

from trainer.errors import UserError

_EXPECTED = "expected datasets stored inside the file"
_MAX_SOFT_LINKS = 32  # soft links followed in a row; more is a loop


def check_inside(handle: h5py.File, where: str, keys: Optional[Iterable[str]] = None) -> None:
    """Refuse, naming the dataset, any of `keys` (every object in the file when None) that is
    an external link, a soft link leading through one, a virtual dataset or a dataset with
    external storage. `where` names the file in the message; absent keys are left to the
    caller."""
    if keys is not None:
        for key in keys:
            item = _follow(handle, key, key, where)
            if isinstance(item, h5py.Dataset):
                _check_dataset(handle, item, key, where)
        return
    seen: set[int] = set()
    pending = [("", handle["/"])]
    while pending:
        prefix, group = pending.pop()
        address = h5py.h5o.get_info(group.id).addr
        if address in seen:  # a group hard-linked below itself: each group once
            continue
        seen.add(address)
        for name in group:
            key = f"{prefix}/{name}".lstrip("/")
            item = _follow(handle, key, key, where)
            if isinstance(item, h5py.Dataset):
                _check_dataset(handle, item, key, where)
            elif isinstance(item, h5py.Group) and isinstance(
                    group.get(name, getlink=True), h5py.HardLink):
                pending.append((key, item))


def _follow(handle: h5py.File, path: str, key: str, where: str, depth: int = 0):
    """The object at `path`, reached link by link without ever following an external one; None
    where nothing is there."""
    if depth > _MAX_SOFT_LINKS:
        raise UserError(f"dataset {key!r} is reached through more than {_MAX_SOFT_LINKS} soft "
                        f"links (a loop), {where}, {_EXPECTED}")
    parts = [p for p in path.split("/") if p]
    node = handle["/"]
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        name = "/".join(parts[:i + 1])
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            if depth:
                raise UserError(f"dataset {key!r} lies in another file, {where}, {_EXPECTED}")
            raise UserError(f"dataset {key!r} is an external link ({name!r} points into another "
                            f"file), {where}, {_EXPECTED}")
        if isinstance(link, h5py.SoftLink):
            target = posixpath.join("/" + "/".join(parts[:i]), link.path)
            node = _follow(handle, target, key, where, depth + 1)
            if node is None:
                return None
        else:
            node = node[part]
    return node


def _check_dataset(handle: h5py.File, item: h5py.Dataset, key: str, where: str) -> None:
    if item.file.id.fileno != handle.id.fileno:  # reached some other way into another file
        raise UserError(f"dataset {key!r} lies in another file, {where}, {_EXPECTED}")
    if item.is_virtual:
        raise UserError(f"dataset {key!r} is virtual (mapped from other files), {where}, "
                        f"{_EXPECTED}")
    plist = item.id.get_create_plist()
    if plist.get_external_count():
        outside = plist.get_external(0)[0].decode(errors="replace")
        raise UserError(f"dataset {key!r} has external storage (its bytes are in {outside!r}), "
                        f"{where}, {_EXPECTED}")

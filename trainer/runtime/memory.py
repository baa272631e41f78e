"""The memory this process may use, and a check of a planned allocation against it.

A size taken from a config or a file header (a batch of huge images, a label array declared
larger than any disk holds) is compared with the memory before anything is allocated, so the
run ends with one line saying how much was asked for instead of being killed by the kernel.
"""

from __future__ import annotations

import os
import posixpath
import resource
import time
from typing import Optional

from trainer.errors import UserError

_LIMIT_FILES = {"v2": "memory.max", "v1": "memory.limit_in_bytes"}


def _cgroup_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Where the memory controller's hierarchies are mounted: {"v1" | "v2": (root inside the
    hierarchy, mount point)}, from `/proc/self/mountinfo`."""
    mounts: dict[str, tuple[str, str]] = {}
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return mounts
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        kind, _, options = line.split(" - ", 1)[1].partition(" ")
        if kind == "cgroup2":
            mounts.setdefault("v2", (fields[3], fields[4]))
        elif kind == "cgroup" and "memory" in options.split()[-1].split(","):
            mounts.setdefault("v1", (fields[3], fields[4]))
    return mounts


def _read_limit(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2): no limit


def cgroup_limit(proc_cgroup: str = "/proc/self/cgroup",
                 mountinfo: str = "/proc/self/mountinfo") -> Optional[int]:
    """The tightest memory limit of this process's own cgroup and of the groups above it, on
    cgroup v1 (`memory.limit_in_bytes`) or v2 (`memory.max`); None where none is set. The group
    is the one `/proc/self/cgroup` names (not the hierarchy's root, which a container or a
    systemd slice leaves unlimited), found under the mount point `mountinfo` gives."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mounts = _cgroup_mounts(mountinfo)
    limits = []
    for line in lines:
        hierarchy, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        version = "v2" if hierarchy == "0" and not controllers else (
            "v1" if "memory" in controllers.split(",") else None)
        if version not in mounts or not group.startswith("/"):
            continue
        root, mount_point = mounts[version]
        relative = posixpath.relpath(group, root) if group.startswith(root) else group
        folder = posixpath.normpath(posixpath.join(mount_point, relative.lstrip("/")))
        while True:  # the group, then each parent up to the hierarchy's top
            limit = _read_limit(posixpath.join(folder, _LIMIT_FILES[version]))
            if limit is not None:
                limits.append(limit)
            if folder == mount_point or not folder.startswith(mount_point.rstrip("/") + "/"):
                break
            folder = posixpath.dirname(folder)
    return min(limits) if limits else None


_CGROUP_SECONDS = 1.0  # how long one reading of the own cgroup's limit is reused
_cgroup_seen: tuple[float, Optional[int]] = (float("-inf"), None)


def _own_cgroup_limit() -> Optional[int]:
    """`cgroup_limit()`, read at most once a second: it costs about 0.4 ms of /proc reads, and
    every file read whole (each image of a folder) asks for it, while a group's limit stays put."""
    global _cgroup_seen
    now = time.monotonic()
    if now - _cgroup_seen[0] >= _CGROUP_SECONDS:
        _cgroup_seen = (now, cgroup_limit())
    return _cgroup_seen[1]


def available() -> int:
    """Bytes this process may allocate: the machine's memory, or less where a cgroup limit or
    the address-space limit (RLIMIT_AS) says so."""
    limits = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    cgroup = _own_cgroup_limit()
    if cgroup:
        limits.append(cgroup)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits)


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_fits(nbytes: int, what: str, where: str) -> None:
    """Refuse `nbytes` for `what` (named at `where`) when it exceeds the memory there is."""
    have = available()
    if nbytes > have:
        raise UserError(f"{what} needs {nbytes} bytes ({_gib(nbytes)}), {where}, expected at most "
                        f"the {have} bytes ({_gib(have)}) of memory available")

"""The memory this process may use, and a check of a planned allocation against it.

A size taken from a config or a file header (a batch of huge images, a label array declared
larger than any disk holds) is compared with the memory before anything is allocated, so the
run ends with one line saying how much was asked for instead of being killed by the kernel.
"""

from __future__ import annotations

import os
import resource
from typing import Optional

from trainer.errors import UserError

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_limit() -> Optional[int]:
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def available() -> int:
    """Bytes this process may allocate: the machine's memory, or less where a cgroup limit or
    the address-space limit (RLIMIT_AS) says so."""
    limits = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    cgroup = _cgroup_limit()
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

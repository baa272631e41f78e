"""Paths and globs resolved to files: folders searched (links followed, each real folder once),
system and hidden files skipped on request, and every file found confined to the folder searched."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Union

from trainer.errors import UserError
from trainer.storage.faults import unavailable
from trainer.storage.guards import confine, within
from trainer.storage.paths import call_options, filesystem, is_local, normalize


# Names of files, not folders: a folder named so is a mistake (refused, naming it, rather than
# searched, which would end in a message about whatever file lies inside).
FILE_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".tfrecord", ".tfrecords", ".csv", ".png", ".jpg",
                 ".jpeg", ".tif", ".tiff", ".mp4", ".avi", ".mat", ".yaml", ".yml", ".json")


def expand(patterns: Union[str, Iterable[str]], what: str,
           skip: Optional[Callable[[str], bool]] = None) -> list[str]:
    """Resolve paths and globs to a sorted list of files; each pattern must match something.

    `skip(relative)` drops a file found by searching a folder or glob, given its `/`-separated
    path below the folder searched (a file named on its own is always kept)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        fs, p = filesystem(pattern)
        limit = call_options(fs)
        with unavailable("listing", pattern):
            if any(ch in p for ch in "*?["):
                root = _glob_root(p)
                matches = sorted(m for m in fs.glob(p, **limit) if fs.isfile(m, **limit))
            elif fs.isdir(p, **limit):
                if p.rstrip("/").lower().endswith(FILE_SUFFIXES):  # not a folder of such files
                    suffix = os.path.splitext(p.rstrip("/"))[1]
                    raise UserError(f"path is a directory, {what}={pattern}, expected a {suffix} "
                                    f"file (a folder of files is named without {suffix})")
                root = p
                matches = _walk(p) if is_local(pattern) else sorted(fs.find(p, **limit))
            elif fs.exists(p, **limit):
                root, matches = None, [p]  # named by the user: whatever it links to
            else:
                root, matches = None, []
        skipped = 0
        if root is not None and skip is not None:
            kept = [m for m in matches if not skip(_below(m, root))]
            matches, skipped = kept, len(matches) - len(kept)
        if not matches:
            also = f" ({skipped} system or hidden files skipped)" if skipped else ""
            raise UserError(f"no files found{also}, {what}={pattern}, expected an existing path "
                            "or glob")
        for m in matches if root is not None else ():
            confine(m, root, f" ({what}={pattern})")
        found.extend(_unstrip(pattern, m) for m in matches)
    return found


def _below(match: str, root: str) -> str:
    """`match`'s path below the folder `root` it was found in, `/`-separated."""
    if os.path.isabs(match) or os.path.isabs(root):
        return os.path.relpath(os.path.abspath(match), os.path.abspath(root)).replace(os.sep, "/")
    return match[len(root.rstrip("/")) + 1:] if match.startswith(root.rstrip("/") + "/") else match


def _glob_root(pattern: str) -> str:
    """The folder a glob searches: its path up to the first part with a wildcard."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    return "/".join(parts[:fixed]) or "/"


def _walk(top: str) -> list[str]:
    """Every file under the local folder `top`, sorted. Links to folders are followed (each
    real folder once, so a link to an ancestor cannot loop); `expand` then refuses any entry
    whose real path leaves `top`."""
    files: list[str] = []
    seen: set[str] = set()
    pending = [os.path.abspath(top)]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if not within(folder, top):
            files.append(folder)  # a link out of `top`: refused by the caller, by name
            continue
        if real in seen:
            continue
        seen.add(real)
        for entry in os.scandir(folder):
            (pending if entry.is_dir() else files).append(entry.path)
    return sorted(files)


def _unstrip(pattern: str, match: str) -> str:
    """fsspec drops the protocol from matches; put it back so the path opens anywhere."""
    norm = normalize(pattern)
    if "://" in norm and not norm.startswith("file://"):
        return norm.split("://", 1)[0] + "://" + match
    return match

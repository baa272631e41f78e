"""Files that operating systems and tools leave in data folders, which are never data.

Copying a folder from a Mac to a USB stick or a share leaves an AppleDouble `._name.png` beside
every `name.png` (resource forks: a PNG's name, not a PNG's bytes), zip archives made on a Mac
hold a `__MACOSX/` tree of them, Windows leaves `Thumbs.db` and `desktop.ini`, KDE `.directory`,
Office `~$name` lock files, and notebooks and version control their hidden folders. Such a file
is skipped when a folder or glob is searched for data (as `.DS_Store` always was, by its
extension); a file the user names on its own is read whatever its name.
"""

from __future__ import annotations

NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})  # compared lower-case
FOLDERS = frozenset({"__macosx"})  # compared lower-case; hidden folders are skipped too


def is_litter(relative: str) -> bool:
    """Whether the file at `relative` (its path below the folder searched, `/`-separated) is an
    operating system's or tool's file: a hidden file or one under a hidden folder (`.DS_Store`,
    `._x.png`, `.directory`, `.ipynb_checkpoints/`), `Thumbs.db`, `desktop.ini`, an Office lock
    file `~$x`, or anything under `__MACOSX/`."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return False
    *folders, name = parts
    if any(f.startswith(".") and f != ".." or f.lower() in FOLDERS for f in folders):
        return True
    return name.startswith((".", "~$")) or name.lower() in NAMES

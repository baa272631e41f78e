"""What `trainer.predict` reads: the image files, videos and `.npz`/`.npy` shards its arguments
name, folders and globs searched for them."""

from __future__ import annotations

import os
from typing import Sequence

from trainer import storage
from trainer.data import images, litter, video
from trainer.errors import UserError


SHARD_EXTENSIONS = (".npz", ".npy")


def input_files(inputs: Sequence[str]) -> list[str]:
    """Every image, video or shard named by the inputs; folders and globs are searched for them."""
    found: list[str] = []
    for item in inputs:
        files = storage.expand(item, "input", skip=litter.is_litter)
        if storage.is_local(item) and not os.path.isabs(item):
            files = [os.path.relpath(f) for f in files]  # name inputs as the user did
        picked = [f for f in files if images.is_image(f) or video.is_video(f)
                  or f.lower().endswith(SHARD_EXTENSIONS)]
        # In a folder of x*.npy/y*.npy pairs the y files are labels, not images.
        names = {os.path.basename(f) for f in picked}
        picked = [f for f in picked if not (os.path.basename(f).startswith("y")
                                            and f.endswith(".npy")
                                            and "x" + os.path.basename(f)[1:] in names)]
        if not picked:
            raise UserError(f"no images, videos or shards, input={item}, expected image files "
                            f"({', '.join(images.IMAGE_EXTENSIONS)}), videos "
                            f"({', '.join(video.VIDEO_EXTENSIONS)}), a folder of them, or "
                            ".npz/.npy shards")
        found.extend(picked)
    return found

"""The embedded demo data: circles, squares and triangles, drawn on the fly.

Follows seed 004's `create_image` (a random-coloured shape on white, corners drawn from fixed
ranges), scaled to a small image so the demo trains in a minute or two on a laptop CPU.
Reproducible: the same seed draws the same images. As the `shapes` format it is a reader like
the others, one that reads no files: the same config always draws the same data set, whatever
`train.seed` (which, as for data from files, picks the splits, shuffling and initialisation).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from trainer.config import DataConfig
from trainer.data import formats
from trainer.data.images import ImageSpec
from trainer.data.source import Shard, array_shard
from trainer.runtime import memory

CLASSES = ("circle", "square", "triangle")
SEED = 0  # of the data set the `shapes` format draws


def create_image(rng: np.random.Generator, size: tuple[int, int], shape: str) -> np.ndarray:
    """One RGB uint8 image of `shape`, as seed 004 draws it (coordinates scaled from 128 px)."""
    height, width = size
    scale = min(height, width) / 128.0
    xy1 = int(round(rng.integers(10, 41) * scale))
    xy2 = int(round(rng.integers(60, 101) * scale))
    colour = tuple(int(c) for c in rng.integers(0, 201, size=3))
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([(xy1, xy1), (xy2, xy2)], fill=colour)
    elif shape == "triangle":
        draw.polygon([(xy1, xy1), (xy2, xy2), (xy2, xy1)], fill=colour)
    else:
        draw.rectangle([(xy1, xy1), (xy2, xy2)], fill=colour)
    return np.asarray(img, dtype=np.uint8)


def generate(samples_per_class: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`samples_per_class` images of each shape, shuffled; labels are the shape names."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(CLASSES), samples_per_class)
    rng.shuffle(labels)
    images = np.stack([create_image(rng, size, str(label)) for label in labels])
    return images, labels


def read_shapes(paths: list[str], data: DataConfig, spec: ImageSpec) -> list[Shard]:
    """The `shapes` format's reader: the generated set, as one in-memory shard (no files)."""
    size = tuple(data.image_size or formats.FORMATS["shapes"].image_size)
    count = data.samples_per_class * len(CLASSES)
    memory.check_fits(2 * count * size[0] * size[1] * 3, f"{count} generated RGB images of size "
                      f"{list(size)} (twice, while stacked)", "data.samples_per_class, data.image_size")
    x, y = generate(data.samples_per_class, size, SEED)
    if spec.channels == 1:  # `data.color: grey`: each image as a grey file of it would read
        x = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in x])[..., None]
    return [array_shard(x, y, "generated shapes")]

"""One image file's bytes -> a float32 (H, W, C) array of the configured size and colour.

PNG, JPEG and TIFF (8- and 16-bit, greyscale or colour) through Pillow. Every format that holds
one image per file (image folders, CSV manifests, PNG-encoded TFRecords) decodes here, so they
resize and convert colour the same way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainer.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class ImageSpec:
    """Target size (height, width) and channels (1 or 3); `None` means "as the first image"."""

    size: Optional[tuple[int, int]] = None
    channels: Optional[int] = None

    def settle(self, first: np.ndarray) -> "ImageSpec":
        """Fill the unknowns from the first decoded image, so every later image matches it."""
        return ImageSpec(self.size or (int(first.shape[0]), int(first.shape[1])),
                         self.channels or int(first.shape[2]))


def spec_from_config(image_size: Optional[list[int]], color: str) -> ImageSpec:
    return ImageSpec(tuple(image_size) if image_size else None,
                     {"grey": 1, "rgb": 3}.get(color))


def decode(data: bytes, spec: ImageSpec, where: str) -> np.ndarray:
    """Decode, convert colour, resize (bilinear) to `spec`; float32 (H, W, C), values unscaled."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            channels = spec.channels or (1 if img.mode in ("1", "L", "P") + _HIGH_DEPTH_MODES else 3)
            if img.mode in _HIGH_DEPTH_MODES:
                img = img.convert("F")  # keeps 16-bit values; Pillow resizes "F" images directly
            elif img.mode != ("L" if channels == 1 else "RGB"):
                img = img.convert("L" if channels == 1 else "RGB")
            if spec.size and img.size != (spec.size[1], spec.size[0]):
                img = img.resize((spec.size[1], spec.size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot decode image ({reason}), {where}, expected a PNG, JPEG or TIFF "
                        "image") from None
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.shape[2] != channels:
        array = np.repeat(array, channels, axis=2) if array.shape[2] == 1 else array[..., :channels]
    return array


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)

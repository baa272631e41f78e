"""One image file's bytes -> a float32 (H, W, C) array of the configured size and colour.

PNG, JPEG and TIFF (8- and 16-bit, greyscale or colour) through Pillow. Every reader of images
decodes here: the formats that hold one image per file (image folders, CSV manifests,
PNG-encoded TFRecords), video frames, and `trainer.predict`. So a file resizes, converts colour
and keeps its bit depth the same way in training and in prediction.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainer.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FORMATS = ("PNG", "JPEG", "TIFF")  # Pillow's names of the formats above
EXPECTED = f"expected a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image"
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own decompression-bomb threshold, about 89 M
# Set once, not per call (`catch_warnings` is not thread-safe, and images decode in threads):
# above MAX_PIXELS Pillow only warns, then decodes; here that is an error. Damaged TIFF tags are
# warned about on stderr and then either decode or fail, which the caller reports in one line.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="PIL.TiffImagePlugin")
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


def spec_from_config(data: Any) -> ImageSpec:
    """The spec that the config's data section (its `DataConfig`) asks for: `data.image_size`,
    and the channels that `DataConfig.channel_count` decides."""
    return ImageSpec(tuple(data.image_size) if data.image_size else None, data.channel_count())


def open_image(data: bytes, where: str) -> Image.Image:
    """The image in `data`, its header read but no pixels yet.

    Only `FORMATS` are tried, whatever the file's extension says (Pillow would otherwise open
    dozens of formats, some through external programs), and an image of more than `MAX_PIXELS`
    is refused before its pixels are decoded, so a 100,000 x 100,000 header costs nothing.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError:
        raise UserError(f"cannot decode image (not a {' or '.join(FORMATS)} file), {where}, "
                        f"{EXPECTED}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's text names its own threshold (twice ours for the error): only its count
        count = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{count.group(1)} pixels" if count else f"more than {MAX_PIXELS} pixels"
        raise UserError(f"image too large ({size}), {where}, expected at most {MAX_PIXELS} "
                        "pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise UserError(f"cannot decode image ({_reason(exc)}), {where}, {EXPECTED}") from None
    width, height = img.size
    if not 0 < width * height <= MAX_PIXELS:
        img.close()
        raise UserError(f"image of {width}x{height} pixels, {where}, expected at least 1 and at "
                        f"most {MAX_PIXELS} pixels")
    return img


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def decode(data: bytes, spec: ImageSpec, where: str) -> np.ndarray:
    """Decode, convert colour, resize (bilinear) to `spec`; float32 (H, W, C), values unscaled.

    The one decoder: training, prediction, the data check and the converter all read image
    files here, so a file gives the same array wherever it is read.
    """
    return to_array(open_image(data, where), spec, where)


def to_array(img: Image.Image, spec: ImageSpec, where: str) -> np.ndarray:
    """An opened image (a file's, or a video frame's) as `decode` returns it; closes `img`.

    16-bit and float images keep their values (converted to 32-bit float, which Pillow resizes
    directly); 8-bit ones are converted to greyscale or RGB.
    """
    try:
        with img:
            img.load()
            channels = spec.channels or (1 if img.mode in ("1", "L", "P") + _HIGH_DEPTH_MODES else 3)
            if img.mode in _HIGH_DEPTH_MODES:
                img = img.convert("F")
            elif img.mode != ("L" if channels == 1 else "RGB"):
                img = img.convert("L" if channels == 1 else "RGB")
            if spec.size and img.size != (spec.size[1], spec.size[0]):
                img = img.resize((spec.size[1], spec.size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise UserError(f"cannot decode image ({_reason(exc)}), {where}, {EXPECTED}") from None
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.shape[2] != channels:
        array = np.repeat(array, channels, axis=2) if array.shape[2] == 1 else array[..., :channels]
    return array


def is_image(path: str) -> bool:
    """Whether the file's name says it is an image this module decodes."""
    return path.lower().endswith(IMAGE_EXTENSIONS)

"""`images.decode`, written in TensorFlow ops, for the SavedModel a run exports.

A served model receives encoded image bytes (Vertex AI online prediction sends them base64-encoded
as `{"b64": ...}`) and must turn them into the array training saw, without Python or Pillow. Each
step below is the TF-op twin of a step of `images.to_array`, and `tests/outputs/test_serving.py`
checks that the two give the same values on 8- and 16-bit PNG, JPEG, grey and colour:

- 16-bit greyscale PNG keeps its values (Pillow's mode `I;16`, converted to float); every other
  file is decoded to 8 bits, as Pillow does (16-bit colour PNG: the high byte);
- colour to grey with Pillow's integer ITU-R 601-2 luma, `(19595 R + 38470 G + 7471 B + 2^15) >> 16`;
  grey to colour by repeating the channel; alpha dropped;
- JPEG with the accurate integer DCT, Pillow's (TensorFlow's default is the fast one);
- resize with Pillow's bilinear filter, its own coefficients and (almost always) its order of
  the two passes, 8-bit images in Pillow's fixed point and rounded after each pass.

TIFF has no TensorFlow decoder: served models take PNG and JPEG (and BMP, GIF).
"""

from __future__ import annotations

import tensorflow as tf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
_GREY_16 = (b"\x10", b"\x00")  # IHDR bit depth 16, colour type 0 (greyscale, no alpha)


def decode(data: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """One image's encoded bytes (a scalar string) -> float32 (height, width, channels)."""
    grey_16 = tf.logical_and(
        tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE),
        tf.logical_and(tf.equal(tf.strings.substr(data, 24, 1), _GREY_16[0]),
                       tf.equal(tf.strings.substr(data, 25, 1), _GREY_16[1])))

    def sixteen_bit():
        image = tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.float32)
        return _resize(tf.tile(image, [1, 1, channels]), height, width, eight_bit=False)

    def eight_bit():
        image = tf.cond(
            tf.equal(tf.strings.substr(data, 0, 3), JPEG_SIGNATURE),
            lambda: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False))
        return _resize(_to_channels(tf.cast(image, tf.int32), channels), height, width,
                       eight_bit=True)

    image = tf.cond(grey_16, sixteen_bit, eight_bit)
    return tf.ensure_shape(image, (height, width, channels))


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """An 8-bit image of 1 to 4 channels (grey, grey+alpha, RGB, RGBA) as grey or RGB, float32."""
    colour = tf.shape(image)[-1] >= 3
    if channels == 1:
        luma = lambda: tf.bitwise.right_shift(  # noqa: E731 - Pillow's fixed-point L = R G B
            tf.reduce_sum(image[..., :3] * tf.constant([19595, 38470, 7471]), -1, keepdims=True)
            + 0x8000, 16)
        grey = tf.cond(colour, luma, lambda: image[..., :1])
    else:
        grey = tf.cond(colour, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    return tf.cast(grey, tf.float32)


def _resize(image: tf.Tensor, height: int, width: int, eight_bit: bool) -> tf.Tensor:
    """Pillow's bilinear resize, as two passes; a side already of its size is left alone. Each
    pass is a product with Pillow's own coefficients, in float64 (where Pillow's 8-bit integer
    sums and its double sums are exact). Pillow 13 resizes vertically first when that makes the
    smaller intermediate image out of a shrinking height (measured: this order reproduces it
    exactly in 142 of 147 random size pairs, the others differ by at most 1 in 255)."""
    image = tf.cast(image, tf.float64)
    shape = tf.shape(image)

    def across(x):
        return tf.cond(tf.equal(shape[1], width), lambda: x, lambda: _settle(tf.einsum(
            "ow,hwc->hoc", _coefficients(shape[1], width, eight_bit), x), eight_bit))

    def down(x):
        return tf.cond(tf.equal(shape[0], height), lambda: x, lambda: _settle(tf.einsum(
            "oh,hwc->owc", _coefficients(shape[0], height, eight_bit), x), eight_bit))

    vertical_first = (shape[0] > height) & (height * shape[1] < shape[0] * width)
    image = tf.cond(vertical_first, lambda: across(down(image)), lambda: down(across(image)))
    return tf.cast(image, tf.float32)


def _coefficients(in_size: tf.Tensor, out_size: int, eight_bit: bool) -> tf.Tensor:
    """(out_size, in_size) weights of Pillow's `precompute_coeffs` for its bilinear filter: the
    triangle widened by the reduction factor, normalised per output pixel; for 8-bit images in
    its fixed point (22 fractional bits, rounded half up)."""
    size = tf.cast(in_size, tf.float64)
    scale = size / out_size
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    low = tf.maximum(tf.floor(center - support + 0.5), 0.0)[:, None]
    high = tf.minimum(tf.floor(center + support + 0.5), size)[:, None]
    x = tf.range(size, dtype=tf.float64)[None, :]
    weights = tf.maximum(1.0 - tf.abs((x - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    weights = tf.where((x >= low) & (x < high), weights, 0.0)
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    weights = tf.math.divide_no_nan(weights, total)
    return tf.floor(weights * _ONE + 0.5) if eight_bit else weights


_ONE = float(1 << 22)  # Pillow's PRECISION_BITS: 32 - 8 - 2


def _settle(x: tf.Tensor, eight_bit: bool) -> tf.Tensor:
    """After a pass: Pillow's 8-bit result (`clip8`: round half up, clip to 0..255), or float32."""
    if eight_bit:
        return tf.clip_by_value(tf.floor((x + _ONE / 2) / _ONE), 0.0, 255.0)
    return tf.cast(tf.cast(x, tf.float32), tf.float64)

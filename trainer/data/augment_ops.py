"""The random transforms of `data.augment` (see `trainer.data.augment_spec`), applied to a
whole training batch at once, inside tf.data's parallel map.

Every draw is a stateless random op keyed on (`train.seed`, the batch's index since epoch 0)
and a salt of its own, never a global generator: the same seed gives the same augmented batches
whichever thread runs them and whatever ran before (a resumed run gets the batches the
uninterrupted one had), another seed other batches. Each transform is the identity at strength
0, bit for bit. The strengths of the photometric kinds are in units of each image's own
standard deviation, so that they mean the same whatever the pixel scale (training standardises
later, in the model's first layer).
"""

from __future__ import annotations

import math
from typing import Sequence

from trainer.data.augment_spec import GEOMETRIC, MIXING
from trainer.kerasflavor import tf

# Salts of the new kinds' draws (the seeds' three kinds keep salts 1 to 3, as they always had).
_SALT = {"translate": 11, "zoom": 12, "rotate": 13, "brightness": 14, "contrast": 15,
         "noise": 16, "partner": 17, "mixup": 18, "cutmix": 19, "which": 20}


def apply(x: tf.Tensor, y: tf.Tensor, pairs: Sequence[tuple[str, float]], seed: int,
          index: tf.Tensor, classes: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """One batch (N, H, W, C) transformed by the (name, strength) `pairs`, seeded by (`seed`,
    `index`). With mixup or cutmix the labels come back as class probabilities (N, `classes`)
    float32, else as given."""
    spec = dict(pairs)
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    x = _symmetries(x, spec, key)
    if any(k in spec for k in GEOMETRIC):
        x = _geometric(x, spec, key)
    x = _photometric(x, spec, key)
    if any(k in spec for k in MIXING):
        if classes < 2:
            raise ValueError(f"mixup and cutmix need the number of classes, got {classes}")
        x, y = mix(x, y, spec, key, classes)
    return x, y


def _salted(key: tf.Tensor, name: str) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, _SALT[name])


def _uniform(key: tf.Tensor, name: str, shape, low=-1.0, high=1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, _salted(key, name), low, high)


def _symmetries(x: tf.Tensor, spec: dict, key: tf.Tensor) -> tf.Tensor:
    """The seeds' kinds: flips and 90-degree turns, drawn as they always were."""
    n = tf.shape(x)[0]

    def coin(salt: int) -> tf.Tensor:
        return tf.random.stateless_uniform([n], key + salt) < 0.5

    if "flip_left_right" in spec:
        x = tf.where(coin(1)[:, None, None, None], tf.reverse(x, [2]), x)
    if "flip_up_down" in spec:
        x = tf.where(coin(2)[:, None, None, None], tf.reverse(x, [1]), x)
    if "rot90" in spec:
        k = tf.random.stateless_uniform([n], key + 3, maxval=4, dtype=tf.int32)[:, None, None, None]
        rotated = x
        for turns in (1, 2, 3):
            rotated = tf.where(k == turns, tf.image.rot90(x, turns), rotated)
        x = rotated
    return x


def _geometric(x: tf.Tensor, spec: dict, key: tf.Tensor) -> tf.Tensor:
    """Translation, zoom and rotation about the centre as one affine map per sample, sampled
    bilinearly, the border reflected (as Keras's RandomTranslation, RandomZoom, RandomRotation)."""
    n = tf.shape(x)[0]
    h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
    zero = tf.zeros([n])
    tx, ty = zero, zero
    if "translate" in spec:
        shift = _uniform(key, "translate", [2, n]) * spec["translate"]
        tx, ty = shift[0] * w, shift[1] * h
    scale = 1.0 + _uniform(key, "zoom", [n]) * spec["zoom"] if "zoom" in spec else zero + 1.0
    angle = (_uniform(key, "rotate", [n]) * (spec["rotate"] * math.pi / 180.0)
             if "rotate" in spec else zero)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # The map from an output pixel back to where it is read: input = R(-angle) (out - c - t)
    # / scale + c.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a2 = cx - cos * (cx + tx) - sin * (cy + ty)
    b2 = cy + sin * (cx + tx) - cos * (cy + ty)
    transforms = tf.stack([cos, sin, a2, -sin, cos, b2, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=tf.constant(0.0, x.dtype), interpolation="BILINEAR", fill_mode="REFLECT")


def _photometric(x: tf.Tensor, spec: dict, key: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and noise, each added as a term that is 0 at strength 0."""
    if not any(k in spec for k in ("brightness", "contrast", "noise")):
        return x
    n = tf.shape(x)[0]
    spread = tf.math.reduce_std(x, axis=[1, 2, 3], keepdims=True)
    if "brightness" in spec:
        x = x + _uniform(key, "brightness", [n, 1, 1, 1]) * spec["brightness"] * spread
    if "contrast" in spec:
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = x + (x - mean) * (_uniform(key, "contrast", [n, 1, 1, 1]) * spec["contrast"])
    if "noise" in spec:
        x = x + tf.random.stateless_normal(tf.shape(x), _salted(key, "noise")) * (
            spec["noise"] * spread)
    return x


def _beta(key: tf.Tensor, name: str, n, alpha: float) -> tf.Tensor:
    """lambda ~ Beta(alpha, alpha) per sample, from two gamma draws; 1 at alpha 0."""
    if alpha == 0:
        return tf.ones([n])
    g = tf.random.stateless_gamma([2, n], _salted(key, name), alpha=alpha)
    total = g[0] + g[1]
    # Both draws can underflow to 0 for a small alpha: that sample is then left as it is.
    return tf.where(total > 0, g[0] / tf.where(total > 0, total, 1.0), 1.0)


def mix(x: tf.Tensor, y: tf.Tensor, spec: dict, key: tf.Tensor, classes: int
        ) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup and cutmix with a partner drawn from the same batch (a random permutation). With
    both, each sample gets one of the two, by a coin. The labels become class probabilities:
    the sample's own class weighted by what is left of it."""
    n = tf.shape(x)[0]
    partner = tf.argsort(_uniform(key, "partner", [n], 0.0, 1.0))
    other = tf.gather(x, partner)
    own_labels = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), classes, dtype=tf.float32)
    other_labels = tf.gather(own_labels, partner)
    kept, out = [], []  # per kind: the weight of the sample's own label, the images
    if "mixup" in spec:
        lam = _beta(key, "mixup", n, spec["mixup"])
        lam4 = lam[:, None, None, None]
        out.append(lam4 * x + (1.0 - lam4) * other)
        kept.append(lam)
    if "cutmix" in spec:
        boxed, pasted = cutmix_box(tf.shape(x), _beta(key, "cutmix", n, spec["cutmix"]),
                                   _uniform(key, "cutmix", [2, n], 0.0, 1.0))
        out.append(tf.where(boxed[..., None], other, x))
        kept.append(1.0 - pasted)
    if len(out) == 2:
        first = _uniform(key, "which", [n], 0.0, 1.0) < 0.5
        x_out = tf.where(first[:, None, None, None], out[0], out[1])
        weight = tf.where(first, kept[0], kept[1])
    else:
        x_out, weight = out[0], kept[0]
    labels = weight[:, None] * own_labels + (1.0 - weight[:, None]) * other_labels
    return x_out, labels


def cutmix_box(shape: tf.Tensor, lam: tf.Tensor, centre: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per sample, the (N, H, W) mask of a box of about `1 - lam` of the image's area around
    `centre` (fractions of the height and the width), cut at the image's border, and the
    fraction of the area the box really covers."""
    h, w = shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    side = tf.sqrt(1.0 - lam)
    cy, cx = centre[0] * hf, centre[1] * wf
    y0 = tf.cast(tf.round(tf.clip_by_value(cy - side * hf / 2, 0.0, hf)), tf.int32)
    y1 = tf.cast(tf.round(tf.clip_by_value(cy + side * hf / 2, 0.0, hf)), tf.int32)
    x0 = tf.cast(tf.round(tf.clip_by_value(cx - side * wf / 2, 0.0, wf)), tf.int32)
    x1 = tf.cast(tf.round(tf.clip_by_value(cx + side * wf / 2, 0.0, wf)), tf.int32)
    rows, cols = tf.range(h)[None, :, None], tf.range(w)[None, None, :]
    mask = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
            & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
    return mask, area

"""Per-example pre-processing and augmentation, shared by every source.

Two protocols are covered by the same function:

* ReDO (evaluation and training): resize the shorter side to R with **nearest neighbour**, centre
  crop R x R, no augmentation.
* PerturbGAN (training): resize to ``floor(crop_scale * R)`` (1.125 R: 72 px for 64, 144 for 128),
  random crop R x R. PerturbGAN resizes to a *square* (aspect ratio not preserved); set
  ``square_resize=True`` for that, the default keeps the aspect ratio as ReDO does.

Image and mask are cropped and flipped as one stacked tensor, so they cannot drift apart. All randomness
comes from stateless ops driven by a per-example seed, which works inside ``tf.data`` maps and makes a
seeded pipeline reproducible.
"""

from __future__ import annotations

import math

import tensorflow as tf

RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


def _resize(image: tf.Tensor, target: int, method: str, square: bool) -> tf.Tensor:
    """Resizes [h, w, c] so that its shorter side is `target` (or to `target` x `target` if square)."""
    if square:
        size = tf.constant([target, target], tf.int32)
    else:
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = target / tf.reduce_min(hw)
        # The max() guards the shorter side against float round-off landing on target - 1.
        size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), target)
    if method == "nearest":
        return tf.image.resize(image, size, method="nearest")
    # Anti-aliasing when down-sampling matches PIL's resize, which both reference loaders use.
    return tf.image.resize(tf.cast(image, tf.float32), size, method=method, antialias=True)


def _centre_crop(x: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(x)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return x[top:top + size, left:left + size, :]


def preprocess(example: dict[str, tf.Tensor], resolution: int, training: bool, random_crop: bool = False,
               flip: bool = False, crop_scale: float = 1.125, image_resize_method: str = "nearest",
               square_resize: bool = False, seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Resizes, crops, optionally flips and normalises one example.

    Args:
        example: `{"image": uint8 [h, w, 3], "mask": uint8 [h, w, 1] in {0, 1}}`; "mask" is optional.
        resolution: output side R.
        training: whether the augmentations below may be applied. Evaluation is always resize + centre
            crop.
        random_crop: when training, resize the shorter side to `floor(crop_scale * R)` and crop a random
            R x R window (PerturbGAN); otherwise resize to R and centre crop.
        flip: when training, flip image and mask left-right together with probability 1/2.
        crop_scale: ratio of the resized side to R before a random crop.
        image_resize_method: a `tf.image.resize` method for the image ("nearest" as in ReDO, or e.g.
            "bilinear"). Masks are always resized with nearest neighbour so they stay binary.
        square_resize: resize to a square, ignoring the aspect ratio (PerturbGAN), instead of resizing
            the shorter side.
        seed: int32/int64 [2] seed of the stateless random ops; drawn from the global generator when None.

    Returns:
        `{"image": float32 [R, R, 3] in [-1, 1], "mask": float32 [R, R, 1] in {0, 1}}` ("mask" only if
        the input had one).
    """
    if image_resize_method not in RESIZE_METHODS:
        raise ValueError(f"image_resize_method {image_resize_method!r} is not one of {RESIZE_METHODS}.")
    crop = training and random_crop
    target = int(math.floor(crop_scale * resolution)) if crop else resolution
    if target < resolution:
        raise ValueError(f"crop_scale {crop_scale} gives a side {target} smaller than resolution {resolution}.")

    image = _resize(example["image"], target, image_resize_method, square_resize)
    image = tf.clip_by_value(tf.cast(image, tf.float32) / 127.5 - 1.0, -1.0, 1.0)
    has_mask = "mask" in example
    if has_mask:
        mask = _resize(example["mask"], target, "nearest", square_resize)
        stacked = tf.concat([image, tf.cast(mask > 0, tf.float32)], axis=-1)
    else:
        stacked = image
    channels = 4 if has_mask else 3

    if (crop or (training and flip)) and seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    if crop or (training and flip):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if crop:
        stacked = tf.image.stateless_random_crop(stacked, [resolution, resolution, channels], seed=crop_seed)
    else:
        stacked = _centre_crop(stacked, resolution)
    if training and flip:
        stacked = tf.image.stateless_random_flip_left_right(stacked, seed=flip_seed)

    stacked = tf.ensure_shape(stacked, [resolution, resolution, channels])
    out = {"image": stacked[..., :3]}
    if has_mask:
        out["mask"] = stacked[..., 3:]
    return out


def preprocess_batch(batch: dict[str, tf.Tensor], training: bool, flip: bool = False,
                     seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Fast path of `preprocess` for a batch whose examples already are R x R (no resize or crop needed).

    Args:
        batch: `{"image": uint8 [B, R, R, 3], "mask": uint8 [B, R, R, 1] in {0, 1}}`; "mask" optional.
        training: whether to apply the random flip.
        flip: when training, flip each example (image and mask together) with probability 1/2.
        seed: int32/int64 [2] seed of the stateless flip decisions; drawn from the global generator when None.

    Returns:
        `{"image": float32 [B, R, R, 3] in [-1, 1], "mask": float32 [B, R, R, 1] in {0, 1}}`.
    """
    out = {"image": tf.cast(batch["image"], tf.float32) / 127.5 - 1.0}
    if "mask" in batch:
        out["mask"] = tf.cast(batch["mask"] > 0, tf.float32)
    if training and flip:
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        size = tf.shape(out["image"])[:1]
        flips = tf.random.stateless_uniform(size, seed=seed) < 0.5
        # One decision per example, shared by its image and mask.
        out = {k: tf.where(flips[:, None, None, None], tf.reverse(v, axis=[2]), v) for k, v in out.items()}
    return out

"""PerturbGAN's perturbations of the generated layers, on the training path only (docs/methods.md §1.1).

A random integer shift moves foreground and mask together, independently of z, so a generator
that puts background in the mask (or the object in the background) draws scenes that look wrong
once shifted. The background's contrast jitter decorrelates its appearance from the foreground.
"""
import tensorflow as tf
from keras import ops


def random_shifts(batch, size, fraction, seed):
    """Integer shifts `[batch, 2]` (dy, dx), each round(u), u ~ U[-fraction * size, fraction * size].

    Args:
        batch: number of samples.
        size: image side S.
        fraction: beta (0.125 in the paper; 0 disables the shift).
        seed: stateless seed `[2]`.
    """
    limit = fraction * size
    u = tf.random.stateless_uniform([batch, 2], seed, minval=-limit, maxval=limit)
    return tf.cast(tf.round(u), tf.int32)


def _shift_matrices(shifts, size):
    """`[batch, S, S]` matrices P with P[i, j] = 1 where j = i - shift: out = P @ in moves by +shift.

    Rows whose source j falls outside [0, S) are all zeros (one_hot of an out-of-range index),
    which is exactly the zero fill: no wrap-around, differentiable, and XLA-friendly.
    """
    target = tf.range(size)[None, :] - shifts[:, None]
    return tf.one_hot(target, size, dtype=tf.float32)


def shift_layers(layers, shifts):
    """Translates each sample's layers by its integer shift, zero-filling uncovered pixels.

    Args:
        layers: `[batch, S, S, C]` (foreground and mask concatenated, so they move together).
        shifts: `[batch, 2]` int (dy, dx); positive dy moves content down, positive dx right.
    Returns:
        `[batch, S, S, C]`.
    """
    height, width = layers.shape[1], layers.shape[2]
    rows = _shift_matrices(shifts[:, 0], height)
    cols = _shift_matrices(shifts[:, 1], width)
    moved = tf.einsum("bij,bjwc->biwc", rows, tf.cast(layers, tf.float32))
    return tf.einsum("bkw,biwc->bikc", cols, moved)


def contrast_jitter(background, strength, seed, factors=None):
    """Per-sample contrast change c ~ U[1 - s, 1 + s] around each channel's mean, clipped to its range.

    B' = clip((B - mean_ch) * c + mean_ch, min_ch(B), max_ch(B)); statistics per image and channel.

    Args:
        background: `[batch, H, W, 3]`.
        strength: s (0.3 gives (0.7, 1.3); 0 returns the input).
        seed: stateless seed `[2]`.
        factors: the factors c `[batch]` themselves instead of drawing them (injected by tests).
    """
    if not strength:
        return background
    batch = background.shape[0]
    if factors is not None:
        c = ops.reshape(ops.cast(factors, background.dtype), (-1, 1, 1, 1))
    else:
        c = tf.random.stateless_uniform([batch, 1, 1, 1], seed, 1.0 - strength, 1.0 + strength)
    mean = ops.mean(background, axis=(1, 2), keepdims=True)
    low = ops.min(background, axis=(1, 2), keepdims=True)
    high = ops.max(background, axis=(1, 2), keepdims=True)
    return ops.clip((background - mean) * c + mean, low, high)


def composite(foreground, mask, background):
    """Alpha compositing m * F + (1 - m) * B. Images `[b, H, W, 3]`, mask `[b, H, W, 1]`."""
    return mask * foreground + (1.0 - mask) * background

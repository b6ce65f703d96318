"""Crop equivariance of a mask network: F(crop(x)) should equal crop(F(x)).

A mask network that ignores its input (a fixed split, ReDO's known failure on small photo sets)
gives every crop the same mask, so its masks of a crop and the crop of its masks disagree; one
that follows the photo's content agrees with itself. A random box per image, cropped and resized
back to the network's side with bilinear sampling (differentiable in the image and the masks).
"""
import tensorflow as tf


def random_crop_boxes(batch, min_scale, seed):
    """`[batch, 4]` boxes (y1, x1, y2, x2) in [0, 1]: side s ~ U[min_scale, 1], position uniform.

    Args:
        batch: number of images.
        min_scale: smallest side of a box, as a fraction of the image (0 < min_scale <= 1).
        seed: stateless seed `[2]`.
    """
    u = tf.random.stateless_uniform([batch, 3], seed)
    side = min_scale + (1.0 - min_scale) * u[:, 0]
    y1 = (1.0 - side) * u[:, 1]
    x1 = (1.0 - side) * u[:, 2]
    return tf.stack([y1, x1, y1 + side, x1 + side], axis=1)


def crop(images, boxes, size):
    """Each image's box, resized to `size` x `size` (bilinear): `[b, size, size, C]`."""
    return tf.image.crop_and_resize(images, boxes, tf.range(tf.shape(images)[0]), [size, size])


def equivariance_loss(masks_of_crops, crops_of_masks):
    """`[b]` mean absolute difference between F(crop(x)) and crop(F(x)) over pixels and regions."""
    return tf.reduce_mean(tf.abs(masks_of_crops - crops_of_masks), axis=[1, 2, 3])

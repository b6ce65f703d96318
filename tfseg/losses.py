"""Pure loss functions, one per term of the methods' objectives.

Each returns *per-example* losses `[batch]` so the trainer can average them over the global
batch across replicas (`tf.nn.compute_average_loss`). Scalars that are already means over the
batch are documented as such.
"""
from keras import ops


def hinge_discriminator_loss(real_logits, fake_logits):
    """Hinge loss of D: max(0, 1 - D(x)) + max(0, 1 + D(y)).

    Args:
        real_logits: `[batch]` D on real images.
        fake_logits: `[batch]` D on fakes (same batch size).
    Returns:
        `[batch]` per-example loss.
    """
    return ops.relu(1.0 - real_logits) + ops.relu(1.0 + fake_logits)


def hinge_generator_loss(fake_logits):
    """Generator side of the hinge loss: -D(y). `[batch]` -> `[batch]`."""
    return -fake_logits


def information_conservation_loss(predicted_codes, codes):
    """ReDO's lambda_z term without lambda: mean over nz of (delta(y) - z)^2.

    Args:
        predicted_codes: `[batch, nz]` the encoder's estimate for the redrawn region.
        codes: `[batch, nz]` the code that drew it.
    Returns:
        `[batch]` per-example mean squared error.
    """
    return ops.mean(ops.square(predicted_codes - codes), axis=-1)


def mask_coverage(masks):
    """Fraction of each image that a soft mask covers. `[batch, H, W, 1]` -> `[batch]`."""
    return ops.mean(masks, axis=(1, 2, 3))


def mask_binariness(masks):
    """Mean of min(m, 1 - m): 0 for a binary mask, 0.5 for a flat grey one. `[batch,H,W,1]` -> `[batch]`."""
    return ops.mean(ops.minimum(masks, 1.0 - masks), axis=(1, 2, 3))

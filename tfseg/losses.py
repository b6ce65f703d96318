"""Pure loss functions, one per term of the methods' objectives.

Each returns *per-example* losses `[batch]` so the trainer can average them over the global
batch across replicas (`tf.nn.compute_average_loss`). Scalars that are already means over the
batch are documented as such.
"""
import tensorflow as tf
from keras import ops


def hinge_discriminator_loss(real_logits, fake_logits):
    """Hinge loss of D: max(0, 1 - D(x)) + max(0, 1 + D(y)).

    Args:
        real_logits: `[batch]` D on real images.
        fake_logits: `[k * batch]` D on k fakes per real image, as k blocks of `batch` (k = 1: one
            fake each; ReDO's every-region mode: one per region). Each block is averaged.
    Returns:
        `[batch]` per-example loss.
    """
    return ops.relu(1.0 - real_logits) + per_source_example(ops.relu(1.0 + fake_logits), real_logits.shape[0])


def per_source_example(values, batch):
    """`[k * batch, ...]` values, k blocks of `batch` (k fakes made from each source example), averaged
    over the k blocks: `[batch, ...]`. k = 1 returns `values` itself."""
    if values.shape[0] == batch:
        return values
    return ops.mean(ops.reshape(values, (-1, batch) + tuple(values.shape[1:])), axis=0)


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


# -- Wasserstein GAN with gradient penalty (PerturbGAN, docs/methods.md §1.3) ---------------------------
def wasserstein_discriminator_loss(real_scores, fake_scores):
    """Critic side of the WGAN loss: D(fake) - D(real). `[batch]`, `[batch]` -> `[batch]`."""
    return fake_scores - real_scores


def wasserstein_generator_loss(fake_scores):
    """Generator side of the WGAN loss: -D(fake). `[batch]` -> `[batch]`."""
    return -fake_scores


def drift_loss(real_scores):
    """ProGAN's drift term D(x)^2 on real scores, keeps the critic near 0. `[batch]` -> `[batch]`."""
    return ops.square(real_scores)


def interpolate(real, fake, u):
    """x_bar = u * real + (1 - u) * fake, u `[batch]` in [0, 1], images `[batch, H, W, C]`."""
    u = ops.reshape(u, (-1, 1, 1, 1))
    return u * real + (1.0 - u) * fake


def gradient_penalty(critic, points):
    """WGAN-GP term without lambda: (||grad_x D(x)||_2 - 1)^2 at `points`.

    Args:
        critic: callable `[batch, H, W, C] -> [batch]` scores.
        points: `[batch, H, W, C]` (usually `interpolate(real, fake, u)`, treated as constants).
    Returns:
        `[batch]` per-example penalty.
    """
    points = tf.stop_gradient(points)
    with tf.GradientTape() as tape:
        tape.watch(points)
        scores = critic(points)
    grads = tape.gradient(scores, points)  # d(sum of scores): per-example grads
    norms = ops.sqrt(ops.sum(ops.square(grads), axis=(1, 2, 3)) + 1e-12)
    return ops.square(norms - 1.0)


# -- mask priors (PerturbGAN §1.3, Labels4Free §3.4) ----------------------------------------------
def mask_size_loss(masks, min_coverage):
    """Hinge on too small masks: max(0, eta - mean(m)), per sample and mask channel.

    Args:
        masks: `[batch, H, W, k]` in [0, 1].
        min_coverage: eta, the smallest mean coverage that costs nothing.
    Returns:
        `[batch]`: the hinge averaged over the k channels (multiply by gamma_1 outside).
    """
    coverage = ops.mean(masks, axis=(1, 2))
    return ops.mean(ops.relu(min_coverage - coverage), axis=-1)


def mask_excess_loss(masks, max_coverage):
    """Hinge on too large masks: max(0, mean(m) - max_coverage) (Labels4Free's L_bg). `[b,H,W,k]` -> `[b]`."""
    coverage = ops.mean(masks, axis=(1, 2))
    return ops.mean(ops.relu(coverage - max_coverage), axis=-1)


def mask_binarization_loss(masks):
    """mean(min(m, 1 - m)) over pixels and channels: 0 for binary masks. `[b,H,W,k]` -> `[b]`."""
    return mask_binariness(masks)


# -- non-saturating logistic GAN with R1 (StyleGAN2, Labels4Free) ---------------------------------
def logistic_discriminator_loss(real_logits, fake_logits):
    """softplus(-D(x)) + softplus(D(fake)). `[batch]`, `[batch]` -> `[batch]`."""
    return ops.softplus(-real_logits) + ops.softplus(fake_logits)


def logistic_generator_loss(fake_logits):
    """Non-saturating generator loss softplus(-D(fake)). `[batch]` -> `[batch]`."""
    return ops.softplus(-fake_logits)


def path_lengths(generator, ws, noise, seed):
    """StyleGAN2's path lengths: `||J_w^T y||` per sample, for the images G(ws) and y ~ N(0, I) / sqrt(H W),
    the gradient's norm over each style vector averaged over the layers (as rosinality's).

    Args:
        generator: a StyleGAN2 `Generator` (called with `input_is_latent=True`).
        ws: `[b, num_ws, w_dim]` per-layer styles.
        noise: its noise maps. seed: stateless seed `[2]` of y.
    Returns:
        `[b]`, differentiable in G's weights (the gradient is taken inside the caller's tape).
    """
    with tf.GradientTape() as tape:
        tape.watch(ws)
        images = tf.cast(generator(ws, noise=noise, input_is_latent=True), tf.float32)
        y = tf.random.stateless_normal(tf.shape(images), seed) / float(images.shape[1] * images.shape[2]) ** 0.5
        projected = tf.reduce_sum(images * y)
    grads = tape.gradient(projected, ws)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=2), axis=1))


def r1_penalty(critic, real_images, with_scores=False):
    """R1 without gamma/2: ||grad_x D(x)||^2 on real images. Returns `[batch]`, and with
    `with_scores` also D's scores of the real images (a loss that uses them needs no second pass)."""
    real_images = tf.stop_gradient(real_images)
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        scores = critic(real_images)
    grads = tape.gradient(scores, real_images)
    penalty = ops.sum(ops.square(grads), axis=(1, 2, 3))
    return (penalty, scores) if with_scores else penalty

"""The Adam every GAN network of tfseg trains with: beta_1 = 0, as in all three reference codes."""
import keras


def gan_adam(learning_rate, beta_2=0.99, epsilon=1e-8, lazy_ratio=1.0):
    """Adam(beta_1 = 0, beta_2), scaled for a lazily run regulariser: lr * c, beta_2 ** c.

    Args:
        learning_rate: the nominal learning rate.
        beta_2: 0.99 in StyleGAN / StyleGAN2 (PerturbGAN, Labels4Free), 0.9 in ReDO.
        epsilon: 1e-8 as PyTorch (the references); ReDO keeps Keras' 1e-7, measured with it.
        lazy_ratio: c = interval / (interval + 1) keeps the optimizer's per-step dynamics when a
            regulariser runs every `interval` steps (StyleGAN2 appendix B); 1 when none does.
    """
    return keras.optimizers.Adam(learning_rate * lazy_ratio, beta_1=0.0, beta_2=beta_2**lazy_ratio,
                                 epsilon=epsilon)

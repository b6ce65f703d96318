"""Mixed precision by gin: `tfseg.training.TrainConfig.precision`.

`mixed_bfloat16` / `mixed_float16` compute the networks in 16 bits with float32 variables (Keras'
dtype policies). What must stay exact stays float32: every network hands back float32
(`tfseg.modeling.layers.float32`), so masks, composites, losses, the discriminator's score and the
gradient penalty are computed in float32; float16 adds dynamic loss scaling
(`tfseg.methods.optimizers`). Training only: evaluation, export and serving rebuild the networks in
float32 from the float32 variables of the checkpoint (with the run's loss-scaled optimizers, so the
checkpoint's structure matches: `tfseg.training.loading`).
"""
import contextlib

import keras

from tfseg.methods import optimizers

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def policy(name):
    """Networks and optimizers built inside use the dtype policy `name`; the global one is restored.

    Keras' policy is process-wide, hence a context: an in-process training does not leave 16-bit
    networks behind for what runs next (an evaluation, a test). `name` is one of `POLICIES`
    (`TrainConfig` validates it).
    """
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        with optimizers.loss_scaling(loss_scaled(name)):
            yield
    finally:
        keras.config.set_dtype_policy(before)


def loss_scaled(name):
    """Whether training under policy `name` scales the loss (float16: its exponent range is narrow)."""
    return name == "mixed_float16"

"""Spectral normalisation as the papers' PyTorch code does it (`torch.nn.utils.spectral_norm`).

A layer's kernel W stays the trained variable; every call uses W / sigma(W), where sigma is the
largest singular value of W reshaped to `[fan_in, out]`, estimated by one power-iteration step per
training call from vectors u, v kept between calls. u and v are constants of the gradient (as in
PyTorch), but sigma = u^T W v is not: the gradient flows through sigma to W. At inference u and v
are read, not updated.

Keras' `SpectralNormalization` differs (docs/methods.md §5): on every training call it overwrites
the kernel variable with W / sigma and runs the layer on it, so no gradient reaches W through sigma,
the optimizer then steps from the already divided weights, and inference uses whatever the last
update left. `ReDOSettings.spectral_norm` picks either ("reference", the default, or "keras", what
tfseg used before); `conv` and `dense` in `tfseg.modeling.layers` build them.
"""
import math

import keras
from keras import ops

#: `spectral_norm` values the layer factories accept (False: none).
STYLES = ("reference", "keras")


def _normalize(x, eps=1e-12):
    """x / max(||x||, eps), PyTorch's `F.normalize`."""
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), eps)


class _SpectralKernel:
    """Mixin for a Keras layer whose `kernel` property reads `_kernel` (Conv, Dense): the kernel
    becomes W / sigma(W), with power-iteration state u `[out]` and v `[fan_in]`."""

    power_iterations = 1

    def build(self, input_shape):
        super().build(input_shape)
        out, fan_in = self._kernel.shape[-1], math.prod(self._kernel.shape[:-1])
        # Random unit vectors, as PyTorch draws them (normal, then normalised), drawn like the
        # kernel's initial values, so the run's seed fixes both.
        self.spectral_u = self.add_weight(shape=(out,), initializer=keras.initializers.RandomNormal(),
                                          trainable=False, name="spectral_u")
        self.spectral_v = self.add_weight(shape=(fan_in,), initializer=keras.initializers.RandomNormal(),
                                          trainable=False, name="spectral_v")
        self.spectral_u.assign(_normalize(self.spectral_u))
        self.spectral_v.assign(_normalize(self.spectral_v))
        self._training_call = False

    def normalized_kernel(self, update):
        """W / sigma; with `update`, one power-iteration step first, stored in u and v."""
        weights = self._kernel
        matrix = ops.reshape(weights, (-1, weights.shape[-1]))  # [fan_in, out] = PyTorch's W^T
        u, v = self.spectral_u.value, self.spectral_v.value
        if update:
            for _ in range(self.power_iterations):
                v = _normalize(ops.matmul(matrix, u))                    # W^T u
                u = _normalize(ops.matmul(ops.transpose(matrix), v))     # W v
            u, v = ops.stop_gradient(u), ops.stop_gradient(v)
            self.spectral_u.assign(u)
            self.spectral_v.assign(v)
        sigma = ops.sum(u * ops.matmul(ops.transpose(matrix), v))        # u^T W v
        return weights / sigma

    @property
    def kernel(self):
        return self.normalized_kernel(update=self._training_call)

    def call(self, inputs, training=False):
        # The parent's call reads `self.kernel` once; the flag tells it to iterate first.
        self._training_call = bool(training)
        try:
            return super().call(inputs)
        finally:
            self._training_call = False


class SpectralConv2D(_SpectralKernel, keras.layers.Conv2D):
    """A Conv2D whose kernel is spectrally normalised with PyTorch's semantics."""


class SpectralDense(_SpectralKernel, keras.layers.Dense):
    """A Dense layer whose kernel is spectrally normalised with PyTorch's semantics."""

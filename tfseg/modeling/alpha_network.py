"""Labels4Free's alpha network A: a soft foreground mask from a frozen StyleGAN2's features (docs/methods.md §3.3).

A reads the post-activation outputs of both StyledConvs of the highest-resolution synthesis blocks
(6 of them, or every block of a smaller generator), projects each to 3 channels with its own 1x1
conv, and merges them coarse to fine:

    block 1 (r0):     concat(proj_a, proj_b)                          -> bicubic x2  (6 ch)
    blocks 2..n-1:    concat(proj_a, proj_b, running) -> 1x1 12->6 -> LReLU(0.2) -> bicubic x2
    block n (S):      concat(proj_a, proj_b) + running -> 1x1 6->1 -> sigmoid     = alpha

Upsampling is PyTorch's bicubic with align_corners=True (cubic coefficient a = -0.75), written as
two fixed interpolation matrices, because `tf.image.resize` uses a = -0.5 and half-pixel centres
(docs/methods.md §5) and weights trained in PyTorch would see a different map. Initialisation is
PyTorch's Conv2d default (Kaiming-uniform with a = sqrt(5): U(+-1/sqrt(fan_in)) for weights and
biases), so the network starts where the reference does.
"""
import functools
import math

import keras
import numpy as np
from keras import ops

from tfseg.modeling import layers as L

#: How many of the generator's highest-resolution blocks A reads (the reference's choice).
NUM_BLOCKS = 6
_CUBIC_A = -0.75


def _cubic_weights(t):
    """PyTorch's 4 cubic convolution weights for fractional offset t in [0, 1)."""
    a = _CUBIC_A

    def near(x):    # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):     # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return (far(t + 1), near(t), near(1 - t), far(2 - t))


@functools.lru_cache(maxsize=None)
def bicubic_matrix(size_in, size_out):
    """`[size_out, size_in]` matrix of 1-D bicubic resampling with align_corners=True (PyTorch).

    Output pixel o samples the input at x = o (size_in - 1) / (size_out - 1); the 4 taps at
    floor(x) - 1 .. floor(x) + 2 are clamped to the border, as `upsample_bicubic2d` does.
    """
    matrix = np.zeros((size_out, size_in), np.float64)
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    for o in range(size_out):
        x = o * scale
        i = int(math.floor(x))
        for k, w in zip(range(i - 1, i + 3), _cubic_weights(x - i)):
            matrix[o, min(max(k, 0), size_in - 1)] += w
    return matrix.astype(np.float32)


def upsample_bicubic(x):
    """x2 bicubic upsampling, align_corners=True, a = -0.75. `[b, H, W, C] -> [b, 2H, 2W, C]`."""
    h, w = x.shape[1], x.shape[2]
    mh = ops.convert_to_tensor(bicubic_matrix(h, 2 * h), dtype=x.dtype)
    mw = ops.convert_to_tensor(bicubic_matrix(w, 2 * w), dtype=x.dtype)
    x = ops.einsum("oh,bhwc->bowc", mh, x)
    return ops.einsum("pw,bowc->bopc", mw, x)


def _conv1x1(filters, name):
    # PyTorch's default init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias the same.
    return keras.layers.Conv2D(
        filters, 1, name=name,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=_FanInUniform())


class _FanInUniform(keras.initializers.Initializer):
    """Bias init U(+-1/sqrt(fan_in)); Keras gives bias initializers only the bias shape, so the
    fan-in is set by `AlphaNetwork.build` before the conv builds."""

    fan_in = 1

    def __call__(self, shape, dtype=None):
        limit = 1.0 / math.sqrt(self.fan_in)
        return keras.random.uniform(shape, -limit, limit, dtype=dtype)


class AlphaNetwork(keras.layers.Layer):
    """Labels4Free's A (see the module docstring).

    Args:
        num_blocks: blocks read, counted from the finest; `min(6, generator blocks)`.
        hidden: channels of each projection (3) and of the running map (2 * hidden = 6).

    Call: `features`, the generator's `return_features` list of `(f0, f1)` pairs (one per
    synthesis block, coarse to fine, `[b, r, r, C_r]`); only `features[-num_blocks:]` is read ->
    alpha `[b, S, S, 1]` in (0, 1). The features should carry no gradient (G is frozen).
    """

    def __init__(self, num_blocks=NUM_BLOCKS, hidden=3, **kwargs):
        super().__init__(**kwargs)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.hidden = hidden
        self.projections = [(_conv1x1(hidden, f"project_{j}_a"), _conv1x1(hidden, f"project_{j}_b"))
                            for j in range(num_blocks)]
        # Blocks 2 .. n-1 mix their projections into the running map.
        self.mixers = [_conv1x1(2 * hidden, f"mix_{j}") for j in range(1, num_blocks - 1)]
        self.head = _conv1x1(1, "head")

    def _build_conv(self, conv, shape):
        conv.bias_initializer = _FanInUniform()
        conv.bias_initializer.fan_in = shape[-1]
        conv.build(shape)

    def build(self, features_shape):
        shapes = list(features_shape)[-self.num_blocks:]
        for (proj_a, proj_b), (shape_a, shape_b) in zip(self.projections, shapes):
            self._build_conv(proj_a, tuple(shape_a))
            self._build_conv(proj_b, tuple(shape_b))
        for mixer, (shape_a, _) in zip(self.mixers, shapes[1:-1]):
            self._build_conv(mixer, tuple(shape_a[:-1]) + (4 * self.hidden,))
        self._build_conv(self.head, tuple(shapes[-1][0][:-1]) + (2 * self.hidden,))

    def call(self, features):
        features = list(features)
        if len(features) < self.num_blocks:
            raise ValueError(f"AlphaNetwork reads {self.num_blocks} blocks, got {len(features)}")
        features = features[-self.num_blocks:]
        running = None
        for j, ((proj_a, proj_b), (f0, f1)) in enumerate(zip(self.projections, features)):
            projected = ops.concatenate([proj_a(f0), proj_b(f1)], axis=-1)
            if j == self.num_blocks - 1:
                x = projected if running is None else projected + running
                return ops.sigmoid(L.float32(self.head(x)))
            if running is None:
                running = projected
            else:
                running = ops.leaky_relu(
                    self.mixers[j - 1](ops.concatenate([projected, running], axis=-1)),
                    negative_slope=0.2)
            running = upsample_bicubic(running)
        raise AssertionError("unreachable")

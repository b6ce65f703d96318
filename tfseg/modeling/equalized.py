"""Equalized learning-rate layers of ProGAN / StyleGAN (docs/methods.md §1.2 and §3.2).

Weights are stored ~ N(0, 1) / lr_mul and multiplied at run time by gain * lr_mul / sqrt(fan_in),
so Adam moves every layer at the same relative speed. `lr_mul` < 1 slows a layer down: with Adam
that is the same as a separate optimizer at lr * lr_mul (how StyleGAN's mapping network gets its
0.01x learning rate), but needs only one optimizer. StyleGAN v1 uses gain sqrt(2) everywhere;
StyleGAN2 uses gain 1 and multiplies the activation by sqrt(2) instead.
"""
import math

import keras
from keras import ops

SQRT2 = math.sqrt(2.0)


def channels_at(resolution, channel_base, max_channels):
    """StyleGAN feature width at a resolution: `min(channel_base // resolution, max_channels)`."""
    return max(1, min(channel_base // resolution, max_channels))


def leaky_relu(x, alpha=0.2):
    return ops.leaky_relu(x, negative_slope=alpha)


class EqualDense(keras.layers.Layer):
    """Dense layer with equalized learning rate.

    Args:
        units: output size.
        gain: run-time gain numerator (sqrt(2) = He).
        lr_mul: learning-rate multiplier (0.01 for mapping networks).
        bias_init: initial bias value (1 for style scales).
        use_bias: add a bias (also scaled by lr_mul).
    Call: `[batch, fan_in] -> [batch, units]`.
    """

    def __init__(self, units, gain=SQRT2, lr_mul=1.0, bias_init=0.0, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.gain = gain
        self.lr_mul = lr_mul
        self.bias_init = bias_init
        self.use_bias = use_bias

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.scale = self.gain * self.lr_mul / math.sqrt(fan_in)
        self.kernel = self.add_weight(
            shape=(fan_in, self.units), name="kernel",
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_mul))
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,), name="bias",
                initializer=keras.initializers.Constant(self.bias_init / self.lr_mul))

    def call(self, x):
        y = ops.matmul(x, self.kernel * self.scale)
        if self.use_bias:
            y = y + self.bias * self.lr_mul
        return y


class EqualConv2D(keras.layers.Layer):
    """Conv2D (stride 1 or 2, 'same' or 'valid') with equalized learning rate.

    Call: `[batch, H, W, C_in] -> [batch, H', W', filters]`.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="same", gain=SQRT2, use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.gain = gain
        self.use_bias = use_bias

    def build(self, input_shape):
        fan_in = input_shape[-1] * self.kernel_size ** 2
        self.scale = self.gain / math.sqrt(fan_in)
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            name="kernel", initializer=keras.initializers.RandomNormal(stddev=1.0))
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer="zeros")

    def call(self, x):
        y = ops.conv(x, self.kernel * self.scale, strides=self.strides, padding=self.padding)
        if self.use_bias:
            y = y + self.bias
        return y


class FusedScaleConv2D(keras.layers.Layer):
    """A 3x3 equalized conv fused with a x2 resampling, as StyleGAN v1 does at 128 px and above.

    The stored 3x3 kernel (times sqrt(2 / fan_in), fan_in = C_in x 9) is zero-padded to 5x5 and
    summed over its four 2x2-shifted 4x4 windows / 4, giving a 4x4 kernel that is applied with
    stride 2: a transposed conv for "up" (`[b, H, W, C_in] -> [b, 2H, 2W, filters]`, equal to
    nearest x2 then the 3x3 conv smoothed by a 2x2 box) or a conv for "down"
    (`[b, H, W, C_in] -> [b, H/2, W/2, filters]`, the 3x3 conv then a 2x2 average pool, in one op).
    The kernel is stored `[3, 3, C_in, filters]` in both directions.
    """

    def __init__(self, filters, direction, gain=SQRT2, **kwargs):
        super().__init__(**kwargs)
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        self.filters = filters
        self.direction = direction
        self.gain = gain

    def build(self, input_shape):
        fan_in = input_shape[-1] * 9
        self.scale = self.gain / math.sqrt(fan_in)
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters), name="kernel",
                                      initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer="zeros")

    def kernel4(self, dtype):
        """The 4x4 kernel `[4, 4, C_in, filters]` the stride-2 op applies."""
        k = ops.pad(ops.cast(self.kernel, dtype) * self.scale, [[1, 1], [1, 1], [0, 0], [0, 0]])
        return (k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]) / 4.0

    def call(self, x):
        k = self.kernel4(x.dtype)
        if self.direction == "down":
            y = ops.conv(x, k, strides=2, padding="same")
        else:
            y = ops.conv_transpose(x, ops.transpose(k, (0, 1, 3, 2)), strides=2, padding="same")
        return y + ops.cast(self.bias, y.dtype)


def blur(x):
    """Depthwise [1,2,1] x [1,2,1] / 16 blur with zero padding 1 (StyleGAN v1). `[b,H,W,C]`."""
    channels = x.shape[-1]
    k = ops.convert_to_tensor([1.0, 2.0, 1.0], dtype=x.dtype)  # 16-bit under mixed precision
    kernel = ops.outer(k, k) / 16.0
    kernel = ops.tile(ops.reshape(kernel, (3, 3, 1, 1)), (1, 1, channels, 1))
    return ops.depthwise_conv(x, kernel, strides=1, padding="same")


def pixel_norm(x, epsilon=1e-8):
    """x / sqrt(mean(x^2) + eps) over the last axis (StyleGAN's normalisation of z)."""
    return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + epsilon)


def minibatch_stddev(x, group_size=None):
    """Appends one feature map: the mean over C, H, W of the per-group batch std (+1e-8 inside sqrt).

    Args:
        x: `[batch, H, W, C]`.
        group_size: statistics over groups of this many samples (StyleGAN2: min(batch, 4)); None:
            the whole batch (StyleGAN v1). The batch must be divisible by the group size.
    Returns:
        `[batch, H, W, C + 1]`.
    """
    b, h, w, c = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    static_b = x.shape[0]
    group = static_b if group_size is None else min(group_size, static_b)
    y = ops.reshape(x, (group, -1, h, w, c))
    y = y - ops.mean(y, axis=0, keepdims=True)
    y = ops.sqrt(ops.mean(ops.square(y), axis=0) + 1e-8)        # [b/group, h, w, c]
    y = ops.mean(y, axis=(1, 2, 3), keepdims=True)                # [b/group, 1, 1, 1]
    y = ops.tile(y, (group, h, w, 1))                             # [b, h, w, 1]
    del b
    return ops.concatenate([x, y], axis=-1)

"""StyleGAN2 generator and residual discriminator (docs/methods.md §3.2), rosinality-port semantics, NHWC.

Labels4Free freezes a pretrained StyleGAN2 and reads its features, so these networks follow the
rosinality PyTorch port layer for layer (`tools/convert_stylegan2.py` maps its state dict onto them):

* equalized learning rate everywhere, gain 1, activations `lrelu(x + b, 0.2) * sqrt(2)`;
* modulated convolutions with weight demodulation, styles with bias init 1;
* upsampling conv = transposed 3x3 stride 2 + FIR [1,3,3,1] blur; toRGB skips upsampled by the
  same FIR (upfirdn2d semantics, including its paddings);
* per-layer noise with a learned scalar strength;
* residual discriminator with blur-then-stride-2 convs and minibatch stddev.

Images are `[batch, H, W, 3]` in [-1, 1].

Channel widths follow StyleGAN2-ADA's `min(channel_base // res, max_channels)`: config-f (the
rosinality `channel_multiplier=2` models Labels4Free loads) is `channel_base=32768, max_channels=512`;
`channel_multiplier=1` is `channel_base=16384`. A CPU-sized net is e.g. `channel_base=2048,
max_channels=64`.

Modulated convolutions are computed as "scale the input by the style, run one shared convolution,
scale the output by the demodulation factor" (rosinality's `fused=False` path). That is exactly the
per-sample-weight grouped convolution of the reference, because modulation only scales input
channels and demodulation only scales output channels, but it runs as one ordinary (XLA-friendly)
convolution for the whole batch instead of a grouped convolution with `groups = batch`.
"""
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfseg.modeling.equalized import (EqualConv2D, EqualDense, channels_at, minibatch_stddev,
                                      pixel_norm)
from tfseg.modeling import layers as L
from tfseg.modeling.resolutions import power_of_two_log2

SQRT2 = math.sqrt(2.0)
_FIR = (1.0, 3.0, 3.0, 1.0)


def _log2(resolution):
    return power_of_two_log2(resolution, 4, "StyleGAN2")


# -- FIR filtering (upfirdn2d with the [1,3,3,1] kernel) -------------------------------------------
def fir_filter(x, pad0, pad1, gain=1.0):
    """upfirdn2d(x, k, up=1, down=1, pad=(pad0, pad1)) with k = [1,3,3,1] x [1,3,3,1] / 64 * gain.

    Args:
        x: `[batch, H, W, C]`.
        pad0, pad1: zero padding before / after, on both spatial axes.
        gain: kernel multiplier (4 after a x2 upsampling keeps the mean).
    Returns:
        `[batch, H + pad0 + pad1 - 3, W + pad0 + pad1 - 3, C]`.
    """
    channels = x.shape[-1]
    k = np.asarray(_FIR, np.float32)
    kernel = np.outer(k, k) / np.sum(k) ** 2 * gain    # symmetric: no flip needed (upfirdn2d convolves)
    kernel = np.tile(kernel[:, :, None, None], (1, 1, channels, 1)).astype(np.float32)
    x = ops.pad(x, [[0, 0], [pad0, pad1], [pad0, pad1], [0, 0]])
    return ops.depthwise_conv(x, ops.cast(kernel, x.dtype), strides=1, padding="valid")


def _zero_upsample(x):
    """Inserts a zero after every pixel on both axes: `[b, H, W, C] -> [b, 2H, 2W, C]`."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    x = ops.stack([x, ops.zeros_like(x)], axis=3)              # [b, H, W, 2, C]
    x = ops.reshape(x, (-1, h, 2 * w, c))
    x = ops.stack([x, ops.zeros_like(x)], axis=2)              # [b, H, 2, 2W, C]
    return ops.reshape(x, (-1, 2 * h, 2 * w, c))


def upsample_fir(x):
    """x2 upsampling of rosinality's `Upsample([1,3,3,1])`: upfirdn2d(up=2, pad=(2, 1)), gain 4.

    `[batch, H, W, C] -> [batch, 2H, 2W, C]`.
    """
    return fir_filter(_zero_upsample(x), 2, 1, gain=4.0)


def fused_leaky_relu(x, bias, alpha=0.2):
    """StyleGAN2's activation: `leaky_relu(x + bias, alpha) * sqrt(2)` (bias on the last axis)."""
    return ops.leaky_relu(x + bias, negative_slope=alpha) * SQRT2


class FusedLeakyReLU(keras.layers.Layer):
    """Per-channel bias (init 0), LReLU(0.2), times sqrt(2). `[..., C] -> [..., C]`."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), name="bias", initializer="zeros")

    def call(self, x):
        return fused_leaky_relu(x, self.bias)


# -- generator layers -----------------------------------------------------------------------------
class MappingNetwork(keras.layers.Layer):
    """z -> w: PixelNorm, then `num_layers` x [EqualDense(w_dim, lr_mul), fused bias + LReLU * sqrt2].

    Args:
        z_dim: size of z (the first layer's fan-in).
        w_dim: size of w and of every hidden layer.
        num_layers: number of dense layers (8 in StyleGAN2).
        lr_mul: learning-rate multiplier of the dense layers (0.01).
    Call: `[batch, z_dim] -> [batch, w_dim]`.
    """

    def __init__(self, z_dim, w_dim, num_layers=8, lr_mul=0.01, **kwargs):
        super().__init__(**kwargs)
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_layers = num_layers
        self.lr_mul = lr_mul
        # gain 1: the sqrt(2) lives in the activation (StyleGAN2), unlike StyleGAN v1.
        self.dense = [EqualDense(w_dim, gain=1.0, lr_mul=lr_mul, name=f"dense_{i}")
                      for i in range(num_layers)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense:
            if not layer.built:
                layer.build(shape)
            shape = shape[:-1] + (self.w_dim,)

    def call(self, z):
        x = pixel_norm(z)
        for layer in self.dense:
            x = ops.leaky_relu(layer(x), negative_slope=0.2) * SQRT2
        return x


class ModulatedConv2D(keras.layers.Layer):
    """Modulated (and optionally demodulated) convolution, optionally with x2 upsampling.

    Semantics (rosinality `ModulatedConv2d`): s = EqualDense(w -> C_in, bias init 1);
    W'[b] = W / sqrt(C_in k^2) * s[b] (per input channel); with demodulation
    W''[b] = W'[b] / sqrt(sum_{i,kh,kw} W'[b]^2 + 1e-8) per output channel.
    Computed as conv(x * s, W / sqrt(fan_in)) * demod (see the module docstring), which equals
    the grouped convolution with per-sample weights.

    Upsampling: transposed conv stride 2 (no padding) with the same weights, then the FIR blur
    [1,3,3,1] (x4, pad (1, 1)), as in the reference.

    Args:
        filters: C_out.
        kernel_size: k (odd; 'same' padding without upsampling).
        demodulate: normalise each output channel per sample (False for toRGB).
        upsample: x2 spatial upsampling.
    Call: `(x [batch, H, W, C_in], w [batch, w_dim]) -> [batch, H', W', filters]`, H' = H or 2H.
    """

    def __init__(self, filters, kernel_size, demodulate=True, upsample=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.affine = None

    def build(self, x_shape, w_shape):
        in_channels = x_shape[-1]
        self.scale = 1.0 / math.sqrt(in_channels * self.kernel_size**2)
        # HWIO; the rosinality weight [1, O, I, kh, kw] maps here by a plain transpose.
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters), name="kernel",
            initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.affine = EqualDense(in_channels, gain=1.0, bias_init=1.0, name="affine")
        self.affine.build(tuple(w_shape))

    def call(self, x, w):
        styles = self.affine(w)                                        # [b, C_in]
        kernel = self.kernel * self.scale
        x = x * styles[:, None, None, :]
        if self.upsample:
            h, wd = x.shape[1], x.shape[2]
            k = self.kernel_size
            out_shape = ops.stack([ops.shape(x)[0], (h - 1) * 2 + k, (wd - 1) * 2 + k, self.filters])
            # conv2d_transpose wants [kh, kw, C_out, C_in]; no spatial flip (both frameworks
            # define it as the adjoint of cross-correlation).
            y = tf.nn.conv2d_transpose(x, ops.transpose(kernel, (0, 1, 3, 2)), out_shape,
                                       strides=2, padding="VALID")
            p = (len(_FIR) - 2) - (k - 1)
            y = fir_filter(y, (p + 1) // 2 + 1, p // 2 + 1, gain=4.0)
        else:
            y = ops.conv(x, kernel, strides=1, padding="same")
        if self.demodulate:
            # sum_{i,kh,kw} (W s_i)^2 = sum_i s_i^2 * sum_{kh,kw} W_i^2: one [b,I] x [I,O] matmul.
            # In float32 even under mixed precision: the sum of squares overflows float16.
            w_sq = ops.sum(ops.square(ops.cast(kernel, "float32")), axis=(0, 1))   # [C_in, C_out]
            s_sq = ops.square(ops.cast(styles, "float32"))
            demod = ops.rsqrt(ops.matmul(s_sq, w_sq) + 1e-8)                       # [b, C_out]
            y = y * ops.cast(demod, y.dtype)[:, None, None, :]
        return y


class NoiseInjection(keras.layers.Layer):
    """x + strength * noise, strength a learned scalar (init 0).

    Call: `(x [batch, H, W, C], noise=None)`; noise `[batch or 1, H, W, 1]`, or None for a fresh
    N(0, 1) map per sample drawn from this layer's SeedGenerator.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.strength = self.add_weight(shape=(), name="strength", initializer="zeros")

    def call(self, x, noise=None):
        if noise is None:
            shape = (ops.shape(x)[0], x.shape[1], x.shape[2], 1)
            noise = keras.random.normal(shape, seed=self.seed_generator, dtype=x.dtype)
        return x + self.strength * noise


class StyledConv(keras.layers.Layer):
    """ModulatedConv2D -> NoiseInjection -> FusedLeakyReLU (rosinality `StyledConv`).

    Call: `(x [batch, H, W, C_in], w [batch, w_dim], noise=None) -> [batch, H', W', filters]`.
    """

    def __init__(self, filters, kernel_size=3, upsample=False, demodulate=True, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.conv = ModulatedConv2D(filters, kernel_size, demodulate=demodulate, upsample=upsample,
                                    name="conv")
        self.noise = NoiseInjection(seed=seed, name="noise")
        self.activate = FusedLeakyReLU(name="activate")

    def build(self, x_shape, w_shape):
        self.conv.build(x_shape, w_shape)
        h = x_shape[1] * 2 if self.conv.upsample and x_shape[1] else x_shape[1]
        out_shape = (x_shape[0], h, h, self.conv.filters)
        self.noise.build(out_shape)
        self.activate.build(out_shape)

    def call(self, x, w, noise=None):
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(keras.layers.Layer):
    """Modulated 1x1 conv to RGB without demodulation, + bias, + the FIR-upsampled previous RGB.

    Call: `(x [batch, H, W, C], w [batch, w_dim], skip=None [batch, H/2, W/2, 3]) -> [batch, H, W, 3]`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = ModulatedConv2D(3, 1, demodulate=False, name="conv")

    def build(self, x_shape, w_shape, skip_shape=None):
        self.conv.build(x_shape, w_shape)
        self.bias = self.add_weight(shape=(3,), name="bias", initializer="zeros")

    def call(self, x, w, skip=None):
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + upsample_fir(skip)
        return out


class SynthesisBlock(keras.layers.Layer):
    """One resolution of the synthesis net: up-StyledConv, StyledConv, ToRGB with skip.

    Call: `(x [b, r, r, C_in], ws [b, 3, w_dim], skip [b, r, r, 3], noise0, noise1)` ->
    `(x [b, 2r, 2r, filters], skip [b, 2r, 2r, 3], (f0, f1))`, f0/f1 the post-activation
    outputs of the two StyledConvs (f1 is x).
    """

    def __init__(self, filters, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv0 = StyledConv(filters, 3, upsample=True, seed=seed, name="conv0")
        self.conv1 = StyledConv(filters, 3, seed=None if seed is None else seed + 1, name="conv1")
        self.to_rgb = ToRGB(name="to_rgb")

    def build(self, x_shape, ws_shape, skip_shape=None, noise0_shape=None, noise1_shape=None):
        w_shape = (ws_shape[0], ws_shape[-1])
        self.conv0.build(x_shape, w_shape)
        h = 2 * x_shape[1]
        y_shape = (x_shape[0], h, h, self.filters)
        self.conv1.build(y_shape, w_shape)
        self.to_rgb.build(y_shape, w_shape)

    def call(self, x, ws, skip, noise0=None, noise1=None):
        f0 = self.conv0(x, ws[:, 0], noise0)
        f1 = self.conv1(f0, ws[:, 1], noise1)
        skip = self.to_rgb(f1, ws[:, 2], skip)
        return f1, skip, (f0, f1)


# -- generator ------------------------------------------------------------------------------------
ZERO_4X4_MODES = (False, True, "output", "input")


class Generator(keras.Model):
    """StyleGAN2 generator (rosinality `Generator`), NHWC.

    Layout: mapping z -> w; learned constant `[1, 4, 4, C_4]`; a 4x4 StyledConv and ToRGB; then one
    SynthesisBlock per resolution 8, 16, ..., `resolution`. The network uses `num_ws = 2 log2(S) - 2`
    style vectors: index 0 for the 4x4 conv, 1 for the 4x4 toRGB, and for the block at 2^(j+2)
    (j = 1, 2, ...) indices 2j - 1, 2j (its convs) and 2j + 1 (its toRGB), so each toRGB shares
    its style with the next block's upsampling conv, as in the reference. It has
    `num_noise = 2 log2(S) - 3` noise inputs: index 0 for the 4x4 conv, 2j - 1 and 2j for block j.

    Args:
        resolution: S, a power of two >= 4.
        z_dim: size of z.
        w_dim: size of w.
        mapping_layers: depth of the mapping network (8).
        channel_base, max_channels: widths `min(channel_base // res, max_channels)`
            (config-f: 32768, 512).
        mapping_lr_mul: learning-rate multiplier of the mapping network (0.01).
        seed: seed of the noise generators (None: random).

    Call: `generator(z, truncation_psi=1.0, noise=None, randomize_noise=True, zero_4x4=False,
    return_features=False, input_is_latent=False)`:

        z: `[batch, z_dim]`; with `input_is_latent=True` a w `[batch, w_dim]` or per-layer ws
            `[batch, num_ws, w_dim]` (style mixing, inversion) that skips the mapping.
        truncation_psi: w <- w_avg + psi (w - w_avg) (float or scalar tensor; 1 = off).
        noise: None, or a list of `num_noise` maps `[batch or 1, r, r, 1]` (entries may be None),
            for deterministic outputs.
        randomize_noise: where `noise` gives no map: fresh N(0, 1) maps (True) or the stored
            `noise_buffers` (False, rosinality `randomize_noise=False`).
        zero_4x4: Labels4Free's G_bg (docs/methods.md §3.1). False: off; True or "output": multiply the
            4x4 StyledConv's output by 0 (S = 256, 1024 models); "input": zero the constant
            input before the 4x4 conv (the S = 512 car model).
        return_features: also return the per-block features.

    Returns:
        images `[batch, S, S, 3]` (about [-1, 1]); with `return_features`, `(images, features)`,
        features a list with one `(f0, f1)` pair per SynthesisBlock from 8x8 up to S x S
        (`log2(S) - 2` pairs), f0/f1 `[batch, r, r, C_r]` the post-activation outputs of the
        block's upsampling and second StyledConv. Labels4Free's alpha network reads
        `features[-6:]`.
    """

    def __init__(self, resolution=256, z_dim=512, w_dim=512, mapping_layers=8,
                 channel_base=32768, max_channels=512, mapping_lr_mul=0.01, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.mapping_layers = mapping_layers
        self.channel_base = channel_base
        self.max_channels = max_channels
        self.mapping_lr_mul = mapping_lr_mul
        self.seed = seed
        log = _log2(resolution)
        self.num_ws = 2 * log - 2
        self.num_noise = 2 * log - 3
        self.block_resolutions = [2**i for i in range(3, log + 1)]
        self.noise_resolutions = [4] + [r for r in self.block_resolutions for _ in range(2)]

        def seed_at(i):
            return None if seed is None else seed + 2 * i

        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul, name="mapping")
        c4 = channels_at(4, channel_base, max_channels)
        self.const = self.add_weight(shape=(1, 4, 4, c4), name="const",
                                     initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.conv_4x4 = StyledConv(c4, 3, seed=seed_at(0), name="conv_4x4")
        self.to_rgb_4x4 = ToRGB(name="to_rgb_4x4")
        self.blocks = [SynthesisBlock(channels_at(r, channel_base, max_channels),
                                      seed=seed_at(j + 1), name=f"block_{r}")
                       for j, r in enumerate(self.block_resolutions)]
        # Not trained: the truncation centre, and rosinality's fixed noise maps.
        self.w_avg = self.add_weight(shape=(w_dim,), name="w_avg", initializer="zeros",
                                     trainable=False)
        self.noise_buffers = [
            self.add_weight(shape=(1, r, r, 1), name=f"noise_buffer_{i}", trainable=False,
                            initializer=keras.initializers.RandomNormal(stddev=1.0))
            for i, r in enumerate(self.noise_resolutions)]
        self.mapping_seed = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        # Sub-layers may already be built when used on their own first (e.g. `generator.mapping`).
        b = input_shape[0]
        if not self.mapping.built:
            self.mapping.build((b, self.z_dim))
        w_shape = (b, self.w_dim)
        c4 = self.const.shape[-1]
        if not self.conv_4x4.built:
            self.conv_4x4.build((b, 4, 4, c4), w_shape)
        if not self.to_rgb_4x4.built:
            self.to_rgb_4x4.build((b, 4, 4, c4), w_shape)
        shape = (b, 4, 4, c4)
        for block, r in zip(self.blocks, self.block_resolutions):
            if not block.built:
                block.build(shape, (b, 3, self.w_dim))
            shape = (b, r, r, block.filters)

    def get_config(self):
        return {"resolution": self.resolution, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "mapping_layers": self.mapping_layers, "channel_base": self.channel_base,
                "max_channels": self.max_channels, "mapping_lr_mul": self.mapping_lr_mul,
                "seed": self.seed, "name": self.name}

    # -- latents ---------------------------------------------------------------------------------
    def map(self, z, truncation_psi=1.0, input_is_latent=False):
        """z `[b, z_dim]` (or w / ws if input_is_latent) -> truncated ws `[b, num_ws, w_dim]`."""
        w = z if input_is_latent else self.mapping(z)
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            w_avg = ops.cast(self.w_avg, w.dtype)
            w = w_avg + truncation_psi * (w - w_avg)
        if len(w.shape) == 2:
            w = ops.repeat(w[:, None, :], self.num_ws, axis=1)
        return w

    def compute_w_avg(self, num_samples=4096, batch_size=1024, seed=None):
        """Sets `w_avg` to the mean of `num_samples` mapped z ~ N(0, I) (Labels4Free's w-bar).

        Returns the new `[w_dim]` value.
        """
        generator = keras.random.SeedGenerator(seed) if seed is not None else self.mapping_seed
        total = ops.zeros((self.w_dim,))
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = keras.random.normal((n, self.z_dim), seed=generator)
            total = total + ops.sum(self.mapping(z), axis=0)
            done += n
        self.w_avg.assign(total / float(num_samples))
        return self.w_avg.value

    # -- synthesis -------------------------------------------------------------------------------
    def synthesize(self, ws, noise=None, randomize_noise=True, zero_4x4=False,
                   return_features=False):
        """ws `[batch, num_ws, w_dim]` -> images (and features); arguments as in `call`."""
        if zero_4x4 not in ZERO_4X4_MODES:
            raise ValueError(f"zero_4x4 must be one of {ZERO_4X4_MODES}, got {zero_4x4!r}")
        noise = list(noise) if noise is not None else [None] * self.num_noise
        if len(noise) != self.num_noise:
            raise ValueError(f"noise must have {self.num_noise} entries, got {len(noise)}")
        if not randomize_noise:
            noise = [buf if n is None else n for n, buf in zip(noise, self.noise_buffers)]

        x = ops.repeat(ops.cast(self.const, ws.dtype), ops.shape(ws)[0], axis=0)
        if zero_4x4 == "input":
            x = x * 0.0
        x = self.conv_4x4(x, ws[:, 0], noise[0])
        if zero_4x4 is True or zero_4x4 == "output":
            x = x * 0.0          # so the 4x4 toRGB and every later block see zeros
        skip = self.to_rgb_4x4(x, ws[:, 1])
        features = []
        for j, block in enumerate(self.blocks, start=1):
            x, skip, feats = block(x, ws[:, 2 * j - 1:2 * j + 2], skip,
                                   noise[2 * j - 1], noise[2 * j])
            features.append(feats)
        skip = L.float32(skip)  # images in float32 under mixed precision too
        if return_features:
            return skip, features
        return skip

    def call(self, z, truncation_psi=1.0, noise=None, randomize_noise=True, zero_4x4=False,
             return_features=False, input_is_latent=False, training=False):
        ws = self.map(z, truncation_psi, input_is_latent)
        return self.synthesize(ws, noise, randomize_noise, zero_4x4, return_features)

    def make_noise(self, batch_size=1, seed=None):
        """A list of `num_noise` fresh N(0, 1) maps `[batch_size, r, r, 1]`, to fix the noise."""
        rng = np.random.default_rng(seed)
        return [tf.constant(rng.standard_normal((batch_size, r, r, 1)).astype(np.float32))
                for r in self.noise_resolutions]


# -- discriminator --------------------------------------------------------------------------------
class ConvLayer(keras.layers.Layer):
    """rosinality `ConvLayer`: [FIR blur + stride-2] EqualConv2D [+ FusedLeakyReLU].

    Args:
        filters: C_out.
        kernel_size: k.
        downsample: blur with pad ((p+1)//2, p//2), p = 2 + k - 1, then a 'valid' stride-2 conv.
        activate: add the bias and the activation (else the bias, if any, is the conv's).
        use_bias: whether there is a bias at all.
    Call: `[batch, H, W, C_in] -> [batch, H or H/2, W or W/2, filters]`.
    """

    def __init__(self, filters, kernel_size, downsample=False, activate=True, use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.downsample = downsample
        self.conv = EqualConv2D(filters, kernel_size, strides=2 if downsample else 1,
                                padding="valid" if downsample else "same", gain=1.0,
                                use_bias=use_bias and not activate, name="conv")
        self.activate = FusedLeakyReLU(name="activate") if activate else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.activate is not None:
            self.activate.build(tuple(input_shape[:-1]) + (self.conv.filters,))

    def call(self, x):
        if self.downsample:
            p = (len(_FIR) - 2) + (self.kernel_size - 1)
            x = fir_filter(x, (p + 1) // 2, p // 2)
        x = self.conv(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class ResBlock(keras.layers.Layer):
    """conv3x3 + act, blur + conv3x3 stride 2 + act; skip blur + 1x1 stride 2; (main + skip)/sqrt2.

    Call: `[batch, H, W, C_in] -> [batch, H/2, W/2, filters]`.
    """

    def __init__(self, in_channels, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = ConvLayer(in_channels, 3, name="conv1")
        self.conv2 = ConvLayer(filters, 3, downsample=True, name="conv2")
        self.skip = ConvLayer(filters, 1, downsample=True, activate=False, use_bias=False,
                              name="skip")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)
        self.skip.build(input_shape)

    def call(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(keras.Model):
    """StyleGAN2 residual discriminator (rosinality `Discriminator`), NHWC.

    fromRGB 1x1 + act; one ResBlock per halving down to 4x4; minibatch stddev (group
    `min(batch, mbstd_group)`, 1 feature); conv3x3 + act; dense + act; dense -> 1.

    Args:
        resolution: S, a power of two >= 4.
        channel_base, max_channels: widths `min(channel_base // res, max_channels)`.
        mbstd_group: minibatch-stddev group size (the batch must be divisible by
            `min(batch, mbstd_group)`).
    Call: images `[batch, S, S, 3]` in [-1, 1] -> logits `[batch]`.
    """

    def __init__(self, resolution=256, channel_base=32768, max_channels=512, mbstd_group=4,
                 **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        self.channel_base = channel_base
        self.max_channels = max_channels
        self.mbstd_group = mbstd_group
        log = _log2(resolution)

        def ch(r):
            return channels_at(r, channel_base, max_channels)

        self.from_rgb = ConvLayer(ch(resolution), 1, name="from_rgb")
        self.blocks = [ResBlock(ch(2**i), ch(2 ** (i - 1)), name=f"block_{2**i}")
                       for i in range(log, 2, -1)]
        c4 = ch(4)
        self.final_conv = ConvLayer(c4, 3, name="final_conv")
        self.final_dense = EqualDense(c4, gain=1.0, name="final_dense")
        self.out = EqualDense(1, gain=1.0, name="out")

    def build(self, input_shape):
        b = input_shape[0]
        self.from_rgb.build(input_shape)
        r = self.resolution
        c = self.from_rgb.conv.filters
        for block in self.blocks:
            block.build((b, r, r, c))
            r //= 2
            c = block.conv2.conv.filters
        self.final_conv.build((b, 4, 4, c + 1))
        c4 = self.final_conv.conv.filters
        self.final_dense.build((b, 16 * c4))
        self.out.build((b, c4))

    def get_config(self):
        return {"resolution": self.resolution, "channel_base": self.channel_base,
                "max_channels": self.max_channels, "mbstd_group": self.mbstd_group,
                "name": self.name}

    def call(self, images, training=False):
        x = self.from_rgb(images)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.final_conv(x)
        # NHWC flatten; the converter permutes the reference's NCHW-flattened weights to match.
        x = ops.reshape(x, (-1, 16 * x.shape[-1]))
        x = ops.leaky_relu(self.final_dense(x), negative_slope=0.2) * SQRT2
        return ops.squeeze(L.float32(self.out(x)), axis=-1)


# -- converted checkpoints: tools/convert_stylegan2.py writes these files, Labels4Free's pretrained_dir reads them
CONFIG_FILE = "config.json"
GENERATOR_WEIGHTS = "generator.weights.h5"
DISCRIMINATOR_WEIGHTS = "discriminator.weights.h5"


def build_generator(generator, batch_size=1):
    """Creates a Generator's variables (one forward pass on zeros). Returns it."""
    generator(ops.zeros((batch_size, generator.z_dim)),
              noise=[ops.zeros((1, r, r, 1)) for r in generator.noise_resolutions])
    return generator


def build_discriminator(discriminator, batch_size=1):
    """Creates a Discriminator's variables (one forward pass on zeros). Returns it."""
    r = discriminator.resolution
    discriminator(ops.zeros((batch_size, r, r, 3)))
    return discriminator


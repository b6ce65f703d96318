"""StyleGAN v1 networks as PerturbGAN uses them (docs/methods.md §1.2, rosinality port semantics).

* `MappingNetwork`: z -> style w (PixelNorm, equalized dense layers at 0.01x learning rate).
* `SynthesisNetwork`: learned 4x4 constant, then per resolution two 3x3 convs with per-layer noise
  and AdaIN; linear (no tanh) output channels.
* `LayeredGenerator`: background (3 ch) and foreground + mask logit (4 ch) synthesis networks fed
  by the same z, each with its own mapping network by default (or one shared, or one 7-channel
  synthesis network: ablation (h)).
* `ProGANDiscriminator`: the critic, with minibatch stddev; also the trunk of the latent encoder.

Widths follow channels(r) = min(max_channels, channel_base // r): the paper's network is
channel_base 16384, max_channels 512; a CPU fits channel_base 1024, max_channels 64.
Images are NHWC in about [-1, 1].
"""

import keras
import tensorflow as tf
from keras import ops

from tfseg.modeling import equalized as E
from tfseg.modeling.equalized import channels_at
from tfseg.modeling import layers as L
from tfseg.modeling.layers import upsample_nearest
from tfseg.modeling.resolutions import power_of_two_log2


def _resolutions(resolution):
    log2 = power_of_two_log2(resolution, 8, "StyleGAN")
    return [2**k for k in range(2, log2 + 1)]


class MappingNetwork(keras.layers.Layer):
    """PixelNorm(z) -> num_layers x [EqualDense(w_dim), LReLU 0.2]. `[b, z_dim] -> [b, w_dim]`.

    lr_mul 0.01 gives the mapping network its 0.01x learning rate (see `equalized`).
    """

    def __init__(self, w_dim, num_layers=8, lr_mul=0.01, **kwargs):
        super().__init__(**kwargs)
        self.w_dim = w_dim
        self.dense = [E.EqualDense(w_dim, lr_mul=lr_mul, name=f"dense{i}") for i in range(num_layers)]

    def build(self, z_shape):
        shape = z_shape
        for layer in self.dense:
            layer.build(shape)
            shape = (None, self.w_dim)

    def call(self, z):
        h = E.pixel_norm(z)
        for layer in self.dense:
            h = E.leaky_relu(layer(h))
        return h


class AdaIN(keras.layers.Layer):
    """Instance norm without affine, then gamma(w) * h + beta(w), gamma initialised at 1.

    `style_gain`: the equalized gain of the style dense layer: 1 (tfseg's default) or sqrt(2), the
    gain every equalized layer of the authors' StyleGAN v1 port has (`perturbgan_paper_base.gin`).
    gamma is stored as 1 + the layer's output (the port stores it with a bias initialised at 1: the
    same function, the converter subtracts 1).
    """

    def __init__(self, style_gain=1.0, **kwargs):
        super().__init__(**kwargs)
        self.style_gain = style_gain

    def build(self, x_shape, w_shape):
        self.channels = x_shape[-1]
        self.style = E.EqualDense(2 * self.channels, gain=self.style_gain, name="style")
        self.style.build(w_shape)

    def call(self, x, w):
        mean, variance = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        h = (x - mean) * ops.rsqrt(variance + 1e-5)
        style = self.style(w)
        gamma = 1.0 + style[:, None, None, :self.channels]
        beta = style[:, None, None, self.channels:]
        return gamma * h + beta


class StyledBlock(keras.layers.Layer):
    """One resolution: [conv-A -> noise -> LReLU -> AdaIN] -> [conv3x3 -> noise -> LReLU -> AdaIN].

    conv-A is the learned constant for the first block, else nearest x2 -> conv3x3 -> blur, or with
    `fused` a 3x3 transposed conv of stride 2 (`equalized.FusedScaleConv2D`) -> blur.
    One noise map per block is shared by both convs; its per-channel weights start at 0.
    `equalized_noise`: those weights are multiplied by sqrt(2 / channels) at run time, as the
    authors' port (it applies its equalized learning rate to them too); `style_gain`: see `AdaIN`.
    """

    def __init__(self, channels, first=False, style_gain=1.0, equalized_noise=False, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.first = first
        self.fused = fused and not first
        self.noise_scale = E.SQRT2 / (channels ** 0.5) if equalized_noise else 1.0
        if first:
            self.conv_a = None
        elif self.fused:
            self.conv_a = E.FusedScaleConv2D(channels, "up", name="conv_a")
        else:
            self.conv_a = E.EqualConv2D(channels, 3, name="conv_a")
        self.conv_b = E.EqualConv2D(channels, 3, name="conv_b")
        self.adain_a = AdaIN(style_gain, name="adain_a")
        self.adain_b = AdaIN(style_gain, name="adain_b")

    def build(self, x_shape, w_shape):
        c = self.channels
        if self.first:
            self.constant = self.add_weight(shape=(1, 4, 4, c), name="constant",
                                            initializer=keras.initializers.RandomNormal(stddev=1.0))
            size = 4
        else:
            size = x_shape[1] * 2
            self.conv_a.build((None, x_shape[1], x_shape[1], x_shape[-1]) if self.fused
                              else (None, size, size, x_shape[-1]))
        self.noise_a = self.add_weight(shape=(c,), name="noise_a", initializer="zeros")
        self.noise_b = self.add_weight(shape=(c,), name="noise_b", initializer="zeros")
        self.conv_b.build((None, size, size, c))
        self.adain_a.build((None, size, size, c), w_shape)
        self.adain_b.build((None, size, size, c), w_shape)

    def call(self, w, x=None, noise=0.0):
        if self.first:
            h = ops.tile(self.constant, (ops.shape(w)[0], 1, 1, 1))
        elif self.fused:
            h = E.blur(self.conv_a(x))
        else:
            h = E.blur(self.conv_a(upsample_nearest(x)))
        noise = ops.cast(noise, h.dtype)  # drawn in float32; 16-bit under mixed precision
        h = self.adain_a(E.leaky_relu(h + self.noise_a * self.noise_scale * noise), w)
        h = self.conv_b(h)
        return self.adain_b(E.leaky_relu(h + self.noise_b * self.noise_scale * noise), w)


def growth_resolutions(resolution, grow_from):
    """The resolutions below R that progressive growing trains at (and that need heads of their
    own), from `grow_from`; none without growing."""
    return [] if grow_from is None else [r for r in _resolutions(resolution) if grow_from <= r < resolution]


class SynthesisNetwork(keras.layers.Layer):
    """Style w -> `[b, R, R, out_channels]`, linear output (EqualConv 1x1 head).

    With `grow_from` (progressive growing), every resolution from it up has a head of its own
    ("toRGB"), and `call(..., resolution=r, alpha=a)` stops at r and fades it in: (1 - a) x the
    nearest-upsampled head of r/2 + a x the head of r (blended before any sigmoid, as the reference).

    Call args:
        w: `[b, w_dim]` (every block), or `[b, num_blocks, w_dim]`, a style per block (style mixing).
        noise_seed: stateless seed `[2]` for the per-block noise maps, or None for no noise
            (deterministic rendering, used by the encoder route and evaluation).
        resolution: stop at this resolution (default R); alpha: its fade-in weight (None: 1).
        noise: the per-block noise maps `[b, r, r, 1]` themselves (a list, one per block run),
            instead of drawing them from `noise_seed` (the equivalence tests inject the authors' draws).

    `style_gain`, `equalized_noise`: see `StyledBlock`; `fused_scale_from`: blocks of this
    resolution and above upsample with a fused transposed conv (the authors' port: 128), None: never.
    """

    def __init__(self, resolution, out_channels, channel_base=1024, max_channels=64, grow_from=None,
                 style_gain=1.0, equalized_noise=False, fused_scale_from=None, **kwargs):
        super().__init__(**kwargs)
        self.resolutions = _resolutions(resolution)
        self.blocks = [StyledBlock(channels_at(r, channel_base, max_channels), first=(i == 0),
                                   style_gain=style_gain, equalized_noise=equalized_noise,
                                   fused=fused_scale_from is not None and r >= fused_scale_from,
                                   name=f"block{r}") for i, r in enumerate(self.resolutions)]
        self.head = E.EqualConv2D(out_channels, 1, name="head")
        self.growth_resolutions = growth_resolutions(resolution, grow_from)
        if self.growth_resolutions:
            self.growth_heads = [E.EqualConv2D(out_channels, 1, name=f"head{r}") for r in self.growth_resolutions]

    def head_at(self, resolution):
        """The output layer at `resolution` (R's is `head`, the one a network without growing has)."""
        if resolution == self.resolutions[-1]:
            return self.head
        if resolution not in self.growth_resolutions:
            raise ValueError(f"{self.name} has no output at {resolution} px; it grows over "
                             f"{self.growth_resolutions + self.resolutions[-1:]}")
        return self.growth_heads[self.growth_resolutions.index(resolution)]

    def build(self, w_shape):
        x_shape = None
        for r, block in zip(self.resolutions, self.blocks):
            block.build(x_shape, w_shape)
            x_shape = (None, r, r, block.channels)
            if r in self.growth_resolutions:
                self.head_at(r).build(x_shape)
        self.head.build(x_shape)

    def call(self, w, noise_seed=None, resolution=None, alpha=None, noise=None):
        resolution = resolution or self.resolutions[-1]
        head = self.head_at(resolution)
        h = previous = None
        for i, (r, block) in enumerate(zip(self.resolutions, self.blocks)):
            if r > resolution:
                break
            if noise is not None:
                block_noise = noise[i]
            elif noise_seed is None:
                block_noise = 0.0
            else:
                block_noise = tf.random.stateless_normal(
                    [ops.shape(w)[0], r, r, 1], noise_seed + tf.constant([1_000_003, 0], noise_seed.dtype) * (i + 1))
            previous = h
            h = block(w[:, i] if len(w.shape) == 3 else w, x=h, noise=block_noise)
        out = head(h)
        if alpha is None:
            return out
        skip = upsample_nearest(self.head_at(resolution // 2)(previous))
        return skip + ops.cast(alpha, out.dtype) * (out - skip)


def mix_styles(first, second, crossover, num_blocks):
    """Style mixing: `[b, num_blocks, w_dim]` with `first` `[b, w_dim]` for blocks 0..crossover and
    `second` for the later ones (a crossover >= num_blocks - 1 keeps `first` everywhere)."""
    use_first = tf.range(num_blocks) <= tf.cast(crossover, tf.int32)
    return tf.where(use_first[None, :, None], first[:, None], second[:, None])


class LayeredGenerator(keras.layers.Layer):
    """G(z) = (background B, foreground F, mask m) for PerturbGAN.

    Args:
        resolution: R.
        z_dim, w_dim: latent and style sizes (512 in the paper).
        mapping_layers: depth of each mapping network (8 in the paper).
        channel_base, max_channels: width of the synthesis networks (see module docstring).
        single_generator: one synthesis network with 7 outputs (ablation (h)).
        shared_mapping: one mapping network for both synthesis networks (`common_style`).
        style_gain, equalized_noise, fused_scale_from: the authors' StyleGAN v1 port's choices
            (`SynthesisNetwork`; defaults: tfseg's).

    Call: `z [b, z_dim]` -> dict with background `[b, R, R, 3]`, foreground `[b, R, R, 3]`,
    mask_logits and mask `[b, R, R, 1]` (sigmoid); with `resolution` r (progressive growing, built
    with `grow_from`) the same at r px, faded in by `alpha`. `styles [b, num_styles, w_dim]` replaces the
    mapping networks' output (the encoder route feeds its own styles). `mixing = (z2, crossovers)`
    mixes styles: synthesis network i draws blocks 0..crossovers[i] with z's style, the later
    ones with z2's (`mix_styles`; each network has its own crossover, as in the reference).
    `noise`: per synthesis network, its list of per-block noise maps (instead of `noise_seed`).
    """

    def __init__(self, resolution, z_dim=128, w_dim=128, mapping_layers=4, channel_base=1024,
                 max_channels=64, single_generator=False, shared_mapping=False, grow_from=None,
                 style_gain=1.0, equalized_noise=False, fused_scale_from=None, **kwargs):
        super().__init__(**kwargs)
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.single_generator = single_generator
        widths = dict(channel_base=channel_base, max_channels=max_channels, grow_from=grow_from,
                      style_gain=style_gain, equalized_noise=equalized_noise, fused_scale_from=fused_scale_from)
        if single_generator:
            self.synthesis = [SynthesisNetwork(resolution, 7, name="layers", **widths)]
        else:
            self.synthesis = [SynthesisNetwork(resolution, 3, name="background", **widths),
                              SynthesisNetwork(resolution, 4, name="foreground", **widths)]
        num_mappings = 1 if (single_generator or shared_mapping) else 2
        self.mappings = [MappingNetwork(w_dim, mapping_layers, name=f"mapping{i}")
                         for i in range(num_mappings)]

    @property
    def num_styles(self):
        return len(self.synthesis)

    def build(self, z_shape):
        for mapping in self.mappings:
            mapping.build(z_shape)
        for synthesis in self.synthesis:
            synthesis.build((None, self.w_dim))

    def styles(self, z):
        """`[b, z_dim]` -> `[b, num_styles, w_dim]`: each synthesis network's style."""
        ws = [self.mappings[min(i, len(self.mappings) - 1)](z) for i in range(self.num_styles)]
        return L.float32(ops.stack(ws, axis=1))

    @property
    def num_blocks(self):
        """Blocks (resolutions) of each synthesis network: crossovers are drawn below this."""
        return len(self.synthesis[0].blocks)

    def blocks_at(self, resolution):
        """Blocks a synthesis network runs to draw at `resolution` (progressive growing)."""
        return self.synthesis[0].resolutions.index(resolution) + 1

    def call(self, z=None, noise_seed=None, styles=None, mixing=None, resolution=None, alpha=None, noise=None):
        if styles is None:
            styles = self.styles(z)
        seeds = [None] * self.num_styles
        if noise_seed is not None:
            seeds = [noise_seed + tf.constant([100_000_007, 0], noise_seed.dtype) * i
                     for i in range(self.num_styles)]
        per_network = [styles[:, i] for i in range(self.num_styles)]
        if mixing is not None:
            z2, crossovers = mixing
            second = self.styles(z2)
            per_network = [mix_styles(w, second[:, i], crossovers[i], self.num_blocks)
                           for i, w in enumerate(per_network)]
        outputs = [net(per_network[i], noise_seed=seeds[i], resolution=resolution, alpha=alpha,
                       noise=None if noise is None else noise[i])
                   for i, net in enumerate(self.synthesis)]
        if self.single_generator:
            out = outputs[0]
            background, foreground, logits = out[..., :3], out[..., 3:6], out[..., 6:]
        else:
            background, foreground, logits = outputs[0], outputs[1][..., :3], outputs[1][..., 3:]
        background, foreground, logits = L.float32(background), L.float32(foreground), L.float32(logits)
        return {"background": background, "foreground": foreground, "mask_logits": logits,
                "mask": ops.sigmoid(logits)}


class ProGANDiscriminator(L.BuiltOnFirstCall, keras.layers.Layer):
    """PerturbGAN's critic (and, with `outputs` > 1 and no minibatch stddev, its latent encoder).

    fromRGB 1x1, then per resolution conv3x3 -> LReLU -> blur -> conv3x3 -> avg-pool -> LReLU
    down to 4x4, then [minibatch stddev] -> conv3x3 -> LReLU -> conv4x4 valid -> LReLU -> dense.

    The authors' port's choices, as switches (defaults: tfseg's): `widen_first_conv` changes the
    width of a block r -> r/2 in its first conv (the port) rather than its second (tfseg);
    `output_gain` is the equalized gain of the output dense layer (tfseg 1, the port sqrt(2));
    `fused_scale_from`: blocks of this resolution and above fuse their second conv and the
    average pool into one stride-2 conv (`equalized.FusedScaleConv2D`; the port: 128).

    Call: `[b, R, R, 3]` -> `[b]` scores (outputs = 1) or `[b, outputs]`.
    `features(images)` returns the 4x4 activation before the minibatch stddev (`[b, 4, 4, C]`),
    the discriminator features of PerturbGAN's L_auto.

    With `grow_from` (progressive growing) every resolution from it up has its own fromRGB, and
    images of r px enter at r; with `alpha` the first block's output is faded in: (1 - alpha) x
    fromRGB_{r/2}(avgpool(x)) + alpha x block_r(fromRGB_r(x)), as the reference.
    """

    def __init__(self, resolution, channel_base=1024, max_channels=64, outputs=1,
                 minibatch_std=True, grow_from=None, widen_first_conv=False, output_gain=1.0,
                 fused_scale_from=None, **kwargs):
        super().__init__(**kwargs)
        self.outputs = outputs
        self.minibatch_std = minibatch_std
        self.resolution = resolution
        res = _resolutions(resolution)[::-1]  # R, R/2, ..., 4
        self.down_resolutions = res[:-1]
        ch = lambda r: channels_at(r, channel_base, max_channels)  # noqa: E731
        self.from_rgb = E.EqualConv2D(ch(resolution), 1, name="from_rgb")
        self.growth_resolutions = growth_resolutions(resolution, grow_from)
        if self.growth_resolutions:
            self.growth_from_rgb = [E.EqualConv2D(ch(r), 1, name=f"from_rgb{r}") for r in self.growth_resolutions]
        self.down = []
        for r in res[:-1]:
            fused = fused_scale_from is not None and r >= fused_scale_from
            self.down.append((E.EqualConv2D(ch(r // 2) if widen_first_conv else ch(r), 3, name=f"conv{r}_a"),
                              E.FusedScaleConv2D(ch(r // 2), "down", name=f"conv{r}_b") if fused
                              else E.EqualConv2D(ch(r // 2), 3, name=f"conv{r}_b")))
        self.final_conv = E.EqualConv2D(ch(4), 3, name="final_conv")
        self.final_dense = E.EqualDense(ch(4), name="final_dense")
        self.output_dense = E.EqualDense(outputs, gain=output_gain, name="output")

    def from_rgb_at(self, resolution):
        """The input layer at `resolution` (R's is `from_rgb`, the one a critic without growing has)."""
        if resolution == self.resolution:
            return self.from_rgb
        if resolution not in self.growth_resolutions:
            raise ValueError(f"{self.name} takes {self.growth_resolutions + [self.resolution]} px images, "
                             f"got {resolution} px")
        return self.growth_from_rgb[self.growth_resolutions.index(resolution)]

    def features(self, images, alpha=None):
        r = images.shape[1]
        h = E.leaky_relu(self.from_rgb_at(r)(images))
        first = self.down_resolutions.index(r) if r in self.down_resolutions else len(self.down)
        for i, (conv_a, conv_b) in enumerate(self.down[first:]):
            h = E.leaky_relu(conv_a(h))
            h = conv_b(E.blur(h))
            # A fused conv_b has downsampled already (FusedScaleConv2D "down").
            h = E.leaky_relu(h if isinstance(conv_b, E.FusedScaleConv2D) else ops.average_pool(h, 2, 2))
            if i == 0 and alpha is not None:
                skip = E.leaky_relu(self.from_rgb_at(r // 2)(ops.average_pool(images, 2, 2)))
                h = skip + ops.cast(alpha, h.dtype) * (h - skip)
        return L.float32(h)

    def call(self, images, alpha=None):
        h = self.features(images, alpha)
        if self.minibatch_std:
            h = E.minibatch_stddev(h)
        h = E.leaky_relu(self.final_conv(h))
        h = ops.reshape(h, (-1, h.shape[1] * h.shape[2] * h.shape[3]))
        h = E.leaky_relu(self.final_dense(h))
        out = L.float32(self.output_dense(h))
        return out[:, 0] if self.outputs == 1 else out

"""ReDO's region generator G_k (docs/methods.md §2.3, second table).

One independent network per region. It draws the pixels of region k from a code z and the
region's mask, which is concatenated (average-pooled to the current scale) at every block, so
the texture it paints follows the mask's shape. Its output is already multiplied by the mask.
"""

import keras
from keras import ops

from tfseg.modeling import layers as L
from tfseg.modeling.resolutions import power_of_two_log2


class UpResBlock(L.BuiltOnFirstCall, keras.layers.Layer):
    """CN(z) -> ReLU -> concat mask -> up x2 -> SN-conv3x3 -> CN(z) -> ReLU -> SN-conv3x3, + up/1x1 shortcut."""

    def __init__(self, channels, gain=0.8, norm_offset=0.0, spectral_norm="reference", **kwargs):
        super().__init__(**kwargs)
        self.norm1 = L.ConditionalInstanceNorm(gain=gain, offset=norm_offset)
        self.conv1 = L.conv(channels, 3, use_bias=False, spectral_norm=spectral_norm, gain=gain)
        self.norm2 = L.ConditionalInstanceNorm(gain=gain, offset=norm_offset)
        self.conv2 = L.conv(channels, 3, use_bias=True, spectral_norm=spectral_norm, gain=gain)
        self.shortcut = L.conv(channels, 1, use_bias=True, spectral_norm=spectral_norm, gain=gain)

    def call(self, x, z, mask, training=False):
        h = ops.relu(self.norm1(x, z))
        h = ops.concatenate([h, _pool_to(mask, x.shape[1])], axis=-1)
        h = self.conv1(L.upsample_nearest(h), training=training)
        h = self.conv2(ops.relu(self.norm2(h, z)), training=training)
        return h + self.shortcut(L.upsample_nearest(x), training=training)


def _pool_to(mask, size):
    """Average-pool a `[batch, S, S, 1]` mask to `size` x `size`."""
    factor = mask.shape[1] // size
    return mask if factor == 1 else ops.average_pool(mask, factor, factor)


class RegionGenerator(L.BuiltOnFirstCall, keras.Model):
    """Draws one region: `(mask [batch, R, R, 1] in [0,1], z [batch, nz])` -> `[batch, R, R, 3]` in [-1,1] * mask.

    Args:
        resolution: R, a power of two >= 8. The network has log2(R/4) up-sampling blocks.
        width: ch, the width at full resolution; block i below it doubles (16ch at 8x8 for R=128).
        max_width: cap on the per-block width (keeps low resolutions affordable).
        self_attention: insert self-attention before the last block, as the reference does.
        z_dim: nz.
        norm_offset: the `+offset` on the conditional norms' gamma (0 in the reference code).
        spectral_norm: "reference" (PyTorch's) or "keras" (`tfseg.modeling.spectral_norm`).
        seed_multiplier: the 4x4 seed's channels as a multiple of the first block's width: 1 as the
            reference (16ch for R = 128), 2 as tfseg's demo configs were measured.
    """

    def __init__(self, resolution=128, width=32, max_width=None, self_attention=True, z_dim=32,
                 gain=0.8, norm_offset=0.0, spectral_norm="reference", seed_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        num_blocks = power_of_two_log2(resolution, 8, "RegionGenerator") - 2  # up from 4x4
        widths = [width * 2 ** (num_blocks - 1 - i) for i in range(num_blocks)]
        if max_width:
            widths = [min(w, max_width) for w in widths]
        self.seed_channels = widths[0] * seed_multiplier
        if max_width:
            self.seed_channels = min(self.seed_channels, max_width)
        self.z_dim = z_dim
        self.seed = L.dense(4 * 4 * self.seed_channels, gain=gain)
        self.blocks = [UpResBlock(w, gain=gain, norm_offset=norm_offset, spectral_norm=spectral_norm)
                       for w in widths]
        self.attention = L.SelfAttention(spectral_norm, gain=gain) if self_attention else None
        self.out_norm = L.ConditionalInstanceNorm(gain=gain, offset=norm_offset)
        self.out_conv = L.conv(3, 3, use_bias=True, spectral_norm=spectral_norm, gain=gain)

    def call(self, mask, z, training=False):
        h = ops.reshape(self.seed(z), (-1, 4, 4, self.seed_channels))
        for i, block in enumerate(self.blocks):
            if self.attention is not None and i == len(self.blocks) - 1:
                h = self.attention(h, training=training)
            h = block(h, z, mask, training=training)
        h = ops.concatenate([ops.relu(self.out_norm(h, z)), mask], axis=-1)
        return ops.tanh(L.float32(self.out_conv(h, training=training))) * L.float32(mask)

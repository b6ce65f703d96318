"""ReDO's discriminator D and z-encoder delta, sharing one residual trunk (docs/methods.md §2.3, third table).

Sharing the trunk is the InfoGAN arrangement: the adversarial head is trained by the
discriminator loss, the code head (and, through it, the trunk) by the information-conservation
loss. A separate encoder is available with `shared_trunk=False` in the method.
"""

import keras
from keras import ops

from tfseg.modeling import layers as L
from tfseg.modeling.resolutions import power_of_two_log2


class DownResBlock(keras.layers.Layer):
    """Pre-activation residual block: [ReLU] -> SN-conv -> ReLU -> SN-conv -> [avg-pool], + shortcut."""

    def __init__(self, channels, downsample=True, preactivation=True, gain=0.8, spectral_norm="reference",
                 **kwargs):
        super().__init__(**kwargs)
        self.downsample = downsample
        self.preactivation = preactivation
        self.gain, self.spectral_norm = gain, spectral_norm  # also the shortcut's, built later
        self.conv1 = L.conv(channels, 3, spectral_norm=spectral_norm, gain=gain)
        self.conv2 = L.conv(channels, 3, spectral_norm=spectral_norm, gain=gain)
        self.channels = channels
        self.shortcut = None

    def build(self, input_shape):
        if self.downsample or input_shape[-1] != self.channels:
            self.shortcut = L.conv(self.channels, 1, spectral_norm=self.spectral_norm, gain=self.gain)

    def call(self, x, training=False):
        h = ops.relu(x) if self.preactivation else x
        h = self.conv1(h, training=training)
        h = self.conv2(ops.relu(h), training=training)
        skip = x
        if self.downsample:
            h = ops.average_pool(h, 2, 2)
            skip = ops.average_pool(skip, 2, 2)
        if self.shortcut is not None:
            skip = self.shortcut(skip, training=training)
        return h + skip


class DiscriminatorTrunk(L.BuiltOnFirstCall, keras.Model):
    """Residual trunk from `[batch, R, R, 3]` images down to 4x4, then spatial sum pooling.

    Args:
        resolution: R, a power of two >= 8.
        width: nf, channels after the first block; doubling per block, capped by max_width.
        self_attention: after the first block, as the reference D does.
        spectral_norm: "reference" (PyTorch's) or "keras" (`tfseg.modeling.spectral_norm`).
    Returns `[batch, C]` features.
    """

    def __init__(self, resolution=128, width=64, max_width=1024, self_attention=True, gain=0.8,
                 spectral_norm="reference", **kwargs):
        super().__init__(**kwargs)
        num_down = power_of_two_log2(resolution, 8, "discriminator") - 2  # down to 4x4
        widths = [min(width * 2**i, max_width) for i in range(num_down)]
        sn = dict(gain=gain, spectral_norm=spectral_norm)
        self.blocks = [DownResBlock(widths[0], preactivation=False, **sn)]
        self.attention = L.SelfAttention(**sn) if self_attention else None
        self.blocks += [DownResBlock(w, **sn) for w in widths[1:]]
        self.blocks.append(DownResBlock(widths[-1], downsample=False, **sn))

    def call(self, images, training=False):
        h = self.blocks[0](images, training=training)
        if self.attention is not None:
            h = self.attention(h, training=training)
        for block in self.blocks[1:]:
            h = block(h, training=training)
        return ops.sum(L.float32(h), axis=(1, 2))  # the reference pools without a final ReLU


class Discriminator(L.BuiltOnFirstCall, keras.Model):
    """D with an optional z-encoder head on the same trunk (or, without its real/fake head, a z-encoder).

    Call: `images [batch, R, R, 3]` -> `(logits [batch] or None, codes [batch, num_regions, z_dim] or None)`.
    """

    def __init__(self, resolution=128, width=64, max_width=1024, self_attention=True,
                 num_regions=2, z_dim=32, with_encoder_head=True, gain=0.8, spectral_norm="reference",
                 with_adversarial_head=True, **kwargs):
        super().__init__(**kwargs)
        self.trunk = DiscriminatorTrunk(resolution, width, max_width, self_attention, gain, spectral_norm)
        # The separate z-encoder (the reference's netRecZ) has D's shape but no real/fake output.
        self.adversarial_head = L.dense(1, gain=gain) if with_adversarial_head else None
        self.num_regions = num_regions
        self.z_dim = z_dim
        self.code_head = L.dense(num_regions * z_dim, gain=gain) if with_encoder_head else None

    def call(self, images, training=False):
        features = self.trunk(images, training=training)
        logits = codes = None
        if self.adversarial_head is not None:
            logits = ops.squeeze(L.float32(self.adversarial_head(features)), -1)
        if self.code_head is not None:
            codes = ops.reshape(L.float32(self.code_head(features)), (-1, self.num_regions, self.z_dim))
        return logits, codes

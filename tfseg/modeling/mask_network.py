"""ReDO's mask network F: image -> soft masks of n regions (docs/methods.md §2.3, first table).

Encoder (7x7 conv, two stride-2 convs), residual blocks, a pyramid pooling module, and a
nearest-upsampling decoder; instance norm everywhere and no spectral norm, as in the reference.
"""
import keras
from keras import ops

from tfseg.modeling import layers as L


class ResidualBlock(L.BuiltOnFirstCall, keras.layers.Layer):
    """conv3x3 -> IN -> ReLU -> conv3x3 (bias) -> + skip -> IN -> ReLU (ReDO's mask-net block)."""

    def __init__(self, channels, gain=0.8, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = L.conv(channels, 3, use_bias=False, gain=gain)
        self.norm1 = L.instance_norm()
        self.conv2 = L.conv(channels, 3, use_bias=True, gain=gain)
        self.norm2 = L.instance_norm()

    def call(self, x):
        h = ops.relu(self.norm1(self.conv1(x)))
        return ops.relu(self.norm2(x + self.conv2(h)))


class MaskNetwork(L.BuiltOnFirstCall, keras.Model):
    """Soft masks of `num_regions` regions from an image.

    Args:
        num_regions: n. With n = 2 one logit is predicted and m2 = 1 - m1; else a softmax.
        width: nf, the width of the bottleneck (64 in the paper; 16-32 fits a CPU).
        num_residual_blocks: residual blocks at 1/4 resolution (3 in the paper).
        temperature: tau in m1 = sigmoid(logit / tau).
        output_kernel: 7 in the reference code (its supplement says 3).
        symmetric_padding: the two stride-2 convolutions pad one pixel on every side (PyTorch's
            padding=1, the authors' code) instead of Keras' "same" (bottom and right only).

    Call: `images [batch, H, W, 3]` in [-1, 1] -> `masks [batch, H, W, num_regions]` in [0, 1],
    summing to 1 over the last axis. H and W must be divisible by 4.
    """

    def __init__(self, num_regions=2, width=64, num_residual_blocks=3, temperature=1.0,
                 output_kernel=7, gain=0.8, symmetric_padding=False, **kwargs):
        super().__init__(**kwargs)
        self.num_regions = num_regions
        self.symmetric_padding = symmetric_padding
        down_padding = "valid" if symmetric_padding else "same"
        self.temperature = temperature
        self.output_kernel = output_kernel
        c1, c2, c3 = max(width // 4, 1), max(width // 2, 1), width
        self.stem = L.conv(c1, 7, padding="valid", use_bias=False, gain=gain)
        self.stem_norm = L.instance_norm()
        self.down1 = L.conv(c2, 3, strides=2, padding=down_padding, use_bias=False, gain=gain)
        self.down1_norm = L.instance_norm()
        self.down2 = L.conv(c3, 3, strides=2, padding=down_padding, use_bias=False, gain=gain)
        self.down2_norm = L.instance_norm()
        self.blocks = [ResidualBlock(c3, gain=gain) for _ in range(num_residual_blocks)]
        self.ppm = L.PyramidPooling(gain=gain)
        self.up1 = L.conv((c3 + 4) // 2, 3, use_bias=False, gain=gain)
        self.up1_norm = L.instance_norm()
        self.up2 = L.conv((c3 + 4) // 4, 3, use_bias=False, gain=gain)
        self.up2_norm = L.instance_norm()
        out_channels = 1 if num_regions == 2 else num_regions
        self.head = L.conv(out_channels, output_kernel, padding="valid", use_bias=True, gain=gain)

    def logits(self, images):
        """Pre-activation output: `[batch, H, W, 1]` for n = 2, else `[batch, H, W, n]`."""
        h = ops.relu(self.stem_norm(self.stem(L.reflect_pad(images, 3))))
        h = ops.relu(self.down1_norm(self.down1(self._down_pad(h))))
        h = ops.relu(self.down2_norm(self.down2(self._down_pad(h))))
        for block in self.blocks:
            h = block(h)
        h = self.ppm(h)
        h = ops.relu(self.up1_norm(self.up1(L.upsample_nearest(h))))
        h = ops.relu(self.up2_norm(self.up2(L.upsample_nearest(h))))
        return L.float32(self.head(L.reflect_pad(h, self.output_kernel // 2)))

    def _down_pad(self, x):
        if not self.symmetric_padding:
            return x
        return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def call(self, images, training=False):
        logits = self.logits(images)
        if self.num_regions == 2:
            first = ops.sigmoid(logits / self.temperature)
            return ops.concatenate([first, 1.0 - first], axis=-1)
        return ops.softmax(logits / self.temperature, axis=-1)

"""Small layers Keras core lacks, shared by the networks of every method.

Images are NHWC. All layers are plain `keras.layers.Layer` subclasses; configuration
goes through the factory functions of each network module, never through gin on a Layer
(gin's decorator breaks Keras 3 construction).
"""
import keras
from keras import ops

from tfseg.modeling import spectral_norm as sn


def orthogonal(gain=0.8):
    """ReDO's initialiser: orthogonal with gain 0.8 on every conv and dense (0.2 and 1.4 fail)."""
    return keras.initializers.Orthogonal(gain=gain)


def conv(filters, kernel_size, *, strides=1, padding="same", use_bias=True, spectral_norm=False,
         gain=0.8, name=None):
    """A Conv2D with orthogonal init, optionally spectrally normalised.

    `spectral_norm`: False, "reference" (PyTorch's semantics, `tfseg.modeling.spectral_norm`) or
    "keras" (Keras' `SpectralNormalization` wrapper).
    """
    kwargs = dict(strides=strides, padding=padding, use_bias=use_bias, kernel_initializer=orthogonal(gain))
    return _spectrally_normalised(keras.layers.Conv2D, sn.SpectralConv2D, spectral_norm, name,
                                  filters, kernel_size, **kwargs)


def dense(units, *, use_bias=True, spectral_norm=False, gain=0.8, name=None):
    """A Dense layer with orthogonal init, optionally spectrally normalised (as `conv`)."""
    return _spectrally_normalised(keras.layers.Dense, sn.SpectralDense, spectral_norm, name,
                                  units, use_bias=use_bias, kernel_initializer=orthogonal(gain))


def _spectrally_normalised(plain, reference, spectral_norm, name, *args, **kwargs):
    if spectral_norm is False:
        return plain(*args, name=name, **kwargs)
    if spectral_norm == "reference":
        return reference(*args, name=name, **kwargs)
    if spectral_norm == "keras":
        return keras.layers.SpectralNormalization(plain(*args, **kwargs), name=name)
    raise ValueError(f"spectral_norm must be False or one of {sn.STYLES}, got {spectral_norm!r}")


class BuiltOnFirstCall:
    """Mixin for a composite layer (one made of other layers): building it is its first call.

    Keras builds a layer that has no `build` method by tracing its `call` symbolically, and inside
    that trace every nested layer without one is traced again: building a smoke-sized ReDO's
    networks took 8 s that way, mostly re-tracing the same convolutions. With this (empty) `build`,
    the sub-layers build themselves, once, when the first (eager) call reaches them.
    """

    def build(self, *shapes, **named_shapes):
        del shapes, named_shapes


def float32(x):
    """`x` in float32: what a network hands back under a mixed-precision policy (bfloat16 or float16
    compute), so that masks, losses and a discriminator's score are float32 whatever the policy."""
    return ops.cast(x, "float32")


def instance_norm(affine=True, epsilon=1e-5, name=None):
    """PyTorch-style InstanceNorm (biased variance, eps 1e-5, no running stats)."""
    return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, center=affine,
                                           scale=affine, name=name)


def upsample_nearest(x, factor=2):
    """Nearest-neighbour upsampling by an integer factor (PyTorch `Upsample(mode='nearest')`)."""
    return ops.repeat(ops.repeat(x, factor, axis=1), factor, axis=2)


def reflect_pad(x, pad):
    """Reflection padding of the two spatial axes."""
    return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")


class ConditionalInstanceNorm(keras.layers.Layer):
    """Instance norm without affine, then `h * (offset + gamma(z)) + beta(z)` (ReDO's CN).

    ReDO's code uses no offset (0), which makes the output nearly even in z early on, so z is
    slow to recover from the image; offset 1 (BigGAN-style conditional BN) starts from the
    identity and speeds up the information-conservation term on small budgets.

    Call args:
        x: `[batch, H, W, C]` features.
        z: `[batch, nz]` code.
    """

    def __init__(self, gain=0.8, epsilon=1e-5, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.gain = gain
        self.offset = offset
        self.norm = instance_norm(affine=False, epsilon=epsilon)
        self.gamma = None
        self.beta = None

    def build(self, x_shape, z_shape):
        channels = x_shape[-1]
        self.norm.build(x_shape)
        self.gamma = dense(channels, gain=self.gain, name="gamma")
        self.beta = dense(channels, gain=self.gain, name="beta")
        self.gamma.build(z_shape)
        self.beta.build(z_shape)

    def call(self, x, z):
        h = self.norm(x)
        gamma = self.gamma(z)[:, None, None, :]
        beta = self.beta(z)[:, None, None, :]
        return h * (self.offset + gamma) + beta


class SelfAttention(keras.layers.Layer):
    """SAGAN / BigGAN self-attention with 2x2 max-pooled keys and values (ReDO §2.3).

    `y = x + gamma * out`, gamma starts at 0 so the block begins as the identity.
    Needs even H and W.
    """

    def __init__(self, spectral_norm="reference", gain=0.8, **kwargs):
        super().__init__(**kwargs)
        self.spectral_norm = spectral_norm
        self.gain_value = gain

    def build(self, input_shape):
        c = input_shape[-1]
        kw = dict(use_bias=False, spectral_norm=self.spectral_norm, gain=self.gain_value)
        self.query = conv(max(c // 8, 1), 1, name="query", **kw)
        self.key = conv(max(c // 8, 1), 1, name="key", **kw)
        self.value = conv(max(c // 2, 1), 1, name="value", **kw)
        self.out = conv(c, 1, name="out", **kw)
        self.query.build(input_shape)
        self.key.build(input_shape)
        self.value.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (max(c // 2, 1),))
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def call(self, x, training=False):
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        q = self.query(x, training=training)
        k = ops.max_pool(self.key(x, training=training), 2, 2)
        v = ops.max_pool(self.value(x, training=training), 2, 2)
        q = ops.reshape(q, (b, h * w, q.shape[-1]))
        k = ops.reshape(k, (b, (h // 2) * (w // 2), k.shape[-1]))
        v = ops.reshape(v, (b, (h // 2) * (w // 2), v.shape[-1]))
        attention = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))), axis=-1)
        attended = ops.reshape(ops.matmul(attention, v), (b, h, w, v.shape[-1]))
        return x + self.gamma * self.out(attended, training=training)


class PyramidPooling(keras.layers.Layer):
    """Pyramid pooling module (PSPNet) as in ReDO's mask network.

    Four branches average-pool the `[batch, S, S, C]` map into about 1, 2, 3 and 6 bins per side
    (kernel = stride = S // bins, as the reference does), project each to one channel with a
    1x1 conv, resize back bilinearly (half-pixel centres = PyTorch align_corners=False) and
    concatenate them to the input: output `[batch, S, S, C + 4]`.
    """

    def __init__(self, bins=(1, 2, 3, 6), gain=0.8, **kwargs):
        super().__init__(**kwargs)
        self.bins = tuple(bins)
        self.gain_value = gain

    def build(self, input_shape):
        size = input_shape[1]
        self.pools = [max(size // b, 1) for b in self.bins]
        self.projections = []
        for i, pool in enumerate(self.pools):
            projection = conv(1, 1, use_bias=True, gain=self.gain_value, name=f"branch{i}")
            pooled = max(size // pool, 1)
            projection.build((None, pooled, pooled, input_shape[-1]))
            self.projections.append(projection)

    def call(self, x):
        size = (x.shape[1], x.shape[2])
        branches = [x]
        for pool, projection in zip(self.pools, self.projections):
            pooled = ops.average_pool(x, pool, pool, padding="valid")
            branches.append(ops.image.resize(projection(pooled), size, interpolation="bilinear"))
        return ops.concatenate(branches, axis=-1)

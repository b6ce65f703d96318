"""StyleGAN2 layers and networks at tiny sizes (the layer-by-layer match to rosinality is in
test_convert_stylegan2.py)."""
import numpy as np
import pytest
import tensorflow as tf

from tfseg import losses
from tfseg.modeling import stylegan2 as sg2


def tiny_generator(resolution=16, **kwargs):
    return sg2.Generator(resolution, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64,
                         max_channels=8, seed=0, **kwargs)


def modulated_conv_reference(x, w, kernel, affine_kernel, affine_bias, demodulate):
    """Per-sample weights applied with explicit patches, NHWC, 'same' padding, float64.

    kernel `[k, k, I, O]` (unscaled), affine EqualDense with gain 1, lr_mul 1.
    """
    k, _, cin, cout = kernel.shape
    styles = w @ (affine_kernel / np.sqrt(w.shape[1])) + affine_bias           # [b, I]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, wd = x.shape[1:3]
    # patches[b, y, x, kh, kw, i]
    patches = np.stack([np.stack([xp[:, i:i + h, j:j + wd] for j in range(k)], axis=3)
                        for i in range(k)], axis=3)
    out = np.zeros((x.shape[0], h, wd, cout))
    for b in range(x.shape[0]):
        weight = kernel / np.sqrt(cin * k * k) * styles[b][None, None, :, None]   # [k, k, I, O]
        if demodulate:
            weight = weight / np.sqrt(np.sum(weight**2, axis=(0, 1, 2)) + 1e-8)
        out[b] = np.einsum("yxhwi,hwio->yxo", patches[b], weight)
    return out


@pytest.mark.parametrize("demodulate,kernel_size", [(True, 3), (False, 3), (False, 1)])
def test_modulated_conv_equals_per_sample_weight_convolution(demodulate, kernel_size):
    rng = np.random.default_rng(0)
    layer = sg2.ModulatedConv2D(5, kernel_size, demodulate=demodulate)
    x = rng.standard_normal((3, 6, 6, 4))
    w = rng.standard_normal((3, 7))
    layer(tf.constant(x, tf.float32), tf.constant(w, tf.float32))
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape))
    layer.affine.kernel.assign(rng.standard_normal(layer.affine.kernel.shape))
    layer.affine.bias.assign(1.0 + 0.3 * rng.standard_normal(4))
    got = layer(tf.constant(x, tf.float32), tf.constant(w, tf.float32)).numpy()
    want = modulated_conv_reference(x, w, layer.kernel.numpy(), layer.affine.kernel.numpy(),
                                    layer.affine.bias.numpy(), demodulate)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_demodulation_makes_output_independent_of_style_scale():
    layer = sg2.ModulatedConv2D(4, 3, demodulate=True)
    x = tf.random.normal([2, 5, 5, 3], seed=1)
    w = tf.random.normal([2, 6], seed=2)
    layer(x, w)
    layer.affine.kernel.assign(tf.zeros_like(layer.affine.kernel))   # styles = bias
    a = layer(x, w).numpy()
    layer.affine.bias.assign(7.0 * layer.affine.bias)                 # scale every style by 7
    np.testing.assert_allclose(layer(x, w).numpy(), a, rtol=1e-4, atol=1e-5)


def test_upsampling_modulated_conv_doubles_the_size():
    layer = sg2.ModulatedConv2D(6, 3, upsample=True)
    assert layer(tf.zeros([2, 4, 4, 3]), tf.zeros([2, 5])).shape == (2, 8, 8, 6)


@pytest.mark.parametrize("resolution", [8, 32])
def test_generator_returns_image_and_two_features_per_block(resolution):
    gen = tiny_generator(resolution)
    images, features = gen(tf.random.normal([2, 8]), return_features=True)
    assert images.shape == (2, resolution, resolution, 3)
    assert len(features) == int(np.log2(resolution)) - 2 == len(gen.block_resolutions)
    for (f0, f1), r in zip(features, gen.block_resolutions):
        channels = sg2.channels_at(r, 64, 8)
        assert f0.shape == f1.shape == (2, r, r, channels)
    assert gen.num_ws == 2 * int(np.log2(resolution)) - 2
    assert len(gen.noise_resolutions) == gen.num_noise


def test_generator_noise_is_fresh_per_call_unless_given():
    gen = tiny_generator(8)
    z = tf.random.normal([2, 8], seed=3)
    gen(z)
    for block in gen.blocks:
        block.conv1.noise.strength.assign(1.0)
    assert not np.allclose(gen(z).numpy(), gen(z).numpy())
    noise = gen.make_noise(2, seed=0)
    np.testing.assert_allclose(gen(z, noise=noise).numpy(), gen(z, noise=noise).numpy())
    np.testing.assert_allclose(gen(z, randomize_noise=False).numpy(),
                               gen(z, randomize_noise=False).numpy())


@pytest.mark.parametrize("mode", [True, "output", "input"])
def test_zeroing_the_4x4_activations_changes_the_image(mode):
    gen = tiny_generator(16)
    z = tf.random.normal([2, 8], seed=4)
    noise = gen.make_noise(2, seed=1)
    full = gen(z, noise=noise).numpy()
    zeroed, features = gen(z, noise=noise, zero_4x4=mode, return_features=True)
    assert zeroed.shape == full.shape
    assert np.abs(zeroed.numpy() - full).max() > 1e-3
    assert len(features) == len(gen.blocks)


def test_zeroing_the_4x4_output_leaves_only_the_4x4_rgb_bias_as_skip():
    gen = tiny_generator(8)
    gen(tf.zeros([1, 8]))
    gen.to_rgb_4x4.bias.assign([0.5, -0.5, 0.25])
    for block in gen.blocks:      # make the 8x8 block output nothing of its own
        block.to_rgb.conv.affine.kernel.assign(tf.zeros_like(block.to_rgb.conv.affine.kernel))
        block.to_rgb.conv.affine.bias.assign(tf.zeros_like(block.to_rgb.conv.affine.bias))
    image = gen(tf.random.normal([2, 8]), zero_4x4=True, noise=gen.make_noise(2)).numpy()
    # A constant 4x4 map upsampled by the FIR is constant away from the zero-padded border.
    np.testing.assert_allclose(image[:, 2:-2, 2:-2], np.broadcast_to([0.5, -0.5, 0.25],
                                                                     image[:, 2:-2, 2:-2].shape),
                               atol=1e-5)


def test_truncation_psi_zero_gives_the_same_image_for_every_z():
    gen = tiny_generator(16)
    gen(tf.zeros([1, 8]))
    gen.compute_w_avg(num_samples=64, seed=0)
    assert np.abs(gen.w_avg.numpy()).sum() > 0
    noise = gen.make_noise(1, seed=2)
    a = gen(tf.random.normal([1, 8], seed=5), truncation_psi=0.0, noise=noise).numpy()
    b = gen(tf.random.normal([1, 8], seed=6), truncation_psi=0.0, noise=noise).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    at_mean = gen(gen.w_avg[None], input_is_latent=True, noise=noise).numpy()
    np.testing.assert_allclose(a, at_mean, atol=1e-6)
    c = gen(tf.random.normal([1, 8], seed=5), truncation_psi=1.0, noise=noise).numpy()
    assert np.abs(a - c).max() > 1e-4


def test_per_layer_ws_follow_the_rosinality_latent_indexing():
    gen = tiny_generator(16)
    noise = gen.make_noise(1, seed=4)
    w = gen.mapping(tf.random.normal([1, 8], seed=8))
    ws = np.repeat(w.numpy()[:, None], gen.num_ws, axis=1)
    image, features = gen(ws, input_is_latent=True, noise=noise, return_features=True)
    np.testing.assert_allclose(image.numpy(), gen(w, input_is_latent=True, noise=noise).numpy(),
                               atol=1e-6)

    def changed(index):
        other = ws.copy()
        other[:, index] += 1.0
        return gen(other, input_is_latent=True, noise=noise, return_features=True)

    def assert_same(f, g):
        np.testing.assert_allclose(f.numpy(), g.numpy(), atol=1e-6)

    def assert_differ(f, g):
        assert np.abs(f.numpy() - g.numpy()).max() > 1e-4

    # the last index styles only the final toRGB: the image changes, no feature does
    image_last, features_last = changed(gen.num_ws - 1)
    assert_differ(image_last, image)
    for pair, pair_last in zip(features, features_last):
        for f, f_last in zip(pair, pair_last):
            assert_same(f, f_last)
    # index 1 is shared by the 4x4 toRGB and the 8x8 upsampling conv (as in rosinality)
    _, features1 = changed(1)
    assert_differ(features1[0][0], features[0][0])
    # index 4 = 2j for j = 2: the second conv of the 16x16 block, not its first
    _, features4 = changed(4)
    assert_same(features4[1][0], features[1][0])
    assert_differ(features4[1][1], features[1][1])


def test_generator_rejects_bad_options():
    gen = tiny_generator(8)
    with pytest.raises(ValueError, match="zero_4x4"):
        gen(tf.zeros([1, 8]), zero_4x4="const")
    with pytest.raises(ValueError, match="noise"):
        gen(tf.zeros([1, 8]), noise=[None])
    with pytest.raises(ValueError, match="power of two"):
        sg2.Generator(24)


def test_generator_under_xla_matches_eager():
    gen = tiny_generator(8)
    z = tf.random.normal([2, 8], seed=7)
    noise = gen.make_noise(2, seed=3)
    eager = gen(z, noise=noise, truncation_psi=0.7).numpy()
    compiled = tf.function(lambda z: gen(z, noise=noise, truncation_psi=0.7), jit_compile=True)
    np.testing.assert_allclose(compiled(z).numpy(), eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("resolution,batch", [(8, 2), (32, 4)])
def test_discriminator_returns_one_logit_per_image(resolution, batch):
    d = sg2.Discriminator(resolution, channel_base=64, max_channels=8)
    logits = d(tf.random.uniform([batch, resolution, resolution, 3], -1, 1))
    assert logits.shape == (batch,)
    assert len(d.blocks) == int(np.log2(resolution)) - 2


def test_r1_of_a_linear_critic_is_the_squared_norm_of_its_weights():
    a = np.random.default_rng(8).standard_normal((4, 4, 3)).astype(np.float32)

    def critic(x):
        return tf.reduce_sum(x * a, axis=(1, 2, 3))

    penalty = losses.r1_penalty(critic, tf.random.normal([3, 4, 4, 3])).numpy()
    np.testing.assert_allclose(penalty, np.full(3, np.sum(a**2)), rtol=1e-5)


def test_r1_of_the_discriminator_is_finite_per_sample():
    d = sg2.Discriminator(8, channel_base=64, max_channels=8, mbstd_group=2)
    penalty = losses.r1_penalty(d, tf.random.uniform([2, 8, 8, 3], -1, 1)).numpy()
    assert penalty.shape == (2,) and np.isfinite(penalty).all() and (penalty > 0).all()

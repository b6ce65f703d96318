"""Output shapes and invariants of every network, at tiny sizes."""
import numpy as np
import pytest
import tensorflow as tf

from tfseg.modeling import layers as L
from tfseg.modeling.mask_network import MaskNetwork
from tfseg.modeling.redo_discriminator import Discriminator
from tfseg.modeling.redo_generator import RegionGenerator
from tfseg.modeling.resolutions import power_of_two_log2


@pytest.mark.parametrize("num_regions", [2, 3])
def test_mask_network_outputs_masks_that_sum_to_one(num_regions):
    net = MaskNetwork(num_regions=num_regions, width=8, num_residual_blocks=1)
    masks = net(tf.random.uniform([2, 16, 16, 3], -1, 1)).numpy()
    assert masks.shape == (2, 16, 16, num_regions)
    np.testing.assert_allclose(masks.sum(-1), 1.0, atol=1e-5)
    assert masks.min() >= 0.0 and masks.max() <= 1.0


@pytest.mark.parametrize("resolution,attention", [(8, False), (16, True), (32, False)])
def test_region_generator_draws_only_inside_its_mask(resolution, attention):
    gen = RegionGenerator(resolution, width=4, self_attention=attention, z_dim=5)
    mask = np.zeros([3, resolution, resolution, 1], np.float32)
    mask[:, : resolution // 2] = 1.0
    out = gen(tf.constant(mask), tf.random.normal([3, 5]), training=True).numpy()
    assert out.shape == (3, resolution, resolution, 3)
    assert np.all(out[:, resolution // 2:] == 0.0)
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("resolution,log", [(4, 2), (8, 3), (128, 7), (256.0, 8)])
def test_power_of_two_resolutions_give_their_log2(resolution, log):
    assert power_of_two_log2(resolution, 4, "net") == log


@pytest.mark.parametrize("resolution", [0, -8, 2, 48, 100, 4.5])
def test_other_resolutions_are_refused_naming_the_network_and_the_value(resolution):
    with pytest.raises(ValueError, match=f"^net resolution must be a power of two >= 4, got {resolution}$"):
        power_of_two_log2(resolution, 4, "net")


def test_region_generator_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        RegionGenerator(24)


@pytest.mark.parametrize("resolution,encoder", [(16, True), (32, False)])
def test_discriminator_outputs_logits_and_codes(resolution, encoder):
    d = Discriminator(resolution, width=4, max_width=16, num_regions=2, z_dim=3,
                      with_encoder_head=encoder)
    logits, codes = d(tf.random.uniform([5, resolution, resolution, 3], -1, 1), training=True)
    assert logits.shape == (5,)
    assert (codes is None) if not encoder else codes.shape == (5, 2, 3)


def test_self_attention_starts_as_identity():
    layer = L.SelfAttention()
    x = tf.random.normal([2, 8, 8, 16])
    np.testing.assert_allclose(layer(x, training=True), x, atol=1e-6)


def test_pyramid_pooling_appends_one_channel_per_branch():
    out = L.PyramidPooling()(tf.random.normal([2, 8, 8, 6]))
    assert out.shape == (2, 8, 8, 10)


def test_conditional_instance_norm_uses_the_code():
    layer = L.ConditionalInstanceNorm()
    x = tf.random.normal([2, 4, 4, 3])
    a = layer(x, tf.ones([2, 7])).numpy()
    b = layer(x, -tf.ones([2, 7])).numpy()
    assert not np.allclose(a, b)


def test_instance_norm_normalises_each_channel_of_each_image():
    x = tf.random.normal([2, 6, 6, 3]) * 5 + 3
    y = L.instance_norm(affine=False)(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-2)


def test_redo_discriminator_block_gives_its_gain_to_the_shortcut_too():
    from tfseg.modeling.redo_discriminator import DownResBlock  # pylint: disable=import-outside-toplevel
    block = DownResBlock(8, gain=0.3)
    block(tf.zeros([1, 8, 8, 4]))
    # Orthogonal init of a 1x1 conv 4 -> 8: the singular values of the kernel are all the gain.
    kernel = block.shortcut._kernel.numpy().reshape(4, 8)  # the stored W, before W / sigma
    np.testing.assert_allclose(np.linalg.svd(kernel, compute_uv=False), 0.3, atol=1e-5)


@pytest.mark.parametrize("network,inputs", [
    (lambda: MaskNetwork(width=8, num_residual_blocks=2), lambda: [tf.zeros([2, 16, 16, 3])]),
    (lambda: RegionGenerator(16, width=4, self_attention=False, z_dim=3),
     lambda: [tf.ones([2, 16, 16, 1]), tf.zeros([2, 3])]),
    (lambda: Discriminator(16, width=4, self_attention=False, z_dim=3), lambda: [tf.zeros([2, 16, 16, 3])]),
])
def test_composite_networks_build_on_their_first_call_without_tracing_each_block_again(
        network, inputs, monkeypatch):
    from tfseg.modeling import mask_network, redo_discriminator, redo_generator  # pylint: disable=import-outside-toplevel
    calls = []
    for block in (mask_network.ResidualBlock, redo_generator.UpResBlock, redo_discriminator.DownResBlock):
        original = block.call
        monkeypatch.setattr(block, "call", lambda self, *a, _original=original, **k: (
            calls.append(self.name), _original(self, *a, **k))[1])
    net = network()
    net(*inputs())
    # Keras' own build of a layer without `build` traces its call, and each nested block's again.
    assert calls and len(calls) == len(set(calls)), calls
    assert net.built and net.trainable_variables
    num_variables = len(net.trainable_variables)
    net(*inputs())
    assert len(calls) == 2 * len(set(calls))  # the second call runs each block once more, no new state
    assert len(net.trainable_variables) == num_variables

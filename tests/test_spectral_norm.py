"""Spectral normalisation with the reference's (PyTorch's) semantics, against a numpy power iteration."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.errors import ConfigError
from tfseg.methods import redo
from tfseg.modeling import layers as L
from tfseg.modeling import spectral_norm as sn


def _numpy_power_step(matrix, u, v):
    """One step of torch.nn.utils.spectral_norm on W = matrix.T ([out, fan_in]); returns u, v, sigma."""
    weight = matrix.T
    v = weight.T @ u
    v = v / max(np.linalg.norm(v), 1e-12)
    u = weight @ v
    u = u / max(np.linalg.norm(u), 1e-12)
    return u, v, u @ weight @ v


def _layer(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "conv":
        layer, shape = L.conv(5, 3, spectral_norm="reference", name="c"), (2, 6, 6, 4)
    else:
        layer, shape = L.dense(5, spectral_norm="reference", name="d"), (2, 4)
    layer.build(shape)
    layer._kernel.assign(rng.normal(size=layer._kernel.shape).astype(np.float32))  # not orthogonal
    return layer, tf.constant(rng.normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_a_training_call_takes_one_power_step_and_divides_the_kernel_by_sigma(kind):
    layer, x = _layer(kind)
    kernel = layer._kernel.numpy().copy()
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u, v, sigma = _numpy_power_step(matrix, layer.spectral_u.numpy(), layer.spectral_v.numpy())
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(layer.spectral_u.numpy(), u, atol=1e-5)
    np.testing.assert_allclose(layer.spectral_v.numpy(), v, atol=1e-5)
    np.testing.assert_array_equal(layer._kernel.numpy(), kernel)  # W is never overwritten (Keras' is)
    normalized = kernel / sigma
    expected = (tf.nn.conv2d(x, normalized, 1, "SAME") if kind == "conv" else x @ normalized) + layer.bias
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)


def test_inference_reads_u_and_v_without_updating_them():
    layer, x = _layer("conv")
    layer(x, training=True)
    u, v = layer.spectral_u.numpy().copy(), layer.spectral_v.numpy().copy()
    first = layer(x, training=False).numpy()
    np.testing.assert_array_equal(layer.spectral_u.numpy(), u)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), first)
    matrix = layer._kernel.numpy().reshape(-1, 5)
    sigma = u @ matrix.T @ v
    np.testing.assert_allclose(layer.normalized_kernel(update=False).numpy(), layer._kernel.numpy() / sigma,
                               atol=1e-6)


def test_repeated_training_calls_converge_to_the_largest_singular_value():
    layer, x = _layer("conv", seed=1)
    for _ in range(200):
        layer(x, training=True)
    matrix = layer._kernel.numpy().reshape(-1, 5)
    largest = np.linalg.svd(matrix, compute_uv=False)[0]
    normalized = layer.normalized_kernel(update=False).numpy().reshape(-1, 5)
    assert np.linalg.svd(normalized, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
    sigma = np.median(layer._kernel.numpy().reshape(-1, 5) / normalized)  # W / (W / sigma), every entry
    assert sigma == pytest.approx(largest, rel=1e-3)


def test_the_gradient_flows_through_sigma_with_u_and_v_held_constant():
    # L = <W / sigma, C> with sigma = u^T W v: dL/dW = C / sigma - <W, C> / sigma^2 * (u v^T), in the
    # [fan_in, out] layout of the kernel (PyTorch's W is its transpose). Keras' wrapper gives C only.
    layer, _ = _layer("dense", seed=2)
    rng = np.random.default_rng(3)
    weights = layer._kernel.numpy()
    c = rng.normal(size=weights.shape).astype(np.float32)
    u, v = layer.spectral_u.numpy(), layer.spectral_v.numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer.normalized_kernel(update=False) * c)
    grad = tape.gradient(loss, layer._kernel).numpy()
    sigma = u @ weights.T @ v
    expected = c / sigma - np.sum(weights * c) / sigma ** 2 * np.outer(v, u)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_the_keras_style_is_the_keras_wrapper_and_overwrites_the_kernel():
    layer = L.conv(5, 3, spectral_norm="keras")
    assert isinstance(layer, keras.layers.SpectralNormalization)
    x = tf.random.normal([2, 6, 6, 4], seed=1)
    layer.build(x.shape)
    before = layer.layer.kernel.numpy().copy()
    layer(x, training=True)
    assert not np.allclose(layer.layer.kernel.numpy(), before)  # the variable now holds W / sigma
    with pytest.raises(ValueError, match="spectral_norm must be False or one of"):
        L.conv(5, 3, spectral_norm=True)


def test_redo_uses_the_reference_style_by_default_and_checkpoints_u_and_v():
    model = redo.ReDOSettings(16, mask_width=8, mask_residual_blocks=1, generator_width=4,
                              discriminator_width=8, z_dim=4).build()
    model.build_for_training(4)
    names = [v.path for v in model.non_trainable_variables]  # what make_checkpoint saves besides weights
    assert any(name.endswith("spectral_u") for name in names) and any(n.endswith("spectral_v") for n in names)
    assert not any("vector_u" in name for name in names)  # no Keras wrapper left
    keras_style = redo.ReDOSettings(16, mask_width=8, mask_residual_blocks=1, generator_width=4,
                                    discriminator_width=8, z_dim=4, spectral_norm="keras").build()
    keras_style.build_for_training(4)
    assert any("vector_u" in v.path for v in keras_style.non_trainable_variables)
    with pytest.raises(ConfigError, match="tfseg.methods.redo.spectral_norm must be one of"):
        redo.ReDOSettings(16, spectral_norm="pytorch")

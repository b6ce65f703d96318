"""PerturbGAN's perturbations on hand-made examples."""
import numpy as np
import tensorflow as tf

from tfseg.modeling import perturbation


def _numbered(size=8, channels=2):
    x = np.arange(1, size * size + 1, dtype=np.float32).reshape(1, size, size, 1)
    return np.concatenate([x * (c + 1) for c in range(channels)], axis=-1)


def test_shift_moves_foreground_and_mask_together_and_zero_fills_the_uncovered_band():
    layers = _numbered()                             # channel 0 "foreground", channel 1 "mask"
    shifted = perturbation.shift_layers(tf.constant(layers), tf.constant([[2, -3]])).numpy()
    expected = np.zeros_like(layers)
    # Down by 2, left by 3: out[y, x] = in[y - 2, x + 3]; rows 0-1 and columns 5-7 uncovered.
    expected[0, 2:, :5] = layers[0, :6, 3:]
    np.testing.assert_array_equal(shifted, expected)
    # Both channels moved by the same offset.
    np.testing.assert_array_equal(shifted[..., 1], 2 * shifted[..., 0])
    # Zero fill, no wrap-around: the first two rows are empty.
    assert not shifted[0, :2].any() and not shifted[0, :, 5:].any()


def test_each_sample_gets_its_own_shift_and_zero_shift_is_identity():
    layers = np.concatenate([_numbered(), _numbered()], axis=0)
    shifted = perturbation.shift_layers(tf.constant(layers), tf.constant([[0, 0], [0, 1]])).numpy()
    np.testing.assert_array_equal(shifted[0], layers[0])
    np.testing.assert_array_equal(shifted[1, :, 1:], layers[1, :, :-1])
    assert not shifted[1, :, 0].any()


def test_shift_passes_gradients_to_the_moved_pixels_only():
    layers = tf.constant(_numbered(channels=1))
    with tf.GradientTape() as tape:
        tape.watch(layers)
        total = tf.reduce_sum(perturbation.shift_layers(layers, tf.constant([[0, 3]])))
    grad = tape.gradient(total, layers).numpy()[0, ..., 0]
    np.testing.assert_array_equal(grad[:, :5], 1.0)      # these pixels landed in the image
    np.testing.assert_array_equal(grad[:, 5:], 0.0)      # these fell off the right border


def test_random_shifts_are_integers_within_beta_times_size():
    shifts = perturbation.random_shifts(4096, 64, 0.125, tf.constant([1, 2])).numpy()
    assert shifts.dtype == np.int32
    assert shifts.min() == -8 and shifts.max() == 8
    assert abs(shifts.mean()) < 0.5
    assert not perturbation.random_shifts(16, 64, 0.0, tf.constant([1, 2])).numpy().any()


def test_contrast_jitter_keeps_channel_mean_and_range():
    rng = np.random.default_rng(0)
    background = rng.uniform(-1, 1, size=[8, 6, 6, 3]).astype(np.float32)
    jittered = perturbation.contrast_jitter(tf.constant(background), 0.3, tf.constant([3, 4])).numpy()
    assert not np.allclose(jittered, background)
    assert (jittered >= background.min(axis=(1, 2), keepdims=True) - 1e-6).all()
    assert (jittered <= background.max(axis=(1, 2), keepdims=True) + 1e-6).all()
    # Contrast scaled around the mean by c in (0.7, 1.3): deviations scale by c before clipping.
    ratio = np.abs(jittered - jittered.mean(axis=(1, 2), keepdims=True)).sum() / \
        np.abs(background - background.mean(axis=(1, 2), keepdims=True)).sum()
    assert 0.6 < ratio < 1.35
    np.testing.assert_array_equal(perturbation.contrast_jitter(background, 0.0, tf.constant([3, 4])),
                                  background)


def test_composite_is_alpha_blending():
    fg, bg = np.full([1, 2, 2, 3], 1.0, np.float32), np.full([1, 2, 2, 3], -1.0, np.float32)
    mask = np.array([[[[1.0], [0.0]], [[0.25], [0.5]]]], np.float32)
    out = perturbation.composite(fg, mask, bg)
    np.testing.assert_allclose(out[0, :, :, 0], [[1.0, -1.0], [-0.5, 0.0]])

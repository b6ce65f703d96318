"""Each loss against a value computed by hand."""
import numpy as np
import pytest
import tensorflow as tf

from tfseg import losses


def test_hinge_discriminator_loss_matches_hand_values():
    real = np.array([2.0, 0.5, -1.0], np.float32)
    fake = np.array([-2.0, 0.0, 0.5], np.float32)
    # max(0, 1 - real) = [0, 0.5, 2]; max(0, 1 + fake) = [0, 1, 1.5]
    np.testing.assert_allclose(losses.hinge_discriminator_loss(real, fake), [0.0, 1.5, 3.5])


def test_hinge_generator_loss_is_minus_logit():
    np.testing.assert_allclose(losses.hinge_generator_loss(np.array([1.5, -0.25], np.float32)),
                               [-1.5, 0.25])


def test_information_conservation_loss_is_mean_squared_error_per_example():
    predicted = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    codes = np.array([[0.0, 0.0], [3.0, -1.0]], np.float32)
    # ((1)^2 + (2)^2) / 2 = 2.5 ; ((-3)^2 + (1)^2) / 2 = 5
    np.testing.assert_allclose(losses.information_conservation_loss(predicted, codes), [2.5, 5.0])


def test_mask_coverage_and_binariness():
    masks = np.zeros([2, 2, 2, 1], np.float32)
    masks[0, 0, 0, 0] = 1.0            # coverage 1/4, binary
    masks[1] = 0.5                     # coverage 1/2, fully undecided
    np.testing.assert_allclose(losses.mask_coverage(masks), [0.25, 0.5])
    np.testing.assert_allclose(losses.mask_binariness(masks), [0.0, 0.5])
    masks[0, 0, 1, 0] = 0.2            # min(0.2, 0.8) = 0.2 over 4 pixels
    assert float(losses.mask_binariness(masks)[0]) == pytest.approx(0.05)


def test_wasserstein_losses_and_drift_match_hand_values():
    real = np.array([2.0, -1.0], np.float32)
    fake = np.array([0.5, 1.0], np.float32)
    np.testing.assert_allclose(losses.wasserstein_discriminator_loss(real, fake), [-1.5, 2.0])
    np.testing.assert_allclose(losses.wasserstein_generator_loss(fake), [-0.5, -1.0])
    np.testing.assert_allclose(losses.drift_loss(real), [4.0, 1.0])


def test_gradient_penalty_of_a_linear_critic_is_norm_of_its_weights_minus_one_squared():
    rng = np.random.default_rng(0)
    a = rng.normal(size=[1, 4, 4, 3]).astype(np.float32)
    critic = lambda x: tf.reduce_sum(x * a, axis=(1, 2, 3))  # noqa: E731
    real = rng.normal(size=[3, 4, 4, 3]).astype(np.float32)
    fake = rng.normal(size=[3, 4, 4, 3]).astype(np.float32)
    points = losses.interpolate(real, fake, np.array([0.0, 0.5, 1.0], np.float32))
    np.testing.assert_allclose(points[1], 0.5 * real[1] + 0.5 * fake[1], rtol=1e-6)
    np.testing.assert_allclose(points[2], real[2], rtol=1e-6)
    penalty = losses.gradient_penalty(critic, points)
    assert penalty.shape == (3,)
    expected = (np.sqrt(np.sum(a ** 2)) - 1.0) ** 2
    np.testing.assert_allclose(penalty, [expected] * 3, rtol=1e-5)


def test_r1_penalty_of_a_linear_critic_is_squared_norm_of_its_weights():
    a = np.full([1, 2, 2, 1], 0.5, np.float32)     # ||a||^2 = 4 * 0.25 = 1
    critic = lambda x: tf.reduce_sum(3.0 * x * a, axis=(1, 2, 3))  # noqa: E731
    penalty = losses.r1_penalty(critic, np.ones([2, 2, 2, 1], np.float32))
    np.testing.assert_allclose(penalty, [9.0, 9.0], rtol=1e-6)


def test_logistic_losses_match_softplus_by_hand():
    real = np.array([0.0, 2.0], np.float32)
    fake = np.array([0.0, -1.0], np.float32)
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(losses.logistic_discriminator_loss(real, fake),
                               softplus(-real) + softplus(fake), rtol=1e-6)
    np.testing.assert_allclose(losses.logistic_generator_loss(fake), softplus(-fake), rtol=1e-6)


def test_mask_size_loss_is_a_hinge_below_min_coverage_per_sample():
    masks = np.zeros([3, 2, 2, 1], np.float32)
    masks[1, 0, 0] = 1.0                 # coverage 0.25
    masks[2] = 1.0                       # coverage 1
    # max(0, 0.3 - [0, 0.25, 1]) = [0.3, 0.05, 0]
    np.testing.assert_allclose(losses.mask_size_loss(masks, 0.3), [0.3, 0.05, 0.0], atol=1e-7)
    # the excess hinge mirrors it: max(0, [0, 0.25, 1] - 0.6) = [0, 0, 0.4]
    np.testing.assert_allclose(losses.mask_excess_loss(masks, 0.6), [0.0, 0.0, 0.4], atol=1e-7)


def test_mask_binarization_loss_by_hand():
    masks = np.array([[[[0.1], [0.9]], [[0.5], [1.0]]]], np.float32)
    # min(m, 1 - m) = 0.1, 0.1, 0.5, 0 -> mean 0.175
    np.testing.assert_allclose(losses.mask_binarization_loss(masks), [0.175], rtol=1e-6)

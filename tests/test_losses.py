"""Each loss against a value computed by hand."""
import numpy as np
import pytest

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

"""Each method declares its hyper-parameters once: a frozen, documented settings dataclass that gin
configures under the method's name and that builds the method."""
import dataclasses
import os

import pytest
import tensorflow as tf

from tfseg import config, registry
from tfseg.methods import distillation, labels4free, optimizers, perturbgan, redo
from tfseg.training import loading, train_config

import methods as methods_under_test  # tests/methods.py: the one list of methods

registry.import_configurables()  # these tests parse configs, as the entry points do
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (gin name, settings class, config that trains it, a binding of a network size and its value)
METHODS = [(m.name, m.settings_class, m.demo_config, "z_dim", 7 - i) for i, m in enumerate(methods_under_test.METHODS)]


def test_the_tests_list_every_method_gin_knows():
    """tests/methods.py is the one list of methods the tests run: a new method must be in it."""
    assert sorted(m.name for m in methods_under_test.METHODS) == methods_under_test.registered_method_names()


@pytest.mark.parametrize("name, settings_class, gin_file, field, value", METHODS)
def test_a_gin_binding_reaches_the_built_method_through_its_frozen_settings(
        name, settings_class, gin_file, field, value):
    config.parse([os.path.join(REPO, "gin_configs", gin_file), config.SMOKE_CONFIG],
                 [f"tfseg.methods.{name}.{field} = {value}", "tfseg.training.TrainConfig.seed = 4"])
    model = loading.build_method(train_config.TrainConfig())
    assert isinstance(model.settings, settings_class)
    assert getattr(model.settings, field) == value and model.z_dim == value
    # The trainer's resolution and seed are the settings' own.
    assert (model.settings.resolution, model.settings.seed) == (model.resolution, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(model.settings, field, value + 1)


@pytest.mark.parametrize("settings_class", [m[1] for m in METHODS])
def test_every_hyper_parameter_is_documented_where_it_is_declared(settings_class):
    doc = settings_class.__doc__
    missing = [f.name for f in dataclasses.fields(settings_class) if f.name not in doc]
    assert not missing, f"{settings_class.__name__} documents none of {missing}"


def test_labels4free_settings_refuse_an_unknown_choice_before_any_network():
    with pytest.raises(config.ConfigError, match="tfseg.methods.labels4free.distill_on"):
        labels4free.Labels4FreeSettings(16, distill_on="alpha")


def test_perturbgan_needs_its_mask_size_hinge_bound():
    # eta depends on the data set: no default, gin names the missing binding.
    with pytest.raises(Exception, match="min_mask_coverage"):
        perturbgan.PerturbGANSettings(16)
    assert perturbgan.PerturbGANSettings(16, min_mask_coverage=0.2).min_mask_coverage == 0.2


def test_distillation_gradients_train_the_segmenter_only():
    segmenter = distillation.DistilledSegmenter(width=4, residual_blocks=1)
    images = tf.random.uniform([2, 8, 8, 3], -1, 1, seed=1)
    masks = tf.cast(tf.random.uniform([2, 8, 8, 1], seed=2) > 0.5, tf.float32)
    segmenter(images)
    metrics, grads = segmenter.gradients(images, masks, optimizers.gan_adam(1e-3))
    assert len(grads) == len(segmenter.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    assert set(metrics.flat()) == {"loss/segmenter", "mask/coverage", "mask/binariness"}
    assert metrics.losses["segmenter"].shape == (2,)

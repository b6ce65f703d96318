"""PerturbGAN's networks, phases and stages at tiny sizes."""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from tfseg import config, registry
from tfseg.methods import perturbgan as pg
from tfseg.modeling import equalized as E
from tfseg.modeling import stylegan
from tfseg.training import loading, schedule, train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
registry.import_configurables()  # these tests parse configs, as the entry points do
TINY = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, max_channels=8,
            segmenter_width=8, segmenter_residual_blocks=1, min_mask_coverage=0.2)


def _method(**overrides):
    model = pg.PerturbGANSettings(16, **{**TINY, **overrides}).build()
    model.build_for_training(4)
    return model


@pytest.mark.parametrize("single,shared,num_mappings,num_synthesis",
                         [(False, False, 2, 2), (False, True, 1, 2), (True, False, 1, 1)])
def test_layered_generator_draws_background_foreground_and_mask(single, shared, num_mappings,
                                                                 num_synthesis):
    gen = stylegan.LayeredGenerator(16, 8, 8, 1, 64, 8, single_generator=single,
                                    shared_mapping=shared)
    out = gen(tf.random.normal([3, 8]), noise_seed=tf.constant([1, 2], tf.int64))
    assert out["background"].shape == (3, 16, 16, 3) and out["foreground"].shape == (3, 16, 16, 3)
    assert out["mask"].shape == (3, 16, 16, 1)
    mask = out["mask"].numpy()
    # A probability (float32 sigmoid may round a large logit to exactly 1).
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    np.testing.assert_allclose(mask, tf.sigmoid(out["mask_logits"]).numpy(), rtol=1e-6)
    assert len(gen.mappings) == num_mappings and len(gen.synthesis) == num_synthesis
    if not single:
        # The same z drives both synthesis networks, through their own styles.
        styles = gen.styles(tf.random.normal([3, 8])).numpy()
        assert styles.shape == (3, 2, 8)
        assert np.allclose(styles[:, 0], styles[:, 1]) == shared


def test_noise_seed_changes_details_and_none_is_deterministic():
    gen = stylegan.LayeredGenerator(16, 8, 8, 1, 64, 8)
    z = tf.random.normal([2, 8])
    gen(z)
    for block in gen.synthesis[0].blocks:      # noise weights start at 0: make them count
        block.noise_a.assign(tf.ones_like(block.noise_a))
    a = gen(z)["background"].numpy()
    np.testing.assert_array_equal(a, gen(z)["background"].numpy())
    noisy = gen(z, noise_seed=tf.constant([3, 4], tf.int64))["background"].numpy()
    assert not np.allclose(a, noisy)


def test_style_mixing_draws_the_blocks_up_to_the_crossover_with_the_first_code_and_the_rest_with_the_second():
    gen = stylegan.LayeredGenerator(16, 8, 8, 1, 64, 8)
    z, z2 = tf.random.normal([2, 8], seed=1), tf.random.normal([2, 8], seed=2)
    last = gen.num_blocks - 1
    assert gen.num_blocks == 3  # 4, 8 and 16 px
    layers = lambda out: np.concatenate([out["background"].numpy(), out["mask_logits"].numpy()], -1)  # noqa: E731
    np.testing.assert_allclose(layers(gen(z, mixing=(z2, tf.constant([last, last])))), layers(gen(z)), atol=1e-5)
    np.testing.assert_allclose(layers(gen(z, mixing=(z2, tf.constant([-1, -1])))), layers(gen(z2)), atol=1e-5)
    mixed = layers(gen(z, mixing=(z2, tf.constant([0, 1]))))
    assert not np.allclose(mixed, layers(gen(z)), atol=1e-3) and not np.allclose(mixed, layers(gen(z2)), atol=1e-3)
    styles = stylegan.mix_styles(tf.zeros([2, 8]), tf.ones([2, 8]), 1, 3).numpy()
    assert styles.shape == (2, 3, 8) and styles[:, :2].max() == 0 and styles[:, 2].min() == 1


@pytest.mark.parametrize("probability,mixes", [(0.0, False), (1.0, True)])
def test_the_adversarial_steps_mix_styles_with_the_configured_probability(probability, mixes):
    model = _method(style_mixing_probability=probability)
    seeds = {name: tf.constant([7, k], tf.int64) for k, name in enumerate(("z", "noise", "shift", "jitter"))}
    plain = model.render(4, seeds)["composite"].numpy()
    mixed = model.render(4, seeds, mixing_seed=tf.constant([7, 99], tf.int64))["composite"].numpy()
    assert (not np.allclose(plain, mixed, atol=1e-4)) == mixes
    if mixes:  # crossovers below the last block, so the second code draws at least that block
        _, crossovers = model._mixing(4, seeds["z"], tf.constant([7, 99], tf.int64))
        assert all(0 <= c < model.generator.num_blocks - 1 for c in crossovers.numpy())


def test_the_paper_configs_mix_styles_as_the_reference_and_the_cpu_configs_do_not():
    import gin  # pylint: disable=import-outside-toplevel
    for name, mixing, decay in (("lsun_horse.gin", 0.9, 0.999), ("demo_perturbgan.gin", 0.0, None),
                                ("perturbgan_folder.gin", 0.0, None)):
        gin.clear_config()  # (the autouse fixture clears it after the test)
        config.parse([os.path.join(REPO, "gin_configs", name)], [])
        settings = pg.PerturbGANSettings(resolution=16)
        assert (settings.style_mixing_probability, settings.ema_decay) == (mixing, decay), name


def test_the_ema_generator_follows_g_after_each_generator_step_and_every_later_use_samples_from_it():
    model = _method(ema_decay=0.5)
    pairs = model._ema_pairs()
    assert pairs and all(np.array_equal(e.numpy(), g.numpy()) for e, g in pairs)  # starts at G
    batches = ({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=1)},)
    before = [(e.numpy().copy(), g.numpy().copy()) for e, g in pairs]
    model.apply_phase("discriminator", model.phase_gradients("discriminator", batches, tf.constant(0, tf.int64))[1])
    assert all(np.array_equal(e.numpy(), e0) for (e, _), (e0, _) in zip(pairs, before))  # D's step: untouched
    model.apply_phase("generator", model.phase_gradients("generator", batches, tf.constant(0, tf.int64))[1])
    moved = 0
    for (e, g), (e0, _) in zip(pairs, before):
        np.testing.assert_allclose(e.numpy(), 0.5 * e0 + 0.5 * g.numpy(), rtol=1e-5, atol=1e-6)
        moved += not np.array_equal(e.numpy(), g.numpy())
    assert moved  # halfway, so no longer G
    assert model.sampler is model.generator_ema
    images = batches[0]["image"]
    styles = model.styles_of(images)
    np.testing.assert_allclose(model.reconstruct(images)["mask"].numpy(),
                               model.generator_ema(styles=styles)["mask"].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.generator_ema(styles=styles)["background"].numpy(),
                           model.generator(styles=styles)["background"].numpy())


def test_without_ema_there_is_no_second_generator_and_g_itself_samples():
    model = _method()
    assert model.generator_ema is None and model.sampler is model.generator
    assert not any("generator_ema" in v.path for v in model.variables)




def test_equalized_dense_scales_weights_at_run_time_and_slows_the_mapping_network():
    layer = E.EqualDense(64, lr_mul=0.01)
    layer.build((None, 100))
    stored = layer.kernel.numpy()
    assert 90 < stored.std() < 110                     # N(0, 1) / lr_mul
    # Effective weights: stored * sqrt(2) * lr_mul / sqrt(fan_in) ~ N(0, 2 / fan_in).
    x = np.eye(100, dtype=np.float32)
    effective = layer(x).numpy()
    assert 0.12 < effective.std() < 0.16


def test_discriminator_features_are_the_4x4_map_before_minibatch_stddev():
    d = stylegan.ProGANDiscriminator(16, 64, 8)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1)
    assert d(images).shape == (4,)
    assert d.features(images).shape == (4, 4, 4, 8)
    encoder = stylegan.ProGANDiscriminator(16, 64, 8, outputs=10, minibatch_std=False)
    assert encoder(images[:1]).shape == (1, 10)        # no batch statistics: works at batch 1


def _changed(model, phase, batches):
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    _, grads = model.phase_gradients(phase, batches, tf.constant(3, tf.int64))
    model.apply_phase(phase, grads)
    return {v.path.split("/")[0] for v in model.trainable_variables
            if not np.array_equal(before[v.path], v.numpy())}


@pytest.mark.parametrize("phase,network", [("discriminator", "discriminator"),
                                           ("generator", "generator"),
                                           ("encoder", "encoder"), ("segmenter", "segmenter")])
def test_each_phase_trains_only_its_network(phase, network):
    model = _method()
    batches = ({"image": tf.random.uniform([4, 16, 16, 3], -1, 1)},)
    assert _changed(model, phase, batches) == {network}


def test_training_composite_is_shifted_and_unperturbed_composite_is_not():
    model = _method(shift_fraction=0.25)
    seeds = {name: tf.constant([k, 7], tf.int64) for k, name in
             enumerate(("z", "noise", "shift", "jitter"))}
    plain = model.render(4, seeds, perturb=False)
    shifted = model.render(4, seeds, perturb=True)
    np.testing.assert_array_equal(plain["composite"], shifted["composite"])
    np.testing.assert_array_equal(plain["shifted_mask"], plain["mask"])
    assert not np.allclose(shifted["shifted_mask"], shifted["mask"])
    no_shift = _method(shift_fraction=0.0).render(4, seeds, perturb=True)
    np.testing.assert_allclose(no_shift["shifted_mask"], no_shift["mask"], atol=1e-6)


def test_mask_losses_push_the_mask_up_when_it_is_too_small():
    model = _method(min_mask_coverage=0.99)
    metrics, _ = model.phase_gradients("generator", ({"image": tf.zeros([4, 16, 16, 3])},),
                                       tf.constant(0, tf.int64))
    coverage = metrics.mask_coverage.numpy()
    assert (metrics.losses["mask_size"].numpy() > 0.99 - coverage - 0.15).all()


def test_stages_set_the_segmentation_route():
    model = _method()
    images = tf.random.uniform([2, 16, 16, 3], -1, 1)
    model.begin_stage("encoder")
    assert int(model.segmentation_route.numpy()) == pg.ENCODER_ROUTE
    np.testing.assert_allclose(model.region_masks(images)[..., :1],
                               model.reconstruct(images)["mask"], rtol=1e-5)
    model.begin_stage("segmenter")
    assert int(model.segmentation_route.numpy()) == pg.DISTILLED_ROUTE
    np.testing.assert_allclose(model.segment(images), model.segmenter(images), rtol=1e-5)


def test_stage_schedule_counts_steps_and_rejects_unknown_or_missing_budgets():
    config.parse([os.path.join(REPO, "gin_configs", "demo_perturbgan.gin"), config.SMOKE_CONFIG],
                 ["tfseg.training.TrainConfig.stage_steps = {'generator': 5, 'encoder': 0}"])
    cfg = train_config.TrainConfig()
    model = loading.build_method(cfg)
    stages = schedule.stage_schedule(model, cfg)
    assert [(s.name, a, b) for s, a, b in stages] == [("generator", 0, 5), ("segmenter", 5, 7)]
    cfg = dataclasses.replace(cfg, stage_steps={"generatr": 5})
    with pytest.raises(config.ConfigError, match="generatr"):
        schedule.stage_schedule(model, cfg)
    cfg = dataclasses.replace(cfg, stage_steps={"generator": 5}, num_steps=None)
    with pytest.raises(config.ConfigError, match="no step budget for stage 'encoder'"):
        schedule.stage_schedule(model, cfg)


@pytest.mark.slow
def test_a_run_stopped_in_the_generator_stage_resumes_into_the_later_stages(tmp_path, capsys):
    from test_training import (  # noqa: PLC0415  (absl flags are defined there)
        _assert_trained_two_steps_per_stage_and_scored_test, run_train)
    model_dir = str(tmp_path / "run")
    common = [f"--gin_file={REPO}/gin_configs/demo_perturbgan.gin", "--smoke",
              f"--model_dir={model_dir}"]
    assert run_train(*common, "--gin_bindings=tfseg.training.TrainConfig.stage_steps = "
                              "{'generator': 2, 'encoder': 0, 'segmenter': 0}") == 0
    capsys.readouterr()
    assert run_train(*common) == 0  # smoke budgets: two steps per stage
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 2" in out
    assert "stage 2/3 'encoder': steps 3-4 of 6" in out and "stage 3/3 'segmenter': steps 5-6 of 6" in out
    assert "step 1/6" not in out
    # This is the PerturbGAN demo's smoke training of test_training (one config per method trains).
    _assert_trained_two_steps_per_stage_and_scored_test(model_dir, out)


@pytest.mark.parametrize("target,latent_shape", [("w", (2, 2, 8)), ("z", (2, 8))])
def test_the_encoder_predicts_styles_or_a_code_that_the_mapping_turns_into_styles(target, latent_shape):
    model = _method(encoder_target=target, synthetic_latent_weight=1.0, z_dim=8, w_dim=8)
    images = tf.random.uniform([2, 16, 16, 3], -1, 1, seed=5)
    latent = model.latent_of(images)
    assert tuple(latent.shape) == latent_shape
    expected = model.generator(styles=latent) if target == "w" else model.generator(latent)
    np.testing.assert_allclose(model.reconstruct(images)["mask"].numpy(), expected["mask"].numpy(),
                               rtol=1e-5, atol=1e-6)
    before = [v.numpy().copy() for v in model.generator.trainable_variables]
    batches = ({"image": images},)
    metrics, grads = model.phase_gradients("encoder", batches, tf.constant(0, tf.int64))
    model.apply_phase("encoder", grads)
    assert metrics.losses["synthetic_latent"].shape == (2,) and np.all(metrics.losses["synthetic_latent"] > 0)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.generator.trainable_variables))


def test_an_unknown_encoder_target_is_refused_naming_the_binding():
    with pytest.raises(config.ConfigError, match="tfseg.methods.perturbgan.encoder_target must be one of"):
        pg.PerturbGANSettings(16, min_mask_coverage=0.2, encoder_target="x")

"""Progressive growing (PerturbGAN's reference recipe): the schedule, the fade-in, the networks'
blending, per-resolution batch and learning rate, and a run stopped mid-fade."""
import math
import os
import signal
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg import config, registry
from tfseg.methods import growth as growth_lib
from tfseg.methods import optimizers
from tfseg.methods import perturbgan as pg
from tfseg.modeling import stylegan
from tfseg.modeling.layers import upsample_nearest
from tfseg.training import loading, schedule, train_config

import run_fixture  # tests/run_fixture.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
registry.import_configurables()
TINY = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, max_channels=8,
            segmenter_width=8, segmenter_residual_blocks=1, min_mask_coverage=0.2)


def _growing(resolution=32, batch=4, **overrides):
    settings = dict(TINY, progressive_start=8, progressive_phase_images=16,
                    progressive_batch_multiples={8: 2}, progressive_learning_rates={resolution: 0.004})
    model = pg.PerturbGANSettings(resolution, **{**settings, **overrides}).build()
    model.build_for_training(batch)
    return model


def test_the_paper_configs_grow_from_8_px_with_the_reference_batch_and_learning_rate_schedule():
    config.parse([os.path.join(REPO, "gin_configs", "lsun_horse.gin")], [])
    cfg = train_config.TrainConfig()
    stages = schedule.stage_schedule(loading.build_method(cfg), cfg)
    reference = {8: (256, 0.001), 16: (128, 0.001), 32: (64, 0.001), 64: (32, 0.001), 128: (32, 0.0015)}
    growth = stages[:5]
    assert [stage.name for stage, _, _ in growth] == [f"generator_{r}" for r in reference]
    for (stage, start, end), (r, (batch, lr)) in zip(growth, reference.items()):
        assert cfg.batch_size * stage.batches_per_step == batch
        assert end - start == math.ceil(2 * 600_000 / batch)  # 1.2M images a resolution
        assert f"{r} px, lr {lr:g}" in stage.note and ("no fade-in" in stage.note) == (r == 8)
    assert growth[-1][2] == 107_813  # the reference's 107.8k iterations
    assert [stage.name for stage, _, _ in stages[5:]] == ["encoder", "segmenter"]


def test_alpha_rises_linearly_over_the_fade_in_and_matches_between_python_and_graph():
    schedule = growth_lib.GrowthSchedule(8, 32, 16, {8: 2}, {}, 1e-3, "generator", ("d", "g"), "x")
    first = schedule.first_steps(4)
    # 8 px: 32 images at batch 8 = 4 steps; 16 and 32 px: 32 images at batch 4 = 8 steps.
    assert first == {"generator_8": 0, "generator_16": 4, "generator_32": 12}
    level8, level16, _ = schedule.levels
    assert schedule.alpha(level8, 0, 4) == 1.0  # the first resolution does not fade
    expected = {3: 0.0, 4: 0.25, 5: 0.5, 6: 0.75, 7: 1.0, 11: 1.0}
    for step, alpha in expected.items():
        assert schedule.alpha(level16, step, 4) == alpha
        assert float(schedule.alpha(level16, tf.constant(step, tf.int64), 4)) == alpha
    assert [stage.fixed_steps(4) for stage in schedule.stages()] == [4, 8, 8]


def test_a_synthesis_network_fades_its_new_resolution_in_from_the_upsampled_lower_one():
    gen = stylegan.LayeredGenerator(32, 8, 8, 1, 64, 8, grow_from=8)
    z = tf.random.normal([2, 8], seed=3)
    gen(z)
    for net in gen.synthesis:  # heads start alike in expectation only; make each one distinct anyway
        for k, head in enumerate(net.growth_heads):
            head.kernel.assign(head.kernel * (1.5 + k))
    full = gen(z)
    at16 = gen(z, resolution=16)
    faded0 = gen(z, resolution=32, alpha=0.0)
    faded1 = gen(z, resolution=32, alpha=1.0)
    half = gen(z, resolution=32, alpha=0.25)
    assert at16["mask"].shape == (2, 16, 16, 1) and full["mask"].shape == (2, 32, 32, 1)
    for name in ("background", "foreground", "mask_logits"):
        np.testing.assert_allclose(faded0[name], upsample_nearest(at16[name]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(faded1[name], full[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(half[name], 0.75 * faded0[name] + 0.25 * faded1[name], rtol=1e-4, atol=1e-5)
    # The blend is of logits; the mask is their sigmoid (the reference's order).
    np.testing.assert_allclose(half["mask"], tf.sigmoid(half["mask_logits"]), rtol=1e-6)
    assert not np.allclose(faded0["background"], faded1["background"], atol=1e-3)


def test_the_critic_fades_its_new_resolution_in_from_the_pooled_lower_one():
    critic = stylegan.ProGANDiscriminator(32, 64, 8, grow_from=8)
    images = tf.random.uniform([3, 32, 32, 3], -1, 1, seed=4)
    critic(images)
    for r in (8, 16):
        critic(tf.zeros([1, r, r, 3]))
    pooled = tf.nn.avg_pool2d(images, 2, 2, "VALID")
    np.testing.assert_allclose(critic(images, alpha=0.0), critic(pooled), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(critic(images, alpha=1.0), critic(images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(critic(images, alpha=0.5), critic(images), atol=1e-4)
    with pytest.raises(ValueError, match=r"takes \[8, 16, 32\] px images, got 4 px"):
        critic(tf.zeros([1, 4, 4, 3]))


def test_each_growth_stage_trains_at_its_resolution_batch_and_learning_rate_and_leaves_higher_layers_alone():
    model = _growing()
    names = [stage.name for stage in model.stages()]
    assert names == ["generator_8", "generator_16", "generator_32", "encoder", "segmenter"]
    assert [stage.batches_per_step for stage in model.stages()[:3]] == [2, 1, 1]
    batches = tuple({"image": tf.random.uniform([4, 32, 32, 3], -1, 1, seed=k)} for k in range(2))
    model.begin_stage("generator_8")
    for optimizer in (model.generator_optimizer, model.discriminator_optimizer):
        assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.real_at_level(batches).shape == (8, 8, 8, 3)  # two batches, pooled to 8 px
    np.testing.assert_allclose(model.real_at_level(batches)[:4],
                               tf.nn.avg_pool2d(batches[0]["image"], 4, 4, "VALID"), rtol=1e-6)
    untouched = {v.path: v.numpy().copy() for v in model.generator.trainable_variables + model.discriminator.trainable_variables
                 if "block16" in v.path or "block32" in v.path or "conv32" in v.path or "conv16" in v.path}
    assert untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns of variables without gradient; the method skips them
        for phase in ("discriminator", "generator"):
            metrics, grads = model.phase_gradients(phase, batches, tf.constant(0, tf.int64))
            model.apply_phase(phase, grads)
            assert next(iter(metrics.losses.values())).shape == (8,)  # the stage's batch: 2 x 4
    now = {v.path: v.numpy() for v in model.generator.trainable_variables + model.discriminator.trainable_variables}
    assert all(np.array_equal(value, now[path]) for path, value in untouched.items())
    model.begin_stage("generator_32")
    for optimizer in (model.generator_optimizer, model.discriminator_optimizer):
        assert float(optimizer.learning_rate) == pytest.approx(0.004)
    assert model.growth_args(12)["alpha"] == 0.25 and model.growth_args(12)["resolution"] == 32
    model.begin_stage("encoder")
    assert model.growth_args(12) == {}
    assert model.summary_images(batches[0]["image"], 12)["composite"].shape == (4, 32, 32, 3)


def test_bad_progressive_bindings_are_refused_naming_the_binding_and_the_fix():
    with pytest.raises(config.ConfigError, match=r"progressive_start must be a power of two between 8 and the resolution \(32\), got 12"):
        pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=12)
    with pytest.raises(config.ConfigError, match="progressive_start .* got 64"):
        pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=64)
    with pytest.raises(config.ConfigError, match=r"progressive_batch_multiples names \[24\]"):
        pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=8, progressive_batch_multiples={24: 2})
    with pytest.raises(config.ConfigError, match=r"progressive_learning_rates values must be numbers > 0, got \{16: 0\}"):
        pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=8, progressive_learning_rates={16: 0})
    with pytest.raises(config.ConfigError, match="progressive_phase_images must be a whole number"):
        pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=8, progressive_phase_images=0)
    # A resolution the run does not reach is allowed (the reference's tables go to 1024 px).
    pg.PerturbGANSettings(32, min_mask_coverage=0.2, progressive_start=8, progressive_batch_multiples={256: 1})
    model = pg.PerturbGANSettings(32, **TINY, progressive_start=8).build()
    cfg = train_config.TrainConfig(method=None, resolution=32, batch_size=4,
                              stage_steps={"generator_16": 10, "encoder": 1, "segmenter": 1})
    with pytest.raises(config.ConfigError, match=r"stage_steps names \['generator_16'\], whose length the method fixes"):
        schedule.stage_schedule(model, cfg)


def test_per_variable_adam_steps_match_pytorch_adam_for_a_weight_that_joins_late():
    """A weight without gradient is skipped and starts its bias correction when it joins (as
    PyTorch's Adam, the reference's); with one count per optimizer it would start at step t."""
    early, late = keras.Variable(np.full([3], 0.5, "float32")), keras.Variable(np.full([3], -0.2, "float32"))
    optimizer = optimizers.gan_adam(0.01, steps_per_variable=True)
    optimizer.build([early, late])
    grads = [np.array([0.3, -1.0, 2.0], "float32") * (k + 1) for k in range(6)]
    for k, g in enumerate(grads):
        optimizer.apply([tf.constant(g)] + ([tf.constant(-g)] if k >= 3 else []),
                        [early] + ([late] if k >= 3 else []))

    def pytorch_adam(value, gradients, lr=0.01, beta_2=0.99, eps=1e-8):  # beta_1 = 0
        v = np.zeros_like(value)
        for t, g in enumerate(gradients, start=1):
            v = beta_2 * v + (1 - beta_2) * g * g
            value = value - lr * g / (np.sqrt(v / (1 - beta_2**t)) + eps)
        return value

    np.testing.assert_allclose(early.numpy(), pytorch_adam(np.full(3, 0.5), grads), rtol=1e-4)
    np.testing.assert_allclose(late.numpy(), pytorch_adam(np.full(3, -0.2), [-g for g in grads[3:]]), rtol=1e-4)
    steps = [v.numpy() for v in optimizer.variables if v.path.endswith("_step")]
    assert steps == [6.0, 3.0]


# -- a run stopped mid-fade ------------------------------------------------------------------------
GROWING_SMOKE = [f"--gin_file={REPO}/gin_configs/demo_perturbgan.gin", "--smoke",
                 # 8 px: 4 steps (no fade); 16 px: 2 steps fading in, 2 at full weight
                 "--gin_bindings=tfseg.methods.perturbgan.progressive_start = 8",
                 "--gin_bindings=tfseg.methods.perturbgan.progressive_phase_images = 8",
                 "--gin_bindings=tfseg.methods.perturbgan.progressive_batch_multiples = {8: 1}",
                 "--gin_bindings=tfseg.training.TrainConfig.stage_steps = {'encoder': 0, 'segmenter': 0}",
                 "--gin_bindings=tfseg.training.TrainConfig.eval_every = 1000",
                 "--gin_bindings=tfseg.training.TrainConfig.checkpoint_every = 1000"]


def _run(model_dir, stop_after_step=None):
    return run_fixture.train_in_subprocess(GROWING_SMOKE, model_dir, stop_after_step, timeout=300)


@pytest.mark.slow
def test_a_run_stopped_mid_fade_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    from test_robustness import _checkpoint_values  # noqa: PLC0415
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    code, out, err = _run(straight)
    assert code == 0, err[-2000:]
    assert "stage 2/2 'generator_16': steps 5-8 of 8 (16 px, lr 0.001, fade-in over 8 images)" in out
    code, out, err = _run(resumed, stop_after_step=5)  # alpha 0.5 at step 5
    assert code == 128 + signal.SIGINT, err[-2000:]
    assert "stopped by SIGINT at step 5" in out
    code, out, err = _run(resumed)
    assert code == 0, err[-2000:]
    assert "resumed from" in out and "at step 5" in out and "stage 2/2 'generator_16'" in out
    a = _checkpoint_values(tf.train.latest_checkpoint(os.path.join(straight, "checkpoints")))
    b = _checkpoint_values(tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints")))
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_per_variable_adam_steps_update_alike_under_a_mirrored_strategy():
    def train(strategy):
        with strategy.scope():
            variables = [keras.Variable(np.linspace(-1, 1, 6, dtype="float32").reshape(2, 3) * (i + 1))
                         for i in range(2)]
            optimizer = optimizers.gan_adam(0.01, steps_per_variable=True)
            optimizer.build(variables)

        @tf.function
        def step(k, both):
            def replica_fn():
                chosen = variables if both else variables[:1]
                optimizer.apply([tf.cos(v.value * (k + 1.0)) for v in chosen], chosen)
            strategy.run(replica_fn)

        for k in range(4):
            step(tf.constant(float(k)), both=k >= 2)
        steps = [float(v.numpy()) for v in optimizer.variables if v.path.endswith("_step")]
        return [v.numpy() for v in variables + optimizer.variables], steps

    plain, plain_steps = train(tf.distribute.get_strategy())
    mirrored, mirrored_steps = train(tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert plain_steps == mirrored_steps == [4.0, 2.0]  # the second weight joined at the third apply
    for a, b in zip(plain, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-6)

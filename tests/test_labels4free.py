"""Labels4Free: the alpha network, each stage's phase, the EMA, and starting from a converted checkpoint."""
import os
import signal
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import ConfigError
from tfseg.methods import labels4free as l4f
from tfseg.modeling import alpha_network as an
from tfseg.methods.base import phases_due

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import convert_stylegan2 as conv  # noqa: E402
import test_convert_stylegan2 as rosinality  # noqa: E402  (tiny state dicts in the rosinality layout)
import run_fixture  # noqa: E402  (tests/run_fixture.py)

TINY = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, max_channels=8,
            segmenter_width=8, segmenter_residual_blocks=1)


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _features(resolutions, channels=2, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return [tuple(tf.constant(rng.standard_normal((batch, r, r, channels)), tf.float32)
                  for _ in range(2)) for r in resolutions]


def _tiny_method(resolution=16, batch=4, **kwargs):
    model = l4f.Labels4FreeSettings(resolution, **{**TINY, **kwargs}).build()
    model.build_for_training(batch)
    return model


def _snapshot(network):
    return [v.numpy().copy() for v in network.weights]


def _changed(before, network):
    return any(not np.array_equal(b, v.numpy()) for b, v in zip(before, network.weights))


# -- alpha network --------------------------------------------------------------------------------
def test_alpha_network_has_the_reference_parameter_count_at_256px():
    # config-f at S = 256: the 6 finest blocks are 8..256 px with 512, 512, 512, 512, 256, 128 ch.
    widths = [512, 512, 512, 512, 256, 128]
    shapes = [((1, r, r, c), (1, r, r, c)) for r, c in zip([8, 16, 32, 64, 128, 256], widths)]
    net = an.AlphaNetwork()
    net.build(shapes)
    # 6 * sum(C) + 12 * 3 projections, 4 x (12 -> 6) mixers, one 6 -> 1 head (docs/methods.md §3.3).
    assert net.count_params() == 6 * sum(widths) + 36 + 4 * (12 * 6 + 6) + 7 == 14947


def test_alpha_network_reads_only_the_last_six_blocks():
    features = _features([2, 4, 8, 16, 32, 64, 128], batch=2)
    net = an.AlphaNetwork()
    alpha = net(features)
    assert alpha.shape == (2, 128, 128, 1)
    assert float(tf.reduce_min(alpha)) > 0.0 and float(tf.reduce_max(alpha)) < 1.0
    coarsest_changed = [tuple(f * 5.0 for f in features[0])] + features[1:]
    np.testing.assert_array_equal(net(coarsest_changed).numpy(), alpha.numpy())
    sixth_changed = features[:1] + [tuple(f * 5.0 for f in features[1])] + features[2:]
    assert np.abs(net(sixth_changed).numpy() - alpha.numpy()).max() > 1e-4


def test_alpha_network_of_a_small_generator_reads_every_block():
    model = _tiny_method(resolution=16)
    assert model.alpha_network.num_blocks == len(model.generator.blocks) == 2
    out = model.render_layers(3, tf.constant([1, 2], tf.int64))
    assert out["alpha"].shape == (3, 16, 16, 1)
    assert out["composite"].shape == out["foreground"].shape == out["background"].shape == (3, 16, 16, 3)


def test_bicubic_upsampling_matches_pytorch_align_corners_by_hand():
    # [0, 1] -> 4 samples at x = 0, 1/3, 2/3, 1. At x = 1/3 (t = 1/3, taps clamped to [0, 0, 1, 1])
    # PyTorch's a = -0.75 weights give W(2/3) + W(5/3) = 10/27 - 1/18 = 17/54 (not the linear
    # 1/3: a = -0.75 does not reproduce ramps, a = -0.5 would).
    x = tf.constant([0.0, 1.0])[None, :, None, None] * tf.ones([1, 1, 2, 1])
    up = an.upsample_bicubic(x).numpy()[0, :, 0, 0]
    np.testing.assert_allclose(up, [0.0, 17 / 54, 37 / 54, 1.0], atol=1e-6)
    np.testing.assert_allclose(an.bicubic_matrix(5, 10).sum(axis=1), 1.0, atol=1e-6)
    constant = an.upsample_bicubic(tf.fill([1, 3, 5, 2], 0.7)).numpy()
    assert constant.shape == (1, 6, 10, 2)
    np.testing.assert_allclose(constant, 0.7, atol=1e-6)


# -- stages ---------------------------------------------------------------------------------------
NETWORKS = ("generator", "generator_ema", "discriminator", "fresh_discriminator", "alpha_network",
            "segmenter")


@pytest.mark.parametrize("phase, trained", [
    ("discriminator", {"discriminator"}),
    ("generator", {"generator", "generator_ema"}),
    ("alpha_discriminator", {"fresh_discriminator"}),
    ("alpha", {"alpha_network"}),
    ("segmenter", {"segmenter"}),
])
def test_each_phase_changes_only_its_networks(phase, trained):
    model = _tiny_method()
    before = {name: _snapshot(getattr(model, name)) for name in NETWORKS}
    batches = ({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=1)},)
    metrics, grads = model.phase_gradients(phase, batches, tf.constant(3, tf.int64))
    model.apply_phase(phase, grads)
    changed = {name for name in NETWORKS if _changed(before[name], getattr(model, name))}
    assert changed == trained
    assert all(np.all(np.isfinite(v.numpy())) for v in metrics.flat().values())
    if phase == "alpha":
        assert metrics.mask_coverage is not None and "alpha_total" in metrics.losses
        assert "mask/binariness" in metrics.diagnostics


def test_stage_two_can_use_the_stage_one_discriminator():
    model = _tiny_method(alpha_discriminator="stylegan2")
    assert model.fresh_discriminator is None and model.alpha_discriminator is model.discriminator
    before = _snapshot(model.discriminator)
    batches = ({"image": tf.zeros([4, 16, 16, 3])},)
    _, grads = model.phase_gradients("alpha_discriminator", batches, tf.constant(1, tf.int64))
    model.apply_phase("alpha_discriminator", grads)
    assert _changed(before, model.discriminator)


def test_lazy_r1_is_a_d_step_of_its_own_every_interval_steps_after_ds_logistic_step():
    model = _tiny_method(r1_interval=4, path_length_weight=0.0)
    stylegan2, alpha = [stage for stage in model.stages() if stage.name in ("stylegan2", "alpha")]
    assert phases_due(stylegan2.phases, 8) == ("discriminator", "r1", "generator")  # StyleGAN2's order
    assert phases_due(stylegan2.phases, 9) == ("discriminator", "generator")
    assert phases_due(alpha.phases, 12) == ("alpha_discriminator", "alpha_r1", "alpha")
    assert phases_due(alpha.phases, 13) == ("alpha_discriminator", "alpha")
    batches = ({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=2)},)
    logistic, _ = model.phase_gradients("discriminator", batches, tf.constant(8, tf.int64))
    assert "r1" not in logistic.losses  # D's logistic step carries no penalty
    metrics, grads = model.phase_gradients("r1", batches, tf.constant(8, tf.int64))
    assert float(tf.reduce_sum(metrics.losses["r1"])) > 0.0
    # The gradient is (gamma / 2) * interval * dR1/dtheta, averaged over the batch (None where R1
    # does not depend on a weight, e.g. the last bias: that weight is left alone, as in the reference).
    with tf.GradientTape() as tape:
        scaled = 0.5 * model.settings.r1_gamma * 4 * tf.reduce_mean(
            l4f.losses.r1_penalty(model.discriminator, batches[0]["image"]))
    expected = tape.gradient(scaled, model.discriminator.trainable_variables)
    assert [g is None for g in grads] == [e is None for e in expected] and any(e is not None for e in expected)
    for g, e in zip(grads, expected):
        if e is not None:
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-7)
    before = _snapshot(model.discriminator)
    model.apply_phase("r1", grads)  # with D's optimizer, on D's weights only
    assert _changed(before, model.discriminator)
    assert model.phase_optimizers()["r1"][0] is model.discriminator_optimizer


def test_without_r1_and_path_lengths_no_stage_has_a_periodic_phase():
    for stage in _tiny_method(r1_gamma=0.0, path_length_weight=0.0).stages():
        assert phases_due(stage.phases, 0) == phases_due(stage.phases, 1)


def test_alpha_losses_match_hand_values():
    model = _tiny_method(mask_loss_weight=2.0, min_foreground_coverage=0.25,
                         min_background_coverage=0.4, background_coverage_weight=3.0)
    alpha = tf.constant([0.1, 0.9], tf.float32)[:, None, None, None] * tf.ones([2, 4, 4, 1])
    terms = model.alpha_losses(alpha, tf.constant([0.0, 0.0]))
    np.testing.assert_allclose(terms["binarization"], [0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(terms["min_foreground"], [0.15, 0.0], atol=1e-6)
    # max-fg hinge: max(0, 0.4 - (1 - mean alpha)).
    np.testing.assert_allclose(terms["max_foreground"], [0.0, 0.3], atol=1e-6)
    expected = np.log(2.0) + 2.0 * (np.array([0.1, 0.1]) + [0.15, 0.0]) + 3.0 * np.array([0.0, 0.3])
    np.testing.assert_allclose(terms["total"], expected, atol=1e-5)


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_stylegan2_style_mixing_switches_to_a_second_code_after_a_random_layer(probability):
    model = _tiny_method()
    g = model.generator
    z = tf.random.normal([3, 8], seed=1)
    own = g.map(z).numpy()
    for k in range(4):
        ws = model.mixed_styles(g, z, tf.constant([5, k], tf.int64), probability).numpy()
        same = np.all(np.isclose(ws, own), axis=(0, 2))  # per layer: z's styles?
        if probability == 0.0:
            assert same.all()
        else:  # z's styles up to the crossover (at least layer 0), the other code's from it on
            crossover = int(np.argmin(same))
            assert 1 <= crossover < g.num_ws and same[:crossover].all() and not same[crossover:].any()
    assert l4f.Labels4FreeSettings(resolution=16).style_mixing_probability == 0.9  # StyleGAN2's


def test_path_lengths_are_the_norm_of_the_jacobian_transposed_times_a_scaled_normal_image():
    from tfseg import losses  # pylint: disable=import-outside-toplevel
    a = tf.random.normal([4, 12], seed=3)  # a linear "generator": each layer's w_dim 4 -> 2x2x3 pixels

    def generator(ws, noise=None, input_is_latent=False):
        del noise
        assert input_is_latent
        return tf.reshape(tf.einsum("blw,wk->bk", ws, a), [-1, 2, 2, 3])

    ws = tf.random.normal([3, 5, 4], seed=4)
    seed = tf.constant([1, 2], tf.int64)
    y = tf.reshape(tf.random.stateless_normal([3, 2, 2, 3], seed) / 2.0, [3, 12])  # / sqrt(H W)
    expected = np.linalg.norm(y.numpy() @ a.numpy().T, axis=1)  # the same for every layer
    np.testing.assert_allclose(losses.path_lengths(generator, ws, None, seed).numpy(), expected, rtol=1e-5)


def test_path_length_regularisation_is_a_g_step_of_its_own_every_interval_steps():
    model = _tiny_method(path_length_weight=2.0, path_length_interval=4, r1_interval=4)
    stylegan2 = model.stages()[0]
    assert phases_due(stylegan2.phases, 8) == ("discriminator", "r1", "generator", "path_length")  # StyleGAN2's order
    assert phases_due(stylegan2.phases, 9) == ("discriminator", "generator")
    assert "path_length" not in phases_due(_tiny_method(path_length_weight=0.0).stages()[0].phases, 8)
    # G's Adam c-ratio, as the references' g_reg_ratio: interval / (interval + 1)
    assert model.generator_optimizer.learning_rate.numpy() == pytest.approx(model.settings.learning_rate * 4 / 5)
    batches = ({"image": tf.zeros([4, 16, 16, 3])},)
    adversarial, _ = model.phase_gradients("generator", batches, tf.constant(8, tf.int64))
    assert "path_length" not in adversarial.losses  # G's adversarial step carries no penalty
    metrics, grads = model.phase_gradients("path_length", batches, tf.constant(8, tf.int64))
    penalty = metrics.losses["path_length"].numpy()
    assert penalty.shape == (4,) and penalty[0] > 0 and np.all(penalty == penalty[0])
    mean = model.path_length_mean.numpy()
    assert mean > 0  # 0.01 of the batch's mean path length, from 0
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    before = _snapshot(model.generator)
    model.apply_phase("path_length", grads)  # with G's optimizer, on G's weights only
    assert _changed(before, model.generator)
    assert model.phase_optimizers()["path_length"][0] is model.generator_optimizer


def test_the_running_mean_of_path_lengths_is_checkpointed_and_restored(tmp_path):
    from tfseg.training import checkpointing
    model = _tiny_method(path_length_weight=2.0, path_length_interval=4)
    batches = ({"image": tf.zeros([4, 16, 16, 3])},)
    model.phase_gradients("path_length", batches, tf.constant(8, tf.int64))
    mean = float(model.path_length_mean.numpy())
    assert mean > 0
    path = checkpointing.make_checkpoint(model, checkpointing.RunState()).save(str(tmp_path / "ckpt"))
    assert tf.train.load_checkpoint(path).get_tensor("model/path_length_mean/.ATTRIBUTES/VARIABLE_VALUE") == mean
    resumed = _tiny_method(path_length_weight=2.0, path_length_interval=4)
    assert resumed.path_length_mean.numpy() == 0.0
    checkpointing.restore(checkpointing.make_checkpoint(resumed, checkpointing.RunState()), path)
    assert resumed.path_length_mean.numpy() == mean
    # Without the penalty there is no mean: such runs keep the checkpoint layout they had.
    assert not hasattr(_tiny_method(path_length_weight=0.0), "path_length_mean")


def test_a_checkpoint_without_the_path_length_mean_is_refused_by_name_and_resumes_with_the_penalty_off(tmp_path):
    # As a run with path lengths made before the mean was checkpointed: the same variables but that one.
    from tfseg.training import checkpointing
    older = _tiny_method(path_length_weight=0.0)
    path = checkpointing.make_checkpoint(older, checkpointing.RunState()).save(str(tmp_path / "ckpt"))
    model = _tiny_method()
    with pytest.raises(checkpointing.CheckpointMismatch, match="path_length_mean"):
        checkpointing.restore(checkpointing.make_checkpoint(model, checkpointing.RunState()), path)
    assert "tfseg.methods.labels4free.path_length_weight=0" in model.checkpoint_hint  # the way out it names
    model = _tiny_method(path_length_weight=0.0)
    checkpointing.restore(checkpointing.make_checkpoint(model, checkpointing.RunState()), path)


def test_a_non_finite_path_length_step_keeps_the_running_mean(monkeypatch):
    model = _tiny_method(path_length_weight=2.0, path_length_interval=4)
    model.path_length_mean.assign(0.5)
    monkeypatch.setattr(l4f.losses, "path_lengths", lambda *args: tf.fill([2], float("nan")))
    metrics, _ = model.phase_gradients("path_length", ({"image": tf.zeros([4, 16, 16, 3])},), tf.constant(8, tf.int64))
    assert np.isnan(metrics.losses["path_length"].numpy()).all()  # the trainer undoes such a step
    assert model.path_length_mean.numpy() == 0.5


@pytest.mark.slow
@pytest.mark.parametrize("phases", [("discriminator", "generator"), ("discriminator", "generator", "path_length")])
def test_the_ema_follows_the_last_g_update_of_the_step_once(phases):
    # As the references accumulate once per iteration, after the adversarial and path-length G steps.
    from tfseg.training import train_step
    model = _tiny_method(ema_decay=0.5, path_length_weight=2.0, path_length_interval=4)
    strategy = tf.distribute.get_strategy()
    iterator = iter(tf.data.Dataset.from_tensors({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=3)})
                    .repeat())
    step = train_step.make_train_step(model, strategy, jit_compile=False, phases=phases, batches_per_step=1)
    ema_before = [e.numpy().copy() for e, _ in model._ema_pairs()]
    step(iterator, tf.constant(8, tf.int64))
    for (ema, g), e0 in zip(model._ema_pairs(), ema_before):
        np.testing.assert_allclose(ema.numpy(), 0.5 * e0 + 0.5 * g.numpy(), atol=1e-6)  # G after all its updates
    assert any(np.abs(g.numpy() - e0).max() > 0 for (_, g), e0 in zip(model._ema_pairs(), ema_before))


def test_ema_moves_each_variable_a_fraction_one_minus_decay_towards_the_generator():
    model = _tiny_method(ema_decay=0.9)
    pairs = model._ema_pairs()
    assert len(pairs) == len(model.generator.trainable_variables)
    for k, (ema, source) in enumerate(pairs):
        ema.assign(tf.fill(ema.shape, 1.0))
        source.assign(tf.fill(source.shape, float(k)))
    model.update_ema()
    for k, (ema, _) in enumerate(pairs):
        np.testing.assert_allclose(ema.numpy(), 0.9 * 1.0 + 0.1 * k, rtol=1e-6)
    # Untrained state (w_avg, fixed noise maps) is not averaged.
    trained = {id(e) for e, _ in pairs}
    assert all(id(v) not in trained for v in model.generator_ema.non_trainable_weights)


def test_render_is_deterministic_given_the_seed():
    model = _tiny_method()
    seed = tf.constant([4, 5], tf.int64)
    first, second = model.render_layers(2, seed), model.render_layers(2, seed)
    for key in first:
        np.testing.assert_array_equal(first[key].numpy(), second[key].numpy())
    other = model.render_layers(2, tf.constant([4, 6], tf.int64))
    assert np.abs(other["foreground"].numpy() - first["foreground"].numpy()).max() > 0


TWO_REPLICAS = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfseg.methods import labels4free
    from tfseg.training import strategy as strategy_lib, train_step
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = labels4free.Labels4FreeSettings(16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64,
                                                max_channels=8, segmenter_width=8,
                                                segmenter_residual_blocks=1, ema_decay=0.5).build()
        model.build_for_training(8)
    images = tf.random.uniform([8, 16, 16, 3], -1, 1, seed=3)
    iterator = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors({"image": images}).repeat()))
    step = train_step.make_train_step(model, strategy, jit_compile=False,
                                   phases=("discriminator", "generator"), batches_per_step=1)
    before = [g.numpy().copy() for _, g in model._ema_pairs()]
    with strategy_lib.graph_optimization(False):  # tiny networks: Grappler would cost more than it saves
        out = step(iterator, tf.constant(0, tf.int64))
    # The EMA started equal to G, so with decay 0.5 it is now halfway between old and new G.
    print("examples", out["loss/generator"].shape[0])
    print("ema_halfway", all(np.allclose(e.numpy(), 0.5 * g0 + 0.5 * g.numpy(), atol=1e-6)
                             for (e, g), g0 in zip(model._ema_pairs(), before)))
    print("g_moved", any(np.abs(g.numpy() - g0).max() > 0
                         for (_, g), g0 in zip(model._ema_pairs(), before)))
""")


@pytest.mark.slow
def test_stylegan2_stage_with_ema_runs_on_two_replicas():
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "examples 8" in result.stdout
    assert "ema_halfway True" in result.stdout and "g_moved True" in result.stdout


# -- converted checkpoints ------------------------------------------------------------------------
def test_pretrained_dir_round_trip_loads_the_converted_generator_and_discriminator(tmp_path):
    checkpoint = {"g_ema": rosinality.generator_state_dict(),
                  "d": rosinality.discriminator_state_dict(),
                  "latent_avg": np.linspace(-1, 1, rosinality.W_DIM).astype(np.float32)}
    conv.convert_checkpoint(checkpoint, str(tmp_path))
    # The gin widths are ignored: the converted config fixes the networks.
    model = _tiny_method(resolution=rosinality.RES, pretrained_dir=str(tmp_path), truncation=0.5,
                         alpha_discriminator="stylegan2")
    # Against rosinality's forward pass in numpy (tests/test_convert_stylegan2.py), from the state dicts.
    rng = np.random.default_rng(4)
    z = rng.standard_normal((2, rosinality.Z_DIM))
    noises = [rng.standard_normal((2, 1, r, r)) for r in model.generator_ema.noise_resolutions]
    noise = [tf.constant(rosinality.nhwc(n), tf.float32) for n in noises]
    for psi, zero_4x4 in ((1.0, False), (0.5, False), (1.0, "output")):
        expected, _ = rosinality.reference_generator(checkpoint["g_ema"], z, noises, psi, checkpoint["latent_avg"],
                                                     zero_4x4)
        for generator in (model.generator_ema, model.generator):
            got = generator(tf.constant(z, tf.float32), noise=noise, truncation_psi=psi, zero_4x4=zero_4x4)
            np.testing.assert_allclose(got.numpy(), rosinality.nhwc(expected), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.generator_ema.w_avg.numpy(), checkpoint["latent_avg"])
    images = rng.uniform(-1, 1, (4, 3, rosinality.RES, rosinality.RES))
    np.testing.assert_allclose(model.alpha_discriminator(tf.constant(rosinality.nhwc(images), tf.float32)).numpy(),
                               rosinality.reference_discriminator(checkpoint["d"], images, group_size=4),
                               rtol=1e-4, atol=1e-4)
    images = tf.constant(rosinality.nhwc(images), tf.float32)
    # Stage 2 trains A on the frozen converted generator.
    before = _snapshot(model.generator_ema)
    _, grads = model.phase_gradients("alpha", ({"image": images},), tf.constant(0, tf.int64))
    model.apply_phase("alpha", grads)
    assert not _changed(before, model.generator_ema)


def test_pretrained_dir_errors_say_how_to_fix_them(tmp_path):
    with pytest.raises(ConfigError, match="convert_stylegan2"):
        l4f.Labels4FreeSettings(16, pretrained_dir=str(tmp_path)).build()
    conv.convert_checkpoint({"g_ema": rosinality.generator_state_dict()}, str(tmp_path))
    with pytest.raises(ConfigError, match="resolution = 32"):
        l4f.Labels4FreeSettings(32, pretrained_dir=str(tmp_path)).build()
    with pytest.raises(ConfigError, match="discriminator"):
        l4f.Labels4FreeSettings(rosinality.RES, pretrained_dir=str(tmp_path),
                                alpha_discriminator="stylegan2").build()


# -- the authors' stage-2 choices (switches; tests/test_reference_labels4free.py runs their code) ------
def test_alpha_r1_logit_weight_adds_the_gradient_of_ds_logit_of_the_first_real_image():
    plain = _tiny_method(alpha_r1_logit_weight=0.0)
    theirs = _tiny_method(alpha_r1_logit_weight=1.0)
    for a, b in zip(theirs.alpha_discriminator.weights, plain.alpha_discriminator.weights):
        a.assign(b)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=7)
    _, r1_grads = plain.phase_gradients("alpha_r1", ({"image": images},), tf.constant(0, tf.int64))
    _, both = theirs.phase_gradients("alpha_r1", ({"image": images},), tf.constant(0, tf.int64))
    variables = plain.alpha_discriminator.trainable_variables
    with tf.GradientTape() as tape:
        first = plain.alpha_discriminator(images)[0]
    logit_grads = tape.gradient(first, variables)
    for g_r1, g_both, g_logit in zip(r1_grads, both, logit_grads):
        expected = (0.0 if g_r1 is None else g_r1) + g_logit
        np.testing.assert_allclose(g_both.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-6)
    # Stage 1's lazy R1 stays rosinality's (no logit term).
    _, stage1 = theirs.phase_gradients("r1", ({"image": images},), tf.constant(0, tf.int64))
    assert len(stage1) == len(theirs.discriminator.trainable_variables)


def test_the_minibatch_stddev_group_setting_overrides_a_converted_discriminators(tmp_path):
    checkpoint = {"g_ema": rosinality.generator_state_dict(), "d": rosinality.discriminator_state_dict()}
    conv.convert_checkpoint(checkpoint, str(tmp_path), mbstd_group=4, w_avg_samples=8)
    model = _tiny_method(resolution=rosinality.RES, pretrained_dir=str(tmp_path), mbstd_group=2)
    assert model.discriminator.mbstd_group == 2 and model.alpha_discriminator.mbstd_group == 2


def test_pytorch_adam_epsilon_reaches_every_optimizer_of_the_method():
    model = _tiny_method(pytorch_adam_epsilon=True)
    for name in ("generator", "discriminator", "alpha", "alpha_discriminator"):
        assert getattr(model.phase_optimizers()[name][0], "pytorch_epsilon", None) is True, name
    assert getattr(_tiny_method().alpha_optimizer, "pytorch_epsilon", False) is False


# -- exact resume with path lengths ---------------------------------------------------------------
# One intra-op thread and TensorFlow's own kernels, as tests/test_robustness.py: two runs of the same
# steps then agree bit for bit even when other processes compete for the cores.
_PATH_LENGTH_STEPS = 12
# Stage 1 only, with the path-length step every 2nd step (0, 2, 4, ...) and style mixing on.
_PATH_LENGTH_RUN = [f"--gin_file={REPO}/gin_configs/demo_labels4free.gin", "--smoke",
                    "--gin_bindings=tfseg.training.TrainConfig.stage_steps = "
                    f"{{'stylegan2': {_PATH_LENGTH_STEPS}, 'alpha': 0, 'segmenter': 0}}",
                    "--gin_bindings=tfseg.methods.labels4free.path_length_weight = 2.0",
                    "--gin_bindings=tfseg.methods.labels4free.path_length_interval = 2",
                    "--gin_bindings=tfseg.methods.labels4free.style_mixing_probability = 0.9"]


def _train_path_length_run(model_dir, interrupt_after=None):
    """`tfseg.train` of `_PATH_LENGTH_RUN` (`run_fixture.train_in_subprocess`)."""
    return run_fixture.train_in_subprocess(_PATH_LENGTH_RUN, model_dir, interrupt_after)


def _latest_values(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if key.startswith("model/")}


@pytest.mark.slow
def test_a_run_with_path_lengths_resumed_midway_ends_with_the_weights_and_mean_of_an_uninterrupted_one(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    code, _, err = _train_path_length_run(straight)
    assert code == 0, err[-3000:]
    code, out, err = _train_path_length_run(resumed, interrupt_after=3)
    assert code == 128 + signal.SIGINT, err[-3000:]
    stopped = int(out.split("stopped by SIGINT at step ")[1].split(":")[0])
    # A path-length step (even steps) must run after the resume, with the mean the first half left.
    assert 3 <= stopped <= _PATH_LENGTH_STEPS - 2, out[-2000:]
    code, out, err = _train_path_length_run(resumed)
    assert code == 0, err[-3000:]
    assert "resumed from" in out and f"at step {stopped}" in out
    a, b = _latest_values(straight), _latest_values(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    for key in sorted(a):  # G after the resumed path-length steps, then the mean itself
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
    mean = "model/path_length_mean/.ATTRIBUTES/VARIABLE_VALUE"
    assert mean in a and a[mean] > 0

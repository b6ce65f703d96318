"""ReDO's redraw and phases at tiny sizes: one region redrawn, each loss trains only its networks."""
import numpy as np
import pytest
import tensorflow as tf

from tfseg import losses
from tfseg.methods import redo
from tfseg.modeling import equivariance

TINY = dict(z_dim=4, mask_width=4, mask_residual_blocks=1, generator_width=4, generator_self_attention=False,
            discriminator_width=4, discriminator_self_attention=False)


def _method(**overrides):
    model = redo.ReDOSettings(16, **{**TINY, **overrides}).build()
    model.build_for_training(4)
    return model


def _half_masks(batch):
    """Region 0 the left half, region 1 the right half: hard masks `[b, 16, 16, 2]`."""
    left = np.zeros([batch, 16, 16, 1], np.float32)
    left[:, :, :8] = 1.0
    return tf.constant(np.concatenate([left, 1.0 - left], -1))


def test_redraw_changes_exactly_one_region_per_image_and_keeps_the_other():
    model = _method()
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=1)
    masks = _half_masks(4)
    composites, regions = model.redraw(images, masks, tf.random.normal([4, 4], seed=2), training=False)
    composites, images = composites.numpy(), images.numpy()
    assert regions.numpy().tolist() == [0, 0, 1, 1]  # stratified: each region redrawn for half the batch
    for i, region in enumerate(regions.numpy()):
        inside = masks.numpy()[i, :, :, region] > 0.5
        np.testing.assert_array_equal(composites[i][~inside], images[i][~inside])  # the other region: kept
        assert np.abs(composites[i][inside] - images[i][inside]).mean() > 1e-3     # this one: redrawn


def test_every_region_mode_redraws_each_region_of_every_image_and_sums_them_for_the_encoder():
    model = _method(redraw_every_region=True)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=1)
    masks = _half_masks(4)
    composites, generated = model.redraw_every_region(images, masks, tf.random.normal([8, 4], seed=2),
                                                      training=False)
    composites, generated, images = composites.numpy(), generated.numpy(), images.numpy()
    assert composites.shape == (8, 16, 16, 3) and generated.shape == (4, 16, 16, 3)
    for k in range(2):  # block k of the composites: region k of images 0..3 redrawn, the other kept
        inside = masks.numpy()[:, :, :, k] > 0.5
        block = composites[4 * k:4 * (k + 1)]
        np.testing.assert_array_equal(block[~inside], images[~inside])
        assert np.abs(block[inside] - images[inside]).mean() > 1e-3
        np.testing.assert_allclose(generated[inside], block[inside], atol=1e-6)  # wholly generated image


def test_every_region_mode_shows_d_every_composite_and_the_encoder_one_generated_image_per_photo(monkeypatch):
    model = _method(redraw_every_region=True)
    seen = {"discriminator": [], "encoder": []}
    for name in seen:
        network = getattr(model, name)
        monkeypatch.setattr(network, "call", lambda images, _call=network.call, _name=name, **kw: (
            seen[_name].append(images.shape[0]), _call(images, **kw))[1])
    batches = tuple({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=s)} for s in (3, 4))
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    assert seen == {"discriminator": [8], "encoder": [4]}
    assert all(v.shape == (4,) for v in metrics.losses.values())  # per real photo
    metrics, _ = model.phase_gradients("discriminator", batches, tf.constant(3, tf.int64))
    assert seen["discriminator"][1:] == [4, 8]  # the real batch, then every composite
    assert metrics.losses["discriminator"].shape == (4,)


def test_the_hinge_loss_averages_the_fakes_made_from_each_real_image():
    real = tf.constant([0.0, 2.0])
    fakes = tf.constant([0.0, -3.0, 1.0, -3.0])  # block 0 (one per real), then block 1
    np.testing.assert_allclose(redo.losses.hinge_discriminator_loss(real, fakes).numpy(),
                               [1.0 + (1.0 + 2.0) / 2, 0.0 + 0.0])
    np.testing.assert_allclose(redo.losses.hinge_discriminator_loss(real, fakes[:2]).numpy(), [2.0, 0.0])


def _groups(model):
    """Named groups of trainable variables; D's trunk and heads apart (the code head is the z-encoder)."""
    d = model.discriminator
    groups = {"mask_network": model.mask_network, "generator_0": model.generators[0],
              "generator_1": model.generators[1], "d_trunk": d.trunk, "d_adversarial_head": d.adversarial_head}
    if getattr(d, "code_head", None) is not None:
        groups["d_code_head"] = d.code_head
    if model.encoder is not None:
        groups["encoder"] = model.encoder
    return {name: layer.trainable_variables for name, layer in groups.items()}


def _networks_changed(model, phase, batches):
    """The groups the phase's forward passes and optimizer update move, together.

    With the reference spectral norm (the default) a forward pass changes only the power-iteration
    vectors, which are not trainable; Keras' wrapper would rescale every kernel it runs forward.
    """
    groups = _groups(model)
    before = {name: [v.numpy().copy() for v in variables] for name, variables in groups.items()}
    _, grads = model.phase_gradients(phase, batches, tf.constant(3, tf.int64))
    model.apply_phase(phase, grads)
    return {name for name, variables in groups.items()
            if any(not np.array_equal(b, v.numpy()) for b, v in zip(before[name], variables))}


@pytest.mark.parametrize("every_region", [False, True], ids=["one_region", "every_region"])
@pytest.mark.parametrize("shared_trunk,phase,networks", [
    # Generator phase: F and the G_k descend the whole loss; the z-encoder only the information term.
    (False, "generator", {"mask_network", "generator_0", "generator_1", "encoder"}),
    (False, "discriminator", {"d_trunk", "d_adversarial_head"}),
    # Shared trunk (InfoGAN): the encoder is D's trunk plus its code head.
    (True, "generator", {"mask_network", "generator_0", "generator_1", "d_trunk", "d_code_head"}),
    (True, "discriminator", {"d_trunk", "d_adversarial_head"}),
])
def test_each_phase_trains_only_its_networks(shared_trunk, phase, networks, every_region):
    model = _method(shared_encoder_trunk=shared_trunk, redraw_every_region=every_region)
    batches = tuple({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=s)} for s in (3, 4))
    assert _networks_changed(model, phase, batches) == networks


@pytest.mark.parametrize("multiplier", [1, 2])
def test_the_generator_seed_is_as_wide_as_the_references_first_block_unless_told(multiplier):
    # Reference, R = 128: Linear nz -> 16ch x 4 x 4, then blocks of 16ch, 8ch, 4ch, 2ch, ch.
    model = _method() if multiplier == 1 else _method(generator_seed_multiplier=multiplier)
    generator = model.generators[0]  # R = 16: two blocks, of 2ch and ch (ch = 4)
    z = tf.zeros([2, 4])
    generator(tf.ones([2, 16, 16, 1]), z)
    assert generator.seed.kernel.shape == (4, 4 * 4 * 8 * multiplier)


def test_the_z_encoder_is_a_network_of_its_own_by_default_as_in_the_reference():
    model = _method()
    assert model.encoder is not None and model.discriminator.code_head is None
    shared = _method(shared_encoder_trunk=True)
    assert shared.encoder is None and shared.discriminator.code_head is not None
    # the separate encoder has no real/fake head: no weight of it goes untrained
    assert model.encoder.adversarial_head is None
    _, codes = model.encoder(tf.zeros([2, 16, 16, 3]))
    assert codes.shape == (2, 2, 4)


def _fixed_masks(model, region0_coverage):
    """Makes F return hard masks whose region 0 covers the first `region0_coverage` rows of each image."""
    rows = int(round(16 * region0_coverage))
    region0 = np.zeros([4, 16, 16, 1], np.float32)
    region0[:, :rows] = 1.0
    masks = tf.constant(np.concatenate([region0, 1.0 - region0], -1))
    model.mask_network.call = lambda images, **kw: masks
    return masks


@pytest.mark.parametrize("coverage,hinge", [(2 / 16, 0.25 - 2 / 16), (8 / 16, 0.0), (14 / 16, 14 / 16 - 0.75)])
def test_the_object_size_prior_charges_region_0_outside_its_range(coverage, hinge):
    model = _method(object_min_coverage=0.25, object_max_coverage=0.75, object_size_weight=3.0)
    _fixed_masks(model, coverage)
    batches = tuple({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=s)} for s in (3, 4))
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    named = {k: v.numpy() for k, v in metrics.losses.items()}
    np.testing.assert_allclose(named["object_size"], [hinge] * 4, atol=1e-6)
    np.testing.assert_allclose(named["generator_total"], named["generator_adversarial"]
                               + 5.0 * named["information"] + 3.0 * named["object_size"], rtol=1e-5, atol=1e-5)


def test_the_binarization_term_charges_soft_masks_and_joins_the_total():
    model = _method(binarization_weight=2.0)
    half = tf.fill([4, 16, 16, 1], 0.3)
    model.mask_network.call = lambda images, **kw: tf.concat([half, 1.0 - half], -1)
    batches = tuple({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=s)} for s in (3, 4))
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    named = {k: v.numpy() for k, v in metrics.losses.items()}
    np.testing.assert_allclose(named["mask_binarization"], [0.3] * 4, atol=1e-6)
    np.testing.assert_allclose(named["generator_total"], named["generator_adversarial"]
                               + 5.0 * named["information"] + 2.0 * named["mask_binarization"], rtol=1e-5, atol=1e-5)
    _fixed_masks(model, 8 / 16)  # hard masks cost nothing
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    np.testing.assert_allclose(metrics.losses["mask_binarization"].numpy(), [0.0] * 4, atol=1e-6)
    assert "mask_binarization" not in _method().phase_gradients("generator", batches, tf.constant(3, tf.int64))[0].losses


def test_without_the_prior_the_loss_is_the_papers_and_the_regions_are_symmetric():
    model = _method()
    _fixed_masks(model, 2 / 16)
    batches = tuple({"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=s)} for s in (3, 4))
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    assert "object_size" not in metrics.losses
    named = {k: v.numpy() for k, v in metrics.losses.items()}
    np.testing.assert_allclose(named["generator_total"], named["generator_adversarial"] + 5.0 * named["information"],
                               rtol=1e-5, atol=1e-5)
    assert not model.foreground_by_construction  # the trainer then picks the region by labels or the border
    assert _method(object_max_coverage=0.4).foreground_by_construction  # the prior names region 0 the object


def test_the_prior_trains_only_the_mask_network_towards_its_range():
    model = _method(object_min_coverage=0.6, object_max_coverage=0.9, object_size_weight=1.0)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=3)
    variables = model.mask_network.trainable_variables
    with tf.GradientTape() as tape:
        size = tf.reduce_mean(model._object_size_loss(model.mask_network(images, training=True)))
    grads = tape.gradient(size, variables)
    assert float(size) > 0  # an untrained F splits about evenly: region 0 is below 0.6
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    before = float(tf.reduce_mean(model.mask_network(images)[..., 0]))
    for v, g in zip(variables, grads):
        v.assign_sub(0.05 * g / (tf.norm(g) + 1e-12))
    assert float(tf.reduce_mean(model.mask_network(images)[..., 0])) > before


@pytest.mark.parametrize("low,high", [(0.5, 0.4), (-0.1, 0.5), (0.1, 1.5)])
def test_a_size_prior_range_that_cannot_hold_is_refused_with_its_binding(low, high):
    with pytest.raises(redo.ConfigError, match="object_min_coverage"):
        redo.ReDOSettings(16, object_min_coverage=low, object_max_coverage=high)


def test_crop_boxes_are_squares_inside_the_image_no_smaller_than_the_minimum():
    boxes = equivariance.random_crop_boxes(256, 0.6, tf.constant([1, 2], tf.int64)).numpy()
    sides = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(sides, boxes[:, 3] - boxes[:, 1], atol=1e-6)
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    assert sides.min() >= 0.6 - 1e-6 and sides.max() > 0.95 and sides.min() < 0.65  # the whole range is drawn
    assert len(np.unique(np.round(boxes[:, 0], 3))) > 100                         # positions vary


def _masks_from_red(images, **kwargs):
    """A mask network that follows the photo pointwise (and linearly, so crops commute with it)."""
    red = (images[..., :1] + 1.0) / 2.0
    return tf.concat([red, 1.0 - red], -1)


def test_the_equivariance_term_charges_a_split_that_ignores_the_photo_and_not_one_that_follows_it():
    model = _method(equivariance_weight=4.0)
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    images = tf.constant(np.broadcast_to(x[None, None, :, None], [4, 16, 16, 3]).copy())  # red rises left to right
    batches = ({"image": images}, {"image": images})
    model.mask_network.call = _masks_from_red
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    np.testing.assert_allclose(metrics.losses["mask_equivariance"].numpy(), [0.0] * 4, atol=1e-5)
    _fixed_masks(model, 8 / 16)  # the same top half for every image and every crop of it
    metrics, _ = model.phase_gradients("generator", batches, tf.constant(3, tf.int64))
    named = {k: v.numpy() for k, v in metrics.losses.items()}
    assert named["mask_equivariance"].min() > 1e-3 and named["mask_equivariance"].mean() > 0.02  # every crop disagrees
    np.testing.assert_allclose(named["generator_total"], named["generator_adversarial"] + 5.0 * named["information"]
                               + 4.0 * named["mask_equivariance"], rtol=1e-5, atol=1e-5)
    assert "mask_equivariance" not in _method().phase_gradients("generator", batches, tf.constant(3, tf.int64))[0].losses


def test_the_equivariance_term_trains_only_the_mask_network_and_lowers_its_disagreement():
    model = _method(equivariance_weight=1.0)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=5)
    masks_before = model.mask_network(images)
    others = model._generator_variables() + model._discriminator_variables() + model._encoder_variables()
    variables = model.mask_network.trainable_variables
    step = tf.constant(7, tf.int64)

    def disagreement():
        return tf.reduce_mean(model._equivariance_loss(images, model.mask_network(images, training=True), step))

    with tf.GradientTape(persistent=True) as tape:
        loss = disagreement()
    assert all(g is None for g in tape.gradient(loss, others))
    grads = tape.gradient(loss, variables)
    before = float(loss)
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = disagreement()
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(0.01 * g / (tf.norm(g) + 1e-12))
    assert float(disagreement()) < before
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    assert not np.allclose(model.mask_network(images).numpy(), masks_before.numpy())


def test_an_equivariance_box_that_cannot_be_drawn_is_refused_with_its_binding():
    with pytest.raises(redo.ConfigError, match="equivariance_min_scale"):
        redo.ReDOSettings(16, equivariance_min_scale=0.0)


def test_a_separate_encoder_descends_the_information_term_alone():
    model = _method(shared_encoder_trunk=False)
    images = tf.random.uniform([4, 16, 16, 3], -1, 1, seed=3)
    batches = ({"image": images}, {"image": tf.random.uniform([4, 16, 16, 3], -1, 1, seed=4)})
    step = tf.constant(3, tf.int64)
    state = [v.numpy() for v in model.variables]  # spectral norms' u vectors move on each pass
    enc_grads = model.phase_gradients("generator", batches, step)[1]["encoder"]
    for v, value in zip(model.variables, state):
        v.assign(value)
    # The information term alone, from the same forward pass: what the encoder must descend.
    z = model._codes(4, step, stream=0)
    with tf.GradientTape() as tape:
        masks = model.mask_network(images, training=True)
        _, encoder_input, regions = model._fakes(images, masks, z, training=True)
        _, codes = model.encoder(encoder_input, training=True)
        info = losses.information_conservation_loss(tf.gather(codes, regions, axis=1, batch_dims=1), z)
        info_total = tf.nn.compute_average_loss(5.0 * info)
    expected = tape.gradient(info_total, model._encoder_variables())
    assert len(enc_grads) == len(expected) and all(g is not None for g in enc_grads)
    for got, want in zip(enc_grads, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in enc_grads)


def _torch_adam_numpy(grads, lr, beta_2, eps):
    """torch.optim.Adam(betas=(0, beta_2), eps) written out: m = g; v = b2 v + (1 - b2) g^2;
    theta -= lr * m / (sqrt(v / (1 - b2^t)) + eps), from theta = 0."""
    theta, v = np.zeros_like(grads[0], np.float64), np.zeros_like(grads[0], np.float64)
    for t, g in enumerate(grads, start=1):
        v = beta_2 * v + (1 - beta_2) * g.astype(np.float64) ** 2
        theta -= lr * g / (np.sqrt(v / (1 - beta_2**t)) + eps)
    return theta


@pytest.mark.parametrize("pytorch_adam, matches", [(True, True), (False, False)])
def test_pytorch_adam_adds_epsilon_where_torch_does(pytorch_adam, matches):
    # Gradients near epsilon, where its placement shows: Keras adds eps to sqrt(v), PyTorch to
    # sqrt(v_hat) = sqrt(v / (1 - beta_2^t)).
    grads = [np.array([3e-9, -1e-8, 2e-8, 1.0], np.float32) * s for s in (1.0, 0.5, 2.0)]
    settings = redo.ReDOSettings(resolution=8, adam_epsilon=1e-8, pytorch_adam_epsilon=pytorch_adam)
    optimizer = redo._adam(1e-4, settings)
    variable = tf.Variable(tf.zeros(4))
    optimizer.build([variable])
    for g in grads:
        optimizer.apply([tf.constant(g)], [variable])
    expected = _torch_adam_numpy(grads, 1e-4, 0.9, 1e-8)
    close = np.allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-12)
    assert close == matches


def test_symmetric_padding_samples_the_stride_2_windows_as_pytorch():
    # PyTorch's conv(k=3, stride=2, padding=1) centres output i on input pixel 2i; Keras' "same"
    # on input pixel 2i + 1 (it pads only after). A one-hot input tells them apart.
    from tfseg.modeling.mask_network import MaskNetwork
    for symmetric, centre in ((True, 0), (False, 1)):
        net = MaskNetwork(2, 4, 1, symmetric_padding=symmetric)
        net(tf.zeros([1, 16, 16, 3]))
        conv = net.down1
        kernel = np.zeros(conv._kernel.shape, np.float32)
        kernel[1, 1, 0, 0] = 1.0                     # the centre tap only
        conv._kernel.assign(kernel)
        image = np.zeros([1, 8, 8, conv._kernel.shape[2]], np.float32)
        image[0, centre, centre, 0] = 1.0
        out = conv(net._down_pad(tf.constant(image))).numpy()
        assert out[0, 0, 0, 0] == 1.0, (symmetric, centre)


@pytest.mark.parametrize("pytorch_bias_init", [True, False])
def test_biases_start_as_pytorch_draws_them_when_asked(pytorch_bias_init):
    import math
    import keras
    method = redo.ReDOSettings(resolution=8, mask_width=8, generator_width=4, discriminator_width=4, z_dim=2,
                               pytorch_bias_init=pytorch_bias_init).build()
    method.build_for_training(2)
    seen = 0
    for network in method._networks():
        for layer in network._flatten_layers(include_self=False):
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
                bias = layer.bias.numpy()
                bound = 1.0 / math.sqrt(math.prod(layer._kernel.shape[:-1]))
                assert np.all(np.abs(bias) <= bound)
                assert np.any(bias != 0) == pytorch_bias_init
                seen += 1
    # The mask network's PPM projections, res blocks and head, every generator's convs and norms'
    # gamma/beta, D's and the encoder's convs and heads.
    assert seen >= 40

"""Colour refinement (`tfseg.modeling.refinement`): what it corrects on a tiny case, its symmetry, its
gin switch, and that evaluation, export and serving all apply it when a run turns it on."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tfseg import config, registry
from tfseg.evaluation import evaluator, split_evaluation
from tfseg.evaluation.metrics import per_image_iou
from tfseg.modeling import refinement
from tfseg.serving import export_module
from tfseg.training import checkpointing, loading, train_config
from test_training import REPO

registry.import_configurables()  # these tests parse configs, as the entry points do


def _two_colour_image(size=32, seed=0):
    """A reddish disc-free square object on a bluish background, with noise: `(image in [-1, 1], truth)`."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), bool)
    truth[6:20, 4:18] = True
    image = np.where(truth[..., None], [0.8, -0.6, -0.5], [-0.5, -0.2, 0.7])
    image = np.clip(image + rng.normal(0, 0.08, image.shape), -1, 1).astype(np.float32)
    return image[None], truth[None, ..., None]


def test_colour_refinement_snaps_a_misplaced_mask_onto_the_object():
    image, truth = _two_colour_image()
    prior = np.zeros_like(truth, np.float32)
    prior[:, 2:26, 2:26] = 1.0  # three times too large, and off-centre

    refined = refinement.ColourRefinement()(image, prior).numpy()
    before = per_image_iou(prior >= 0.5, truth)[0]
    after = per_image_iou(refined >= 0.5, truth)[0]
    assert before < 0.4 and after > 0.95, (before, after)


def test_a_strong_prior_weight_keeps_the_network_mask():
    image, truth = _two_colour_image()
    prior = np.full_like(truth, 0.1, np.float32)
    prior[:, 10:26, 8:24] = 0.9
    kept = refinement.ColourRefinement(prior_weight=20.0)(image, prior).numpy()
    np.testing.assert_array_equal(kept >= 0.5, prior >= 0.5)


def test_refining_the_complement_gives_the_complement():
    image, _ = _two_colour_image(seed=1)
    mask = tf.random.stateless_uniform((1, 32, 32, 1), (3, 4)).numpy()
    refine = refinement.ColourRefinement(prior_weight=0.5)
    np.testing.assert_allclose(refine(image, 1 - mask).numpy(), 1 - refine(image, mask).numpy(), atol=1e-5)
    regions = refine.refine_regions(image, np.concatenate([mask, 1 - mask], -1)).numpy()
    np.testing.assert_allclose(regions.sum(-1), 1.0, atol=1e-5)


def test_smoothing_keeps_a_lone_pixel_of_object_colour_out_of_the_background():
    image, truth = _two_colour_image()
    image[0, 28, 28] = image[0, 10, 10]  # one pixel of the object's colour far out in the background
    refined = {radius: refinement.ColourRefinement(smoothing=radius / 32)(image, truth.astype(np.float32)).numpy()
               for radius in (0, 1)}
    assert refined[0][0, 28, 28, 0] >= 0.5 and refined[1][0, 28, 28, 0] < 0.5


def test_gin_switch_is_off_by_default_and_bad_settings_name_the_binding():
    # The shipped configs switch it on; the switch itself defaults to off.
    config.parse([os.path.join(REPO, "gin_configs", "redo_base.gin")], ["tfseg.training.TrainConfig.resolution = 32"])
    assert refinement.mask_refinement() is None
    assert loading.build_method(train_config.TrainConfig()).mask_refinement is None
    config.parse([os.path.join(REPO, "gin_configs", "demo.gin")], ["tfseg.mask_refinement.colour = True",
                                                                 "tfseg.ColourRefinement.bins = 6"])
    assert loading.build_method(train_config.TrainConfig()).mask_refinement == refinement.ColourRefinement(bins=6)
    with pytest.raises(ValueError, match="tfseg.ColourRefinement"):
        refinement.ColourRefinement(bins=1)


def _write_refining_run(model_dir):
    """A smoke run folder (initial weights) whose config turns the colour refinement on."""
    config.parse([os.path.join(REPO, "gin_configs", "demo.gin"), config.SMOKE_CONFIG],
                 ["tfseg.mask_refinement.colour = True"])
    config.save_config(model_dir)
    cfg = train_config.TrainConfig()
    model = loading.build_method(cfg)
    model.build_for_training(cfg.batch_size)
    state = checkpointing.RunState()
    latest, best = checkpointing.managers(checkpointing.make_checkpoint(model, state), model_dir)
    latest.save(checkpoint_number=0)
    best.save(checkpoint_number=0)


@pytest.mark.slow
def test_evaluation_and_the_export_refine_and_evaluation_scores_the_refined_disc(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    _write_refining_run(model_dir)
    model, cfg, _ = loading.load_trained(model_dir)
    assert model.mask_refinement is not None
    images = next(iter(split_evaluation.eval_dataset(cfg, "test")))["image"]
    raw = model.region_masks(images)[..., :1].numpy()
    refined = model.mask_refinement(images, raw).numpy()
    assert np.abs(refined - raw).max() > 0.1  # the refinement changes these masks
    np.testing.assert_allclose(model.final_region_masks(images)[..., :1].numpy(), refined, atol=1e-5)

    results, _ = evaluator.evaluate(model, split_evaluation.eval_dataset(cfg, "test"))
    assert evaluator.REFINED_DISC in results["baselines"]
    assert set(results["baselines"][evaluator.REFINED_DISC]) == {"fg_iou", "miou", "accuracy"}

    path, _, _ = export_module.export_run(model_dir, str(tmp_path / "serving"))
    served = tf.saved_model.load(path).signatures["serve_image_tensor"]
    uint8 = tf.cast(tf.round((images + 1.0) * 127.5), tf.uint8)
    mask = served(**{export_module.INPUT_TENSOR: uint8})["mask"].numpy()
    expected = model.segment(tf.cast(uint8, tf.float32) / 127.5 - 1.0).numpy()
    np.testing.assert_allclose(mask, expected, atol=1e-3)
    assert np.abs(mask - model.region_masks(tf.cast(uint8, tf.float32) / 127.5 - 1.0)[..., :1].numpy()).max() > 0.1


def test_box_mean_matches_average_pooling_and_takes_a_dynamic_radius():
    values = tf.random.stateless_normal((2, 9, 13, 1), (1, 2))
    for radius in (0, 1, 3):
        expected = tf.nn.avg_pool2d(values, 2 * radius + 1, strides=1, padding="SAME")
        np.testing.assert_allclose(refinement.box_mean(values, tf.constant(radius)).numpy(), expected.numpy(),
                                   atol=1e-5)
    dynamic = tf.function(refinement.box_mean, input_signature=[tf.TensorSpec([None, None, None, 1]),
                                                                tf.TensorSpec([], tf.int32)])
    np.testing.assert_allclose(dynamic(values, 2).numpy(), refinement.box_mean(values, 2).numpy(), atol=1e-6)


def test_served_png_masks_are_refined_at_the_photo_size_from_the_network_mask(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    _write_refining_run(model_dir)
    model, _, _ = loading.load_trained(model_dir)
    serving = export_module.serving_functions_from_run(model, train_config.TrainConfig())
    photo = np.zeros((40, 56, 3), np.uint8)
    photo[...] = (40, 60, 200)
    photo[8:30, 10:34] = (220, 40, 30)  # a red object on blue, bigger than the model's 16 px input
    photo = np.clip(photo + np.random.default_rng(0).integers(-12, 12, photo.shape), 0, 255).astype(np.uint8)
    data = tf.io.encode_png(photo)
    out = serving.from_bytes(tf.stack([data]))
    png = tf.io.decode_png(out["mask_png_bytes"][0]).numpy()
    assert png.shape == (40, 56, 1)

    network, final = model.foreground_masks(serving.preprocess(tf.constant(photo))[None])
    np.testing.assert_allclose(out["mask"].numpy(), final.numpy(), atol=1e-5)
    seed = export_module.mask_to_original_size(network[0], 40, 56, serving.resolution)
    expected = model.mask_refinement(tf.constant(photo, tf.float32)[None] / 127.5 - 1.0, seed[None])[0]
    np.testing.assert_allclose(png / 255.0, expected.numpy(), atol=1 / 255 + 1e-6)
    plain = export_module.mask_to_original_size(final[0], 40, 56, serving.resolution).numpy()
    assert np.abs(png / 255.0 - plain).max() > 0.2  # not merely the upsampled model-size mask

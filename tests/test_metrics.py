"""Tests for tfseg.evaluation.metrics, against values computed by hand."""

import math

import numpy as np
import pytest

from tfseg.evaluation import metrics


def _masks(*rows_per_image):
    """Builds a [B, H, W, 1] float array from nested lists of rows, one entry per image."""
    return np.asarray(rows_per_image, dtype=np.float32)[..., None]


# 4x4 example used by several tests.
# |P| = 6, |G| = 6, |P ∩ G| = 4 (rows 0-1, cols 1-2), |P ∪ G| = 8.
# tp = 4, fp = 2, fn = 2, tn = 16 - 8 = 8.
PRED_4X4 = _masks([[0.9, 0.8, 0.7, 0.1],
                   [0.6, 0.9, 0.9, 0.0],
                   [0.2, 0.3, 0.4, 0.1],
                   [0.0, 0.0, 0.0, 0.0]])
TRUTH_4X4 = _masks([[0, 1, 1, 0],
                    [0, 1, 1, 0],
                    [0, 1, 1, 0],
                    [0, 0, 0, 0]])

# Three 2x2 images whose per-image best assignments disagree with the dataset-level one.
#   A: pred == truth                    fg 1,  bg 1,    acc 1  | flipped: fg 0,   bg 0,   acc 0
#   B: pred == 1 - truth                fg 0,  bg 0,    acc 0  | flipped: fg 1,   bg 1,   acc 1
#   C: tp 0, fp 1, fn 1, tn 2           fg 0,  bg 2/4,  acc .5 | flipped: tp'=1 fp'=2 fn'=0 tn'=1:
#                                                                 fg 1/3, bg 1/3, acc .5
MIXED_PRED = _masks([[1, 1], [0, 0]],
                    [[0, 0], [1, 1]],
                    [[0, 0], [0, 1]])
MIXED_TRUTH = _masks([[1, 1], [0, 0]],
                     [[1, 1], [0, 0]],
                     [[1, 0], [0, 0]])


def _result(pred, truth, **kwargs):
    m = metrics.MaskMetrics(**kwargs)
    m.update(pred, truth)
    return m.result()


def test_per_image_iou_and_accuracy_match_hand_counts():
    pred = PRED_4X4 >= 0.5
    np.testing.assert_allclose(metrics.per_image_iou(pred, TRUTH_4X4), [4 / 8])
    # (tp + tn) / 16 = (4 + 8) / 16
    np.testing.assert_allclose(metrics.per_image_accuracy(pred, TRUTH_4X4), [12 / 16])


def test_fixed_polarity_scores_on_4x4_example():
    r = _result(PRED_4X4, TRUTH_4X4)
    assert r["fg_iou"] == pytest.approx(4 / 8)
    assert r["bg_iou"] == pytest.approx(8 / 12)  # tn / (tn + fp + fn)
    assert r["miou"] == pytest.approx((4 / 8 + 8 / 12) / 2)
    assert r["accuracy"] == pytest.approx(12 / 16)
    # One image: the confusion matrix equals the per-image counts.
    assert r["confusion_miou"] == pytest.approx(r["miou"])
    assert r["precision"] == pytest.approx(4 / 6)  # tp / (tp + fp)
    assert r["recall"] == pytest.approx(4 / 6)  # tp / (tp + fn)
    assert r["f1"] == pytest.approx(8 / 12)  # 2tp / (2tp + fp + fn)
    # The flipped assignment is worse (fg 2/14), so every permutation keeps the prediction as given.
    assert r["best_perm_fg_iou"] == pytest.approx(4 / 8)
    assert r["dataset_perm_flipped"] is False
    assert r["num_images"] == 1
    assert r["threshold"] == 0.5


def test_inverted_prediction_scores_zero_fixed_but_one_under_permutation():
    r = _result(1.0 - TRUTH_4X4, TRUTH_4X4)
    assert r["fg_iou"] == 0.0
    assert r["bg_iou"] == 0.0
    assert r["accuracy"] == 0.0
    assert r["best_perm_fg_iou"] == 1.0
    assert r["best_perm_miou"] == 1.0
    assert r["best_perm_accuracy"] == 1.0
    assert r["dataset_perm_flipped"] is True
    assert r["dataset_perm_fg_iou"] == 1.0
    assert r["dataset_perm_miou"] == 1.0
    assert r["dataset_perm_accuracy"] == 1.0
    assert r["redo_iou"] == 1.0
    assert r["redo_acc"] == 1.0


def test_per_image_best_permutation_differs_from_dataset_permutation():
    r = _result(MIXED_PRED, MIXED_TRUTH)
    # Fixed: fg (1 + 0 + 0) / 3, bg (1 + 0 + 1/2) / 3, acc (1 + 0 + 1/2) / 3.
    assert r["fg_iou"] == pytest.approx(1 / 3)
    assert r["bg_iou"] == pytest.approx(1 / 2)
    assert r["miou"] == pytest.approx(5 / 12)
    assert r["accuracy"] == pytest.approx(1 / 2)
    # Per image: A as given, B flipped, C flipped (1/3 > 0).
    # fg (1 + 1 + 1/3) / 3; miou (1 + 1 + 1/3) / 3; acc max per image (1 + 1 + 1/2) / 3.
    assert r["best_perm_fg_iou"] == pytest.approx(7 / 9)
    assert r["best_perm_miou"] == pytest.approx(7 / 9)
    assert r["best_perm_accuracy"] == pytest.approx(5 / 6)
    # Dataset: summed fg IoU 1 as given vs 0 + 1 + 1/3 = 4/3 flipped -> flip everything.
    # fg (0 + 1 + 1/3) / 3, bg (0 + 1 + 1/3) / 3, acc (0 + 1 + 1/2) / 3.
    assert r["dataset_perm_flipped"] is True
    assert r["dataset_perm_fg_iou"] == pytest.approx(4 / 9)
    assert r["dataset_perm_miou"] == pytest.approx(4 / 9)
    assert r["dataset_perm_accuracy"] == pytest.approx(1 / 2)


def test_best_perm_miou_uses_the_assignment_that_maximises_fg_iou():
    # Truth has 1 of 4 pixels, the prediction is all foreground.
    # As given: tp 1, fp 3, fn 0, tn 0 -> fg 1/4, bg 0/3, mIoU 1/8, acc 1/4.
    # Flipped (nothing is fg): tp' 0, fp' 0, fn' 1, tn' 3 -> fg 0, bg 3/4, mIoU 3/8, acc 3/4.
    # fg IoU picks "as given", so mIoU is 1/8 although the flip has the higher mIoU; accuracy picks
    # independently and takes the flip.
    r = _result(_masks([[1, 1], [1, 1]]), _masks([[1, 0], [0, 0]]))
    assert r["best_perm_fg_iou"] == pytest.approx(1 / 4)
    assert r["best_perm_miou"] == pytest.approx(1 / 8)
    assert r["best_perm_accuracy"] == pytest.approx(3 / 4)


def test_prediction_equal_to_threshold_counts_as_foreground():
    pred = _masks([[0.5, 0.49999]])
    truth = _masks([[1, 0]])
    assert _result(pred, truth)["fg_iou"] == 1.0
    # With threshold 0.9 nothing is foreground: tp 0, fn 1 -> IoU 0.
    assert _result(pred, truth, threshold=0.9)["fg_iou"] == 0.0
    assert _result(_masks([[0.9, 0.2]]), truth, threshold=0.9)["fg_iou"] == 1.0


def test_empty_truth_and_empty_prediction_score_one():
    empty = np.zeros((1, 4, 4, 1), np.float32)
    np.testing.assert_array_equal(metrics.per_image_iou(empty, empty), [1.0])
    r = _result(empty, empty)
    assert r["fg_iou"] == 1.0
    assert r["bg_iou"] == 1.0
    assert r["confusion_miou"] == 1.0
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["f1"] == 1.0
    # Any predicted pixel on an empty truth gives IoU 0 (0 / |P|).
    some = empty.copy()
    some[0, 0, 0, 0] = 1.0
    np.testing.assert_array_equal(metrics.per_image_iou(some, empty), [0.0])


def test_confusion_miou_weighs_pixels_while_fg_iou_weighs_images():
    # Image 1: 8 fg pixels, predicted exactly (tp 8, tn 8). Image 2: 1 fg pixel, missed (fn 1, tn 15).
    truth = np.zeros((2, 4, 4, 1), np.float32)
    truth[0, :2] = 1.0
    truth[1, 0, 0] = 1.0
    pred = np.zeros_like(truth)
    pred[0, :2] = 1.0
    r = _result(pred, truth)
    # Per image: fg (1 + 0) / 2; bg (8/8 + 15/16) / 2.
    assert r["fg_iou"] == pytest.approx(1 / 2)
    assert r["miou"] == pytest.approx((1 / 2 + 31 / 32) / 2)
    # Summed: tp 8, fp 0, fn 1, tn 23 -> fg 8/9, bg 23/24.
    assert r["confusion_miou"] == pytest.approx((8 / 9 + 23 / 24) / 2)
    assert r["precision"] == pytest.approx(1.0)
    assert r["recall"] == pytest.approx(8 / 9)
    assert r["f1"] == pytest.approx(16 / 17)


# Per-image best-of-two values: image A -> IoU 1, Acc 1; image C -> IoU 1/3, Acc 1/2.
A_PRED, A_TRUTH = MIXED_PRED[:1], MIXED_TRUTH[:1]
C_PRED, C_TRUTH = MIXED_PRED[2:], MIXED_TRUTH[2:]


def test_redo_scores_drop_the_last_incomplete_update():
    m = metrics.MaskMetrics()
    m.update(np.concatenate([A_PRED, C_PRED]), np.concatenate([A_TRUTH, C_TRUTH]))  # IoU 2/3, Acc 3/4
    m.update(np.concatenate([A_PRED, A_PRED]), np.concatenate([A_TRUTH, A_TRUTH]))  # IoU 1,   Acc 1
    m.update(C_PRED, C_TRUTH)  # 1 < 2 images: dropped
    r = m.result()
    assert r["redo_iou"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["redo_acc"] == pytest.approx((3 / 4 + 1) / 2)
    assert r["redo_num_images"] == 4
    # The other scores use all five images.
    assert r["num_images"] == 5
    assert r["best_perm_fg_iou"] == pytest.approx((1 + 1 / 3 + 1 + 1 + 1 / 3) / 5)


def test_redo_scores_average_batch_means_not_images():
    m = metrics.MaskMetrics()
    m.update(A_PRED, A_TRUTH)  # batch mean IoU 1
    m.update(np.concatenate([C_PRED, C_PRED]), np.concatenate([C_TRUTH, C_TRUTH]))  # 1/3, kept (2 >= 1)
    r = m.result()
    assert r["redo_iou"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["best_perm_fg_iou"] == pytest.approx((1 + 2 / 3) / 3)


def test_redo_batch_size_argument_cuts_fixed_batches_and_drops_remainder():
    pred = np.concatenate([A_PRED, C_PRED, A_PRED, A_PRED, C_PRED])
    truth = np.concatenate([A_TRUTH, C_TRUTH, A_TRUTH, A_TRUTH, C_TRUTH])
    m = metrics.MaskMetrics()
    m.update(pred, truth)
    # Size 2: [A, C] -> 2/3, [A, A] -> 1, [C] dropped.
    assert m.result(redo_batch_size=2)["redo_iou"] == pytest.approx(5 / 6)
    # Size 3: [A, C, A] -> 7/9, [A, C] dropped.
    assert m.result(redo_batch_size=3)["redo_iou"] == pytest.approx(7 / 9)
    assert m.result(redo_batch_size=3)["redo_num_images"] == 3
    # Constructor default, overridable per call.
    m20 = metrics.MaskMetrics(redo_batch_size=20)
    m20.update(pred, truth)
    assert math.isnan(m20.result()["redo_iou"])  # fewer images than one batch
    assert m20.result(redo_batch_size=2)["redo_iou"] == pytest.approx(5 / 6)


def test_two_updates_equal_one_big_update():
    rng = np.random.default_rng(0)
    pred = rng.uniform(size=(6, 5, 5, 1)).astype(np.float32)
    truth = (rng.uniform(size=(6, 5, 5, 1)) < 0.4).astype(np.float32)
    split = metrics.MaskMetrics()
    split.update(pred[:4], truth[:4])
    split.update(pred[4:], truth[4:])
    whole = _result(pred, truth)
    got = split.result()
    for key, value in whole.items():
        if key.startswith("redo_"):
            continue  # batching differs by design
        assert got[key] == pytest.approx(value), key


def test_reset_forgets_images():
    m = metrics.MaskMetrics()
    m.update(PRED_4X4, TRUTH_4X4)
    m.reset()
    r = m.result()
    assert r["num_images"] == 0
    assert math.isnan(r["fg_iou"])
    m.update(1.0 - TRUTH_4X4, TRUTH_4X4)
    assert m.result()["fg_iou"] == 0.0


def test_choose_polarity_flips_only_when_the_complement_is_better():
    assert metrics.choose_polarity(1.0 - TRUTH_4X4, TRUTH_4X4) is True
    assert metrics.choose_polarity(PRED_4X4, TRUTH_4X4) is False
    assert metrics.choose_polarity(MIXED_PRED, MIXED_TRUTH) is True


def test_invalid_inputs_are_rejected():
    m = metrics.MaskMetrics()
    with pytest.raises(ValueError, match="0 and 1"):
        m.update(PRED_4X4, TRUTH_4X4 * 255)
    with pytest.raises(ValueError, match="shape"):
        m.update(PRED_4X4, TRUTH_4X4[..., 0])


def test_format_table_shows_threshold_count_and_three_rows():
    table = metrics.format_table(_result(MIXED_PRED, MIXED_TRUTH))
    lines = table.splitlines()
    assert "threshold 0.5" in lines[0] and "3 images" in lines[0]
    assert "fg IoU" in lines[1] and "mIoU" in lines[1] and "accuracy" in lines[1]
    assert lines[2].startswith("fixed polarity") and "0.3333" in lines[2]
    assert lines[3].startswith("dataset permutation") and "complement chosen" in lines[3]
    assert lines[4].startswith("per-image best permutation") and "0.7778" in lines[4]



def test_baselines_score_the_full_image_and_the_centred_disc_against_the_truth():
    from tfseg.evaluation import evaluator  # pylint: disable=import-outside-toplevel
    masks = evaluator.baseline_masks(32, 32)
    disc = masks["centred disc, 50 % of the image"]
    assert abs(disc.mean() - 0.5) < 0.02 and disc[16, 16, 0] == 1 and disc[0, 0, 0] == 0
    truth = np.zeros((2, 32, 32, 1), np.float32)
    truth[0, :8] = 1  # a quarter of the image, at the top
    truth[1] = disc  # exactly the disc
    scores = evaluator.score_baselines([truth[:1], truth[1:]])
    assert scores["full-image mask"]["fg_iou"] == pytest.approx((0.25 + disc.mean()) / 2)
    assert scores["full-image mask"]["accuracy"] == pytest.approx((0.25 + disc.mean()) / 2)
    top_and_disc = (truth[0] * disc).sum() / np.maximum(truth[0], disc).sum()
    assert scores["centred disc, 50 % of the image"]["fg_iou"] == pytest.approx((top_and_disc + 1.0) / 2)
    result = metrics.MaskMetrics()
    result.update(np.ones((1, 4, 4, 1)), np.ones((1, 4, 4, 1)))
    table = metrics.format_table({**result.result(), "baselines": scores})
    assert "baseline: full-image mask" in table and "baseline: centred disc, 50 % of the image" in table

"""tools/score_masks.py: predicted mask PNGs against hand-made ones, worked out by hand."""
import os
import sys

import numpy as np
from PIL import Image
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import score_masks  # noqa: E402  pylint: disable=wrong-import-position


def _png(path, mask):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def test_scores_fixed_polarity_at_the_truth_size_and_counts_missing_predictions(tmp_path):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    a = np.zeros((8, 8), bool)
    a[:4] = True  # 32 pixels
    _png(str(truth / "image_1.png"), a)
    half = np.zeros((8, 8), bool)
    half[:2] = True  # 16 of the 32: IoU 0.5
    _png(str(pred / "image_1_mask.png"), half)
    b = np.zeros((8, 8), bool)
    b[:, :4] = True
    _png(str(truth / "image_2.png"), b)
    big = np.zeros((16, 16), bool)
    big[:, :8] = True  # the same mask at twice the size: IoU 1
    _png(str(pred / "image_2_mask.png"), big)
    _png(str(truth / "image_3.png"), b)  # no prediction
    results = score_masks.score(str(pred), str(truth))
    assert results["num_images"] == 2 and results["missing_predictions"] == 1
    assert results["fg_iou"] == pytest.approx((0.5 + 1.0) / 2)
    assert results["accuracy"] == pytest.approx((48 / 64 + 1.0) / 2)


def test_no_matching_prediction_is_an_error(tmp_path):
    _png(str(tmp_path / "truth" / "x.png"), np.ones((4, 4), bool))
    os.makedirs(tmp_path / "pred")
    with pytest.raises(ValueError, match="no prediction"):
        score_masks.score(str(tmp_path / "pred"), str(tmp_path / "truth"))

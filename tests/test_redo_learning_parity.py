"""tools/redo_learning_parity.py: the authors' ReDO script run unmodified on the CPU, scored like tfseg."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

import reference_code

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import redo_learning_parity as parity  # noqa: E402  pylint: disable=wrong-import-position


def _folder(tmp_path, n=12, size=128):
    """n photos (a bright disc on noise) and masks for every other photo."""
    rng = np.random.default_rng(0)
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        disc = (yy - size / 2) ** 2 + (xx - size / 2 - i) ** 2 < (size / 4) ** 2
        image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
        image[disc] = (230, 200, 40)
        Image.fromarray(image).save(photos / f"p{i:02d}.png")
        if i % 2 == 0:
            Image.fromarray((disc * 255).astype(np.uint8)).save(masks / f"p{i:02d}.png")
    return str(photos), str(masks)


def test_the_photos_are_split_as_tfseg_splits_a_folder_and_masks_are_zero_one(tmp_path):
    from tfseg.data.folder import assign_splits
    photos, masks = _folder(tmp_path, size=40)
    data = parity.load_photos(photos, masks, size=32)  # resized and centre-cropped like their loader
    splits = assign_splits(photos, masks)
    assert data["train"][0].shape == (12, 32, 32, 3) and data["train"][1] is None
    for split in ("validation", "test"):
        images, split_masks = data[split]
        assert len(images) == len(split_masks) == len(splits[split])
        assert set(np.unique(split_masks)) <= {0.0, 1.0}
    assert len(data["validation"][0]) + len(data["test"][0]) == 6


def test_cuda_devices_are_the_cpu_only_while_the_script_runs():
    torch = reference_code.require_torch()
    real_device = torch.device
    with parity._authors_script_on_cpu(torch, {"a_stand_in": object()}):
        assert torch.device("cuda:0").type == "cpu"
        assert isinstance(torch.device("cpu"), torch.device)
        assert "a_stand_in" in sys.modules
        optimizer = torch.optim.Adam([torch.zeros(2, requires_grad=True)], betas=(0, 0.9))
        assert optimizer.defaults["betas"] == (0.0, 0.9)
    assert torch.device is real_device and "a_stand_in" not in sys.modules
    with pytest.raises(ValueError):
        torch.optim.Adam([torch.zeros(2, requires_grad=True)], betas=(0, 0.9))


def test_too_few_labelled_photos_for_the_authors_script_is_refused_before_training(tmp_path):
    photos, masks = _folder(tmp_path, n=4)
    with pytest.raises(SystemExit, match="Too few labelled photos"):
        parity.main([f"--photos={photos}", f"--masks={masks}", f"--out={tmp_path / 'out'}", "--batch_size=20"])
    assert not (tmp_path / "out" / "authors").exists()


def test_the_comparison_table_and_plot_show_both_sides(tmp_path):
    curves = {"authors": {100: {"best_perm_fg_iou": 0.5, "fg_iou": 0.25}},
              "tfseg": {100: {"best_perm_fg_iou": 0.625, "fg_iou": 0.125}, 200: {"best_perm_fg_iou": 0.7, "fg_iou": 0.3}}}
    minutes = {"authors": {100: 3.0}, "tfseg": {100: 2.5, 200: 5.0}}
    text = parity.table(curves, minutes).splitlines()
    assert text[2] == "| 100 | 3.0 | 0.500 / 0.250 | 2.5 | 0.625 / 0.125 |"
    assert text[3] == "| 200 |  |  | 5.0 | 0.700 / 0.300 |"
    parity.draw(curves, tmp_path / "p.png")
    picture = np.asarray(Image.open(tmp_path / "p.png"))
    assert ((picture == (200, 0, 0)).all(-1)).any() and ((picture == (0, 90, 200)).all(-1)).any()


@pytest.mark.reference
@pytest.mark.slow
def test_the_authors_script_trains_on_the_cpu_and_its_checkpoints_are_scored(tmp_path):
    reference_code.reference_folder("ReDO")
    reference_code.require_torch()
    photos, masks = _folder(tmp_path, n=16)
    out = tmp_path / "out"
    parity.main([f"--photos={photos}", f"--masks={masks}", f"--out={out}", "--side=authors",
                 "--iterations=2", "--eval_every=1", "--nf=4", "--batch_size=2", "--threads=1", "--n_test=2"])
    record = json.load(open(out / "curves.json"))
    assert sorted(record["curves"]["authors"], key=int) == ["1", "2"]
    for row in record["curves"]["authors"].values():
        assert 0.0 <= row["fg_iou"] <= row["best_perm_fg_iou"] <= 1.0
    assert (out / "authors" / "state_00002.pth").exists() and (out / "parity.png").exists()
    # --report_only trains nothing and scores the same checkpoints again: the same curve.
    (out / "parity.md").unlink()
    parity.main([f"--photos={photos}", f"--masks={masks}", f"--out={out}", "--report_only", "--batch_size=2",
                 "--n_test=2"])
    again = json.load(open(out / "curves.json"))
    assert again["curves"]["authors"] == record["curves"]["authors"] and (out / "parity.md").exists()
    assert sorted(p.name for p in (out / "authors").glob("state_*.pth")) == ["state_00001.pth", "state_00002.pth"]

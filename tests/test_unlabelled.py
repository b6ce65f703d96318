"""A folder of photos without masks, end to end: the border rule, the data summary, export and evaluate."""
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tfseg.evaluation import evaluator
from tfseg.serving import export_module, inference
from tfseg.training import run_dir
from test_training import run_module, run_train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One worker runs this module (pytest.ini: --dist loadgroup) and its run is a session fixture, so it is
# made once even when that worker runs other modules' tests in between (a module fixture was made twice).
pytestmark = pytest.mark.xdist_group("unlabelled_run")


def _centre_blob(side=32, radius=8):
    yy, xx = np.mgrid[:side, :side]
    return ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 < radius ** 2).astype(np.float32)


def test_border_coverage_on_hand_made_masks():
    blob = _centre_blob()
    regions = np.stack([blob, 1 - blob], -1)[None]  # region 0: the object in the middle
    coverage = evaluator.border_coverage(regions)
    np.testing.assert_allclose(coverage, [0.0, 1.0])
    # A region touching one edge covers part of the frame: 32 px, frame 2 px wide.
    left = np.zeros((32, 32), np.float32)
    left[:, :2] = 1
    frame_pixels = 32 * 32 - 28 * 28
    np.testing.assert_allclose(evaluator.border_coverage(np.stack([left, 1 - left], -1)[None]),
                               [64 / frame_pixels, 1 - 64 / frame_pixels])


class _FixedRegions:
    """A stand-in method whose region 1 is the centred object."""

    def __init__(self, regions):
        self.regions = tf.constant(regions)

    def region_masks(self, images, training=False):
        del training
        return tf.repeat(self.regions[None], tf.shape(images)[0], axis=0)

    final_region_masks = region_masks  # no refinement


def test_border_region_picks_the_region_that_touches_the_border_least():
    blob = _centre_blob()
    model = _FixedRegions(np.stack([1 - blob, blob], -1))
    region, coverage = evaluator.border_region(model, tf.zeros([3, 32, 32, 3]))
    assert region == 1 and coverage[0] > 0.9 and coverage[1] < 0.1


def _photos(folder, n=6, side=24):
    """Bright discs on dark backgrounds, plus one broken file."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    blob = _centre_blob(side, side / 4)[..., None]
    for i in range(n):
        image = rng.integers(0, 60, size=(side, side, 3)) * (1 - blob) + 220 * blob
        Image.fromarray(image.astype(np.uint8)).save(os.path.join(folder, f"p{i}.png"))
    with open(os.path.join(folder, "broken.jpg"), "w") as f:
        f.write("not a photo")


@pytest.fixture(scope="session")
def unlabelled_run(tmp_path_factory):
    """A two-step ReDO run on a folder without masks (redo_folder.gin, smoke sizes)."""
    root = tmp_path_factory.mktemp("unlabelled")
    photos, model_dir = str(root / "photos"), str(root / "run")
    _photos(photos)
    args = ["--gin_file=gin_configs/redo_folder.gin", "--smoke", f"--model_dir={model_dir}",
            "--gin_bindings=tfseg.data.make_dataset.source=@tfseg.data.image_folder_source",
            f"--gin_bindings=tfseg.data.image_folder_source.image_dir='{photos}'"]
    result = run_module("tfseg.train", *args)
    return root, photos, model_dir, result


@pytest.mark.slow
def test_unlabelled_run_trains_on_every_photo_and_chooses_the_region_by_the_border_rule(unlabelled_run):
    _, photos, model_dir, result = unlabelled_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"data: photo folder '{photos}' (no masks)" in out
    assert "train       7 images, no masks" in out  # 6 photos + the broken file, listed
    assert "validation  none" in out and "test        none" in out
    assert "chosen by the border rule" in out
    assert "skipped as unreadable: 1 file(s)" in out and "broken.jpg" in out
    assert "no labelled test split" in out
    with open(os.path.join(model_dir, run_dir.FOREGROUND_FILE)) as f:
        record = json.load(f)
    assert record["rule"] == "border" and record["region"] in (0, 1)
    assert not os.path.exists(os.path.join(model_dir, "best"))


@pytest.mark.slow
def test_export_of_an_unlabelled_run_says_it_took_the_latest_checkpoint_and_can_invert(unlabelled_run):
    root, _, model_dir, result = unlabelled_run
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(model_dir, run_dir.FOREGROUND_FILE)) as f:
        chosen = json.load(f)["region"]
    out = run_module("tfseg.export", f"--model_dir={model_dir}", f"--export_dir={root / 'serving'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "latest: the run has no labelled validation split" in out.stdout
    assert f"foreground region {chosen} (border)" in out.stdout
    metadata = export_module.read_metadata(str(root / "serving" / "1"))
    assert metadata["foreground_region"] == chosen and metadata["foreground_rule"] == "border"
    assert metadata["checkpoint_selection"].startswith("latest")
    out = run_module("tfseg.export", f"--model_dir={model_dir}", f"--export_dir={root / 'serving'}", "--invert")
    assert out.returncode == 0, out.stderr[-3000:]
    inverted = export_module.read_metadata(str(root / "serving" / "2"))
    assert inverted["foreground_region"] == 1 - chosen and inverted["foreground_rule"] == "--invert"


@pytest.mark.slow
def test_predict_invert_gives_the_complement_mask(unlabelled_run):
    _, photos, model_dir, result = unlabelled_run
    assert result.returncode == 0, result.stderr[-3000:]
    segment, metadata = inference.load_from_run(model_dir)
    assert metadata["mask_refinement"] is not None  # redo_folder.gin refines masks by colour
    flipped = inference.inverted(segment, metadata["resolution"], metadata["square_resize"], refined=True)
    with open(os.path.join(photos, "p0.png"), "rb") as f:
        data = [f.read()]
    plain, other = segment(data), flipped(data)
    np.testing.assert_allclose(other["mask"], 1 - plain["mask"], atol=1e-6)
    png = lambda out: np.asarray(Image.open(io.BytesIO(out["mask_png_bytes"][0])), np.int32)
    # A square photo: the model saw all of it, so every pixel inverts (up to PNG rounding).
    assert np.abs(png(plain) + png(other) - 255).max() <= 1
    np.testing.assert_allclose(other["foreground_fraction"],
                               (other["mask"] >= 0.5).mean(axis=(1, 2, 3)), atol=1e-6)


@pytest.mark.slow
def test_evaluate_without_masks_prints_one_line_and_how_to_get_masks(unlabelled_run):
    _, _, model_dir, result = unlabelled_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_module("tfseg.evaluate", f"--model_dir={model_dir}")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "no masks" in error_lines[0] and "tfseg.export" in error_lines[0] and "tfseg.predict" in error_lines[0]


def test_dry_run_prints_the_data_summary(tmp_path, capsys):
    _photos(str(tmp_path / "photos"), n=3)
    assert run_train("--gin_file=gin_configs/redo_folder.gin", "--dry_run", f"--model_dir={tmp_path / 'run'}",
                     f"--gin_bindings=tfseg.data.image_folder_source.image_dir='{tmp_path / 'photos'}'") == 0
    out = capsys.readouterr().out
    assert f"# data: photo folder '{tmp_path / 'photos'}' (no masks)" in out
    assert "#   train       4 images, no masks" in out
    # Validation decodes photos until the first readable one: the broken file may or may not come first.
    assert "#   skipped as unreadable so far: 0" in out or "#   skipped as unreadable so far: 1" in out


def test_a_folder_with_no_readable_photo_stops_before_any_network_is_built(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_text("not a photo")
    (photos / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    model_dir = tmp_path / "run"
    assert run_train("--gin_file=gin_configs/redo_folder.gin", f"--model_dir={model_dir}",
                     f"--gin_bindings=tfseg.data.image_folder_source.image_dir='{photos}'") == 2
    err = capsys.readouterr().err
    assert str(photos) in err and "no readable image" in err and "a.jpg" in err and "b.png" in err
    assert not model_dir.exists()  # nothing was built or written


def test_skipped_files_are_counted_per_run_not_per_process(tmp_path, capsys):
    from tfseg.data import decode  # pylint: disable=import-outside-toplevel
    decode.record_skip("/elsewhere/earlier_run.jpg", "left over from an earlier run in this process")
    _photos(str(tmp_path / "photos"), n=3)
    assert run_train("--gin_file=gin_configs/redo_folder.gin", "--dry_run", f"--model_dir={tmp_path / 'run'}",
                     f"--gin_bindings=tfseg.data.image_folder_source.image_dir='{tmp_path / 'photos'}'") == 0
    assert "earlier_run.jpg" not in decode.skipped_files()

"""Tests for tfseg.evaluation.grids."""

import numpy as np
import pytest
from PIL import Image

from tfseg.evaluation import grids


def _column(value, batch=2, height=3, width=4):
    """A [batch, height, width, 3] uint8 column whose row r is filled with value + r."""
    col = np.zeros((batch, height, width, 3), np.uint8)
    for r in range(batch):
        col[r] = value + r
    return col


def test_images_to_uint8_maps_minus_one_to_zero_and_one_to_255():
    images = np.array([-1.0, 0.0, 1.0, 2.0], np.float32).reshape(1, 1, 4, 1)
    out = grids.images_to_uint8(images)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 3)
    # 0 -> 127.5, rounded to nearest even 128; 2 is clipped to 1.
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 128, 255, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_masks_to_uint8_is_grey_on_three_channels():
    masks = np.array([0.0, 0.25, 1.0], np.float32).reshape(1, 1, 3, 1)
    out = grids.masks_to_uint8(masks)
    assert out.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0], [64, 64, 64], [255, 255, 255]])  # 63.75 -> 64
    assert grids.masks_to_uint8(masks[..., 0]).shape == (1, 1, 3, 3)


def test_make_grid_shape_includes_padding_between_and_around_cells():
    columns = [_column(10), _column(20), _column(30)]
    grid = grids.make_grid(columns, padding=2)
    # rows: 2 * (3 + 2) + 2 = 12; columns: 3 * (4 + 2) + 2 = 20.
    assert grid.shape == (12, 20, 3) and grid.dtype == np.uint8
    assert grids.make_grid(columns, padding=0).shape == (6, 12, 3)


def test_make_grid_places_column_c_row_r_at_its_cell():
    columns = [_column(10), _column(20), _column(30)]
    grid = grids.make_grid(columns, padding=2, pad_value=7)
    # Column 1, row 1 starts at y = 2 + 1 * (3 + 2) = 7, x = 2 + 1 * (4 + 2) = 8.
    np.testing.assert_array_equal(grid[7:10, 8:12], np.full((3, 4, 3), 21, np.uint8))
    # Column 2, row 0 starts at y = 2, x = 2 + 2 * 6 = 14.
    np.testing.assert_array_equal(grid[2:5, 14:18], np.full((3, 4, 3), 30, np.uint8))
    # Border and separators (rows 5-6 between the two rows of cells) carry the pad value.
    assert (grid[0] == 7).all() and (grid[5:7] == 7).all() and (grid[:, 6:8] == 7).all()


def test_make_grid_rejects_mismatched_or_float_columns():
    with pytest.raises(ValueError):
        grids.make_grid([_column(0), _column(0, height=5)])
    with pytest.raises(ValueError):
        grids.make_grid([_column(0).astype(np.float32)])


def test_overlay_tints_only_masked_pixels():
    image = np.full((1, 1, 2, 3), 100, np.uint8)
    mask = np.array([1.0, 0.0], np.float32).reshape(1, 1, 2, 1)
    out = grids.overlay(image, mask, color=(255, 0, 0), alpha=0.25)
    # Masked: 0.75 * 100 + 0.25 * (255, 0, 0) = (138.75, 75, 75) -> (139, 75, 75).
    np.testing.assert_array_equal(out[0, 0, 0], [139, 75, 75])
    np.testing.assert_array_equal(out[0, 0, 1], [100, 100, 100])
    # alpha 1 paints the colour itself; a single image without batch axis works too.
    np.testing.assert_array_equal(grids.overlay(image[0], mask[0, ..., 0], (0, 255, 0), 1.0)[0, 0], [0, 255, 0])


def test_png_round_trip_creates_parent_directories(tmp_path):
    grid = grids.make_grid([_column(10), _column(200)])
    path = tmp_path / "snapshots" / "step_000100" / "grid.png"
    assert grids.save_png(grid, path) == path
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)


def test_tensorboard_grid_is_one_float_image_in_unit_range():
    columns = [_column(0), _column(254)]
    out = grids.tensorboard_grid(columns)
    assert out.shape == (1,) + grids.make_grid(columns).shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0], grids.make_grid(columns) / 255.0)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_labelled_grid_upscales_cells_and_writes_titles_and_row_labels():
    rng = np.random.default_rng(0)
    columns = [rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8) for _ in range(3)]
    plain = grids.labelled_grid(columns, ["a", "b", "c"], cell=64)
    labelled = grids.labelled_grid(columns, ["image", "truth", "prediction"], ["fg IoU 0.12", "fg IoU 0.99"], cell=64)
    header = max(14, 64 // 12)
    assert labelled.shape == (2 * (64 + 2) + 2 + header, 3 * (64 + 2) + 2, 3)
    # Cells are nearest-neighbour upscaled by 4: a 4x4 block of one source pixel (away from the label).
    cell = labelled[header + 2 + 66:header + 2 + 66 + 64, 2 + 66:2 + 66 + 64]
    np.testing.assert_array_equal(cell[-4:, -4:], np.broadcast_to(columns[1][1, -1, -1], (4, 4, 3)))
    # Titles and labels change pixels: the header band and the first cell's corner.
    assert (labelled[:header] != plain[:header]).any()
    assert (labelled[header + 4:header + 14, 4:40] == 0).any()
    with pytest.raises(ValueError, match="titles"):
        grids.labelled_grid(columns, ["only one"])

"""Tests of tfseg.data: sources, pre-processing, pipelines and configuration errors."""

import io
import os

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tfseg import data
from tfseg.data import augment
from tfseg.data import decode
from tfseg.data import folder
from tfseg.data import procedural
from tfseg import image_files

R = 32


@pytest.fixture(autouse=True)
def clean_state():
    gin.clear_config()
    folder.reset_skipped_files()
    yield
    gin.clear_config()


def _first(ds):
    return next(iter(ds))


# --------------------------------------------------------------------------------------------------
# Procedural data set.
# --------------------------------------------------------------------------------------------------


def test_procedural_render_is_deterministic_under_seed_and_differs_across_seeds():
    image_a, mask_a = procedural.render_example((0, 0, 5), R)
    image_b, mask_b = procedural.render_example((0, 0, 5), R)
    image_c, _ = procedural.render_example((1, 0, 5), R)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert np.abs(image_a.astype(int) - image_c.astype(int)).mean() > 5


def test_procedural_source_matches_render_example_and_repeats_exactly():
    ds = data.procedural_source("validation", R, seed=3, validation_size=40)
    first = [ex for ex in ds.as_numpy_iterator()]
    again = [ex for ex in ds.as_numpy_iterator()]
    assert len(first) == 40
    for i in (0, 17, 39):
        image, mask = procedural.render_example((3, procedural.SPLIT_IDS["validation"], i), R)
        np.testing.assert_array_equal(first[i]["image"], image)
        np.testing.assert_array_equal(first[i]["mask"], mask)
    np.testing.assert_array_equal(np.stack([e["image"] for e in first]), np.stack([e["image"] for e in again]))


def test_procedural_splits_never_share_an_example():
    n = 64
    splits = {s: np.stack([e["image"] for e in data.procedural_source(s, R, validation_size=n, test_size=n)
                           .take(n).as_numpy_iterator()]) for s in ("train", "validation", "test")}
    flat = {s: {x.tobytes() for x in imgs} for s, imgs in splits.items()}
    assert all(len(v) == n for v in flat.values())  # no duplicates within a split either
    assert not flat["train"] & flat["validation"]
    assert not flat["train"] & flat["test"]
    assert not flat["validation"] & flat["test"]


def test_procedural_object_covers_10_to_50_percent_at_several_resolutions():
    for resolution in (16, 32, 64):
        coverage = np.array([procedural.render_example((0, 0, i), resolution)[1].mean() for i in range(200)])
        assert coverage.min() >= procedural.MIN_COVERAGE, resolution
        assert coverage.max() <= procedural.MAX_COVERAGE, resolution
        assert coverage.std() > 0.05  # sizes vary, not one fixed scale


def test_procedural_mask_marks_exactly_the_object_pixels():
    for i in range(20):
        background, foreground, mask = procedural.render_layers((0, 2, i), R)
        image, mask2 = procedural.render_example((0, 2, i), R)
        np.testing.assert_array_equal(mask, mask2)
        assert set(np.unique(mask)) <= {0, 1}
        inside = mask[..., 0] == 1
        np.testing.assert_array_equal(image[~inside], background[~inside])
        np.testing.assert_array_equal(image[inside], foreground[inside])
        # The object really is drawn over the background: most object pixels differ from it.
        changed = np.any(image[inside] != background[inside], axis=-1)
        assert changed.mean() > 0.9


def test_procedural_object_and_background_colours_differ_but_not_by_a_fixed_rule():
    fg_means, bg_means = [], []
    for i in range(100):
        image, mask = procedural.render_example((0, 0, i), R)
        inside = mask[..., 0] == 1
        fg_means.append(image[inside].mean(0))
        bg_means.append(image[~inside].mean(0))
    fg_means, bg_means = np.array(fg_means), np.array(bg_means)
    assert np.median(np.linalg.norm(fg_means - bg_means, axis=1)) > 40  # typically distinct (0..255 scale)
    # No channel tells the object apart: the object is the brighter one in a given channel in
    # between 20 % and 80 % of images.
    brighter = (fg_means > bg_means).mean(0)
    assert np.all((brighter > 0.2) & (brighter < 0.8)), brighter


def test_write_png_folder_round_trips_through_image_folder_source(tmp_path):
    names = procedural.write_png_folder(str(tmp_path), "test", 6, R, seed=0)
    assert len(names) == 6
    mask_png = np.asarray(Image.open(tmp_path / "masks" / (names[0] + ".png")))
    assert set(np.unique(mask_png)) <= {0, 255}
    ds = data.image_folder_source("test", R, image_dir=str(tmp_path / "images"), mask_dir=str(tmp_path / "masks"),
                                  validation_fraction=0.0, test_fraction=0.99)
    by_image = {ex["image"].tobytes(): ex["mask"] for ex in ds.as_numpy_iterator()}
    for i in range(6):
        image, mask = procedural.render_example((0, procedural.SPLIT_IDS["test"], i), R)
        if image.tobytes() in by_image:
            np.testing.assert_array_equal(by_image[image.tobytes()], mask)
    assert len(by_image) >= 4


# --------------------------------------------------------------------------------------------------
# Pre-processing and pipeline.
# --------------------------------------------------------------------------------------------------


def _encoded_example(h=40, w=56):
    """An image whose red channel is 255 exactly where the mask is 1, and a left-right asymmetric mask."""
    mask = np.zeros((h, w, 1), np.uint8)
    mask[5:30, 3:20] = 1
    mask[10:14, 20:50] = 1
    image = np.random.default_rng(0).integers(0, 100, size=(h, w, 3)).astype(np.uint8)
    image[..., 0] = mask[..., 0] * 255
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


@pytest.mark.parametrize("random_crop", [False, True])
def test_preprocess_crops_and_flips_image_and_mask_identically(random_crop):
    example = _encoded_example()
    flipped_seen = set()
    for s in range(12):
        out = augment.preprocess(example, 24, training=True, random_crop=random_crop, flip=True,
                                 seed=tf.constant([s, 7]))
        image, mask = out["image"].numpy(), out["mask"].numpy()
        assert image.shape == (24, 24, 3) and mask.shape == (24, 24, 1)
        np.testing.assert_array_equal(image[..., 0] > 0, mask[..., 0] == 1)
        flipped_seen.add(image[..., 0].tobytes())
    assert len(flipped_seen) > 1  # the augmentation did something


def test_preprocess_eval_is_deterministic_centre_crop_in_range():
    example = _encoded_example()
    a = augment.preprocess(example, 24, training=False, random_crop=True, flip=True)
    b = augment.preprocess(example, 24, training=False, random_crop=True, flip=True)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    assert a["image"].dtype == tf.float32 and a["mask"].dtype == tf.float32
    assert -1.0 <= a["image"].numpy().min() and a["image"].numpy().max() <= 1.0
    assert set(np.unique(a["mask"].numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(a["image"].numpy()[..., 0] > 0, a["mask"].numpy()[..., 0] == 1)


def test_preprocess_random_crop_resizes_to_crop_scale_first():
    # A constant-per-column image: after a shorter-side resize to floor(1.125 * 16) = 18 the crop
    # offset can be 0, 1 or 2 columns; after a plain resize to 16 it would always be 0.
    columns = np.tile(np.arange(16, dtype=np.uint8)[None, :, None] * 16, (16, 1, 3))
    example = {"image": tf.constant(columns)}
    lefts = {float(augment.preprocess(example, 16, training=True, random_crop=True, flip=False,
                                      image_resize_method="bilinear", seed=tf.constant([s, 0]))["image"][0, 0, 0])
             for s in range(20)}
    assert len(lefts) > 1


@pytest.mark.parametrize("height,width", [(24, 24), (30, 40)])  # batched fast path, per-example path
def test_make_dataset_flips_image_and_mask_together(height, width):
    example = _encoded_example(height, width)
    source = lambda split, resolution: tf.data.Dataset.from_tensors(example).repeat(16)
    ds = data.make_dataset("train", 16, source=source, resolution=24, seed=0)
    batch = _first(ds)
    image, mask = batch["image"].numpy(), batch["mask"].numpy()
    np.testing.assert_array_equal(image[..., 0] > 0, mask[..., 0] == 1)
    assert len({m.tobytes() for m in mask}) == 2  # some examples flipped, some not


def test_make_dataset_train_batches_shapes_dtypes_and_ranges():
    ds = data.make_dataset("train", 8, source=data.procedural_source, resolution=R, random_crop=True, seed=1)
    assert ds.element_spec["image"].shape == (8, R, R, 3)
    assert ds.element_spec["mask"].shape == (8, R, R, 1)
    it = iter(ds)
    for _ in range(3):
        batch = next(it)
        image, mask = batch["image"].numpy(), batch["mask"].numpy()
        assert image.dtype == np.float32 and mask.dtype == np.float32
        assert -1.0 <= image.min() < 0 < image.max() <= 1.0
        assert set(np.unique(mask)) == {0.0, 1.0}


def test_make_dataset_eval_is_one_deterministic_pass_keeping_the_last_batch():
    gin.parse_config("tfseg.data.procedural_source.validation_size = 20")
    ds = data.make_dataset("validation", 8, source=data.procedural_source, resolution=R)
    batches = [b["image"].numpy() for b in ds]
    assert [len(b) for b in batches] == [8, 8, 4]
    again = np.concatenate([b["image"].numpy() for b in ds])
    np.testing.assert_array_equal(np.concatenate(batches), again)
    assert ds.element_spec["mask"].shape.as_list() == [None, R, R, 1]


def test_make_dataset_train_repeats_a_finite_source_forever():
    ds = data.make_dataset("train", 5, source=data.fake_source, resolution=R)
    batches = list(ds.take(4).as_numpy_iterator())  # 20 examples from an 8-example source
    assert len(batches) == 4 and all(b["image"].shape == (5, R, R, 3) for b in batches)


def test_validate_data_config_reads_the_gin_bound_source():
    gin.parse_config("""
            tfseg.data.make_dataset.source = @tfseg.data.fake_source
            tfseg.data.make_dataset.resolution = 16
    """)
    info = data.validate_data_config()
    # fake_source attaches no description: its name and cardinality stand in.
    assert info == {s: data.SplitInfo(True, True, 8, "fake_source") for s in ("train", "validation", "test")}
    assert data.dataset_has_masks("test")


def test_validate_data_config_without_source_raises_data_error():
    with pytest.raises(data.DataError, match="tfseg.data.make_dataset.source"):
        data.validate_data_config()


# --------------------------------------------------------------------------------------------------
# Image folder source.
# --------------------------------------------------------------------------------------------------


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _photo(seed, h=20, w=24):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_folder_source_skips_corrupt_files_counts_and_names_them(tmp_path):
    root = tmp_path / "photos"
    _save(str(root / "a.png"), _photo(0))
    _save(str(root / "sub" / "b.JPG"), _photo(1))
    _save(str(root / "sub" / "deeper" / "c.jpeg"), _photo(2))
    _save(str(root / "d.bmp"), _photo(3))
    full = root / "whole.jpg"
    _save(str(full), _photo(4, 64, 64))
    truncated = root / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    full.unlink()
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    (root / "readme.txt").write_text("ignored: not an image extension")

    ds = data.image_folder_source("train", R, image_dir=str(root), validation_fraction=0.0, test_fraction=0.0)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 4
    assert all(ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 3 for ex in examples)
    assert folder.skipped_count() == 3
    assert {os.path.basename(p) for p in folder.skipped_files()} == {"truncated.jpg", "empty.png", "notes.jpg"}
    # A second epoch does not double-count.
    list(ds.as_numpy_iterator())
    assert folder.skipped_count() == 3
    # The full pipeline keeps going too.
    batch = _first(data.make_dataset("train", 3, source=lambda s, r: data.image_folder_source(
        s, r, image_dir=str(root), validation_fraction=0.0, test_fraction=0.0), resolution=16))
    assert batch["image"].shape == (3, 16, 16, 3)


def test_folder_split_is_stable_when_files_are_added(tmp_path):
    files = [f"img_{i:03d}.png" for i in range(60)]
    before = {f: folder.split_of(f, 0.2, 0.2) for f in files}
    after = {f: folder.split_of(f, 0.2, 0.2) for f in files + [f"new_{i}.png" for i in range(30)]}
    assert all(after[f] == s for f, s in before.items())
    assert set(before.values()) == {"train", "validation", "test"}
    assert folder.split_of("img_000.png", 0.2, 0.2, split_seed=0) in ("train", "validation", "test")


def _mask_folder(tmp_path, mask_writer, mask_name=lambda stem: stem + ".png", n=6):
    images, masks = tmp_path / "images", tmp_path / "masks"
    truth = {}
    for i in range(n):
        stem = f"image_{i:05d}"
        _save(str(images / f"{stem}.jpg"), _photo(i))
        fg = np.zeros((20, 24), bool)
        fg[2 + i:12 + i, 3:15] = True
        mask_writer(str(masks / mask_name(stem)), fg)
        truth[stem] = fg
    return str(images), str(masks), truth


def _check_masks(ds, truth):
    """Each example's mask is the one made for its own photo: the photo is told by its pixels (the
    nearest of the `_photo(i)` that `_mask_folder` saved), so a mask paired with another photo fails."""
    examples = list(ds.as_numpy_iterator())
    assert examples
    stems = sorted(truth)
    photos = np.stack([_photo(i).astype(np.float32) for i in range(len(stems))])
    for ex in examples:
        assert ex["mask"].shape == ex["image"].shape[:2] + (1,) and ex["mask"].dtype == np.uint8
        distance = np.abs(photos - ex["image"].astype(np.float32)[None]).mean(axis=(1, 2, 3))
        own = stems[int(np.argmin(distance))]
        np.testing.assert_array_equal(ex["mask"][..., 0].astype(bool), truth[own],
                                      err_msg=f"the mask paired with {own} is another photo's")


def test_the_pairing_check_fails_on_a_swapped_pair(tmp_path):
    images, masks, truth = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    a, b = os.path.join(masks, "image_00000.png"), os.path.join(masks, "image_00001.png")
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)
    ds = data.image_folder_source("test", R, image_dir=images, mask_dir=masks, validation_fraction=0.0,
                                  test_fraction=0.99)
    with pytest.raises(AssertionError, match="is another photo's"):
        _check_masks(ds, truth)


def test_folder_source_pairs_binary_masks_by_stem(tmp_path):
    images, masks, truth = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    ds = data.image_folder_source("test", R, image_dir=images, mask_dir=masks, validation_fraction=0.0,
                                  test_fraction=0.99)
    _check_masks(ds, truth)


def test_folder_source_reads_flowers_segmim_masks(tmp_path):
    def write(path, fg):
        rgb = np.zeros(fg.shape + (3,), np.uint8)
        rgb[~fg] = (0, 0, 254)  # the blue fill is background
        rgb[fg] = (180, 90, 40)
        _save(path, rgb)
    images, masks, truth = _mask_folder(tmp_path, write, lambda stem: stem.replace("image_", "segmim_") + ".png")
    ds = data.image_folder_source("test", R, image_dir=images, mask_dir=masks, mask_format="flowers",
                                  validation_fraction=0.0, test_fraction=0.99)
    _check_masks(ds, truth)


def test_folder_source_reads_lfw_part_masks_as_one_minus_blue(tmp_path):
    def write(path, fg):
        rgb = np.zeros(fg.shape + (3,), np.uint8)
        rgb[~fg] = (0, 0, 255)
        rgb[fg] = (0, 255, 0)  # face
        rgb[fg & (np.arange(fg.shape[0])[:, None] < 6)] = (255, 0, 0)  # hair is foreground too
        Image.fromarray(rgb).save(path, format="PPM")
    os.makedirs(tmp_path / "masks", exist_ok=True)
    images, masks, truth = _mask_folder(tmp_path, write, lambda stem: stem + ".ppm")
    ds = data.image_folder_source("validation", R, image_dir=images, mask_dir=masks, mask_format="lfw",
                                  validation_fraction=0.99, test_fraction=0.0)
    _check_masks(ds, truth)


def test_folder_trains_on_every_photo_and_scores_the_labelled_ones(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    _save(os.path.join(images, "unlabelled", "extra.png"), _photo(99))
    splits = folder.assign_splits(images, masks)
    assert len(splits["train"]) == 7  # all photos, labelled or not
    held_out = splits["validation"] + splits["test"]
    assert sorted(p for p, _ in held_out) == sorted(p for p, m in splits["train"] if m is not None)
    assert not set(splits["validation"]) & set(splits["test"])
    assert all(m is not None for _, m in held_out)
    train = data.image_folder_source("train", R, image_dir=images, mask_dir=masks)
    assert "mask" not in train.element_spec  # the unlabelled photo has none
    assert len(list(train.as_numpy_iterator())) == 7
    labelled = sum(len(list(data.image_folder_source(s, R, image_dir=images, mask_dir=masks).as_numpy_iterator()))
                   for s in ("validation", "test"))
    assert labelled == 6


def test_folder_can_hold_out_the_evaluation_photos_as_the_paper_does(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    _save(os.path.join(images, "unlabelled", "extra.png"), _photo(99))
    splits = folder.assign_splits(images, masks, train_on_all_images=False)
    assert [os.path.basename(p) for p, _ in splits["train"]] == ["extra.png"]
    assert len(splits["validation"]) + len(splits["test"]) == 6


def test_published_split_lists_replace_the_hash_split(tmp_path):
    images, masks, _ = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    _save(os.path.join(images, "unlabelled", "extra.png"), _photo(99))
    (tmp_path / "val.txt").write_text("image_00000.jpg\nimage_00001\n\n")  # path, path without extension
    (tmp_path / "test.txt").write_text("image_00002\nimage_00003\n")          # or stem
    lists = {"validation": str(tmp_path / "val.txt"), "test": str(tmp_path / "test.txt")}
    splits = folder.assign_splits(images, masks, split_lists=lists)
    name = lambda pairs: sorted(os.path.basename(p) for p, _ in pairs)  # noqa: E731
    assert name(splits["validation"]) == ["image_00000.jpg", "image_00001.jpg"]
    assert name(splits["test"]) == ["image_00002.jpg", "image_00003.jpg"]
    assert len(splits["train"]) == 7  # every photo trains by default
    held_out = folder.assign_splits(images, masks, train_on_all_images=False, split_lists=lists)
    assert name(held_out["train"]) == ["extra.png", "image_00004.jpg", "image_00005.jpg"]
    ds = data.image_folder_source("test", R, image_dir=images, mask_dir=masks, split_lists=lists)
    assert len(list(ds.as_numpy_iterator())) == 2


@pytest.mark.parametrize("lines,message", [
    ("image_00000\nno_such_photo\n", "1 of the 2 lines of the test split list .* name no image in image_dir "
                                        "\\(e.g. 'no_such_photo'\\)"),
    ("image_00000\nextra\n", "evaluation split lists have no mask .* \\(e.g. 'unlabelled/extra.png'\\)"),
    ("image_00005\n", "'image_00005.jpg' is listed in both the validation and the test split lists"),
])
def test_a_wrong_split_list_fails_naming_the_line_and_the_fix(tmp_path, lines, message):
    images, masks, _ = _mask_folder(tmp_path, lambda p, fg: _save(p, fg.astype(np.uint8) * 255))
    _save(os.path.join(images, "unlabelled", "extra.png"), _photo(99))
    (tmp_path / "val.txt").write_text("image_00005\n")
    (tmp_path / "test.txt").write_text(lines)
    with pytest.raises(data.DataError, match=message):
        folder.assign_splits(images, masks, split_lists={"validation": str(tmp_path / "val.txt"),
                                                         "test": str(tmp_path / "test.txt")})
    with pytest.raises(data.DataError, match="split_lists names split 'val'"):
        folder.assign_splits(images, masks, split_lists={"val": str(tmp_path / "val.txt")})


def test_folder_without_masks_is_all_train_and_has_no_evaluation_split(tmp_path):
    for i in range(5):
        _save(str(tmp_path / f"p{i}.jpg"), _photo(i))
    train = data.image_folder_source("train", R, image_dir=str(tmp_path))
    assert len(list(train.as_numpy_iterator())) == 5
    for split in ("validation", "test"):
        with pytest.raises(data.SplitUnavailableError, match="no mask_dir"):
            data.image_folder_source(split, R, image_dir=str(tmp_path))
    gin.parse_config(f"""
            tfseg.data.make_dataset.source = @tfseg.data.image_folder_source
            tfseg.data.image_folder_source.image_dir = '{tmp_path}'
    """)
    info = data.validate_data_config()
    assert info["train"].images == 5 and not info["train"].has_masks
    assert not info["validation"].available and not info["test"].available
    summary = data.format_data_summary(info)
    assert str(tmp_path) in summary and "5 images, no masks" in summary
    assert "skipped as unreadable so far: 0" in summary


def test_folder_with_no_readable_photo_fails_validation_naming_the_files(tmp_path):
    (tmp_path / "a.jpg").write_text("not a photo")
    (tmp_path / "b.png").write_bytes(b"")
    gin.parse_config(f"""
            tfseg.data.make_dataset.source = @tfseg.data.image_folder_source
            tfseg.data.image_folder_source.image_dir = '{tmp_path}'
    """)
    with pytest.raises(data.DataError) as e:
        data.validate_data_config()
    message = str(e.value)
    assert str(tmp_path) in message and "no readable image" in message
    assert "a.jpg" in message and "b.png" in message and "empty file" in message


def test_folder_listing_follows_a_link_loop_once(tmp_path):
    root = tmp_path / "photos"
    _save(str(root / "a.png"), _photo(0))
    _save(str(root / "sub" / "b.png"), _photo(1))
    os.symlink(root, root / "sub" / "loop")  # photos/sub/loop -> photos
    os.symlink(root / "sub", root / "again")  # a second way into sub/
    assert image_files.list_images(str(root)) == ["a.png", "sub/b.png"]


def test_photo_listing_takes_every_decodable_extension_in_any_case_and_nothing_else(tmp_path):
    for name in ["a.JPG", "b.jpeg", "c.webp", "d.tiff", "e.Gif", "notes.txt", "model.gin", "noext"]:
        (tmp_path / name).write_bytes(b"x")
    assert image_files.list_images(str(tmp_path)) == ["a.JPG", "b.jpeg", "c.webp", "d.tiff", "e.Gif"]


def test_decode_reads_16_bit_grey_webp_and_gif(tmp_path):
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    rgb = decode.decode_rgb(path.read_bytes())
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))  # not clipped to white
    photo = _photo(5, 16, 16)
    for fmt in ("WEBP", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        out = decode.decode_rgb(buffer.getvalue())
        assert out.shape == (16, 16, 3)
        if fmt == "WEBP":
            np.testing.assert_array_equal(out, photo)
    with pytest.raises(decode.UnreadableImage, match="empty"):
        decode.decode_rgb(b"")


def test_folder_source_errors_name_the_path_and_the_gin_binding(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(data.DataError) as e:
        data.image_folder_source("train", R, image_dir=missing)
    assert missing in str(e.value) and "tfseg.data.image_folder_source.image_dir" in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(data.DataError) as e:
        data.image_folder_source("train", R, image_dir=str(empty))
    assert str(empty) in str(e.value) and "tfseg.data.image_folder_source.image_dir" in str(e.value)

    photos = tmp_path / "photos"
    _save(str(photos / "a.png"), _photo(0))
    with pytest.raises(data.DataError) as e:
        data.image_folder_source("train", R, image_dir=str(photos), mask_dir=missing)
    assert missing in str(e.value) and "tfseg.data.image_folder_source.mask_dir" in str(e.value)


def test_folder_source_error_is_raised_through_gin_and_make_dataset(tmp_path):
    gin.parse_config(f"""
            tfseg.data.make_dataset.source = @tfseg.data.image_folder_source
            tfseg.data.image_folder_source.image_dir = '{tmp_path / "missing"}'
    """)
    with pytest.raises(data.DataError, match="does not exist"):
        data.validate_data_config()


# --------------------------------------------------------------------------------------------------
# TFDS sources (offline, through tfds.testing.mock_data).
# --------------------------------------------------------------------------------------------------


def test_tfds_caltech_birds_yields_images_with_binary_masks(tmp_path):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    with tfds.testing.mock_data(num_examples=3):
        for split in ("train", "validation", "test"):
            ds = data.tfds_source(split, R, name="caltech_birds2011", data_dir=str(tmp_path))
            assert set(ds.element_spec) == {"image", "mask"}
            for ex in ds.as_numpy_iterator():
                assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 3
                assert ex["mask"].shape == ex["image"].shape[:2] + (1,)
                assert set(np.unique(ex["mask"])) <= {0, 1}
        batch = _first(data.make_dataset("test", 2, source=lambda s, r: data.tfds_source(
            s, r, name="caltech_birds2011", data_dir=str(tmp_path)), resolution=16))
        assert batch["image"].shape == (2, 16, 16, 3) and batch["mask"].shape == (2, 16, 16, 1)


def test_tfds_unknown_name_raises_data_error(tmp_path):
    with pytest.raises(data.DataError, match="tfseg.data.tfds_source.name"):
        data.tfds_source("train", R, name="not_a_data_set_name", data_dir=str(tmp_path))


def test_the_data_summary_counts_the_procedural_evaluation_splits():
    gin.parse_config("""
            tfseg.data.make_dataset.source = @tfseg.data.procedural_source
            tfseg.data.procedural_source.validation_size = 40
    """)
    summary = data.format_data_summary(data.validate_data_config())
    assert "data: the embedded procedural data set" in summary
    assert "train       an unbounded stream of images, with masks" in summary
    assert "validation  40 images, with masks" in summary and "test        512 images, with masks" in summary


def test_procedural_objects_are_anywhere_so_no_constant_mask_fits():
    scores = procedural.constant_mask_scores("test", resolution=32, num_images=256)
    assert max(scores.values()) <= 0.35, scores
    _, masks = procedural.render_batch(0, procedural.SPLIT_IDS["test"], np.arange(256), 32)
    masks = masks[..., 0].astype(bool)
    on_border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert 0.2 < on_border.mean() < 0.9  # many objects are cut by the border, not all
    rows = np.array([np.nonzero(m.any(1))[0].mean() for m in masks])
    assert rows.std() > 5  # centres spread over the image, not held near the middle


def test_procedural_background_holds_distractor_shapes_the_mask_leaves_out(monkeypatch):
    with_distractors = procedural.render_layers((0, 2, 5), 64)
    monkeypatch.setattr(procedural, "_DISTRACTORS", (0, 0))
    without = procedural.render_layers((0, 2, 5), 64)
    np.testing.assert_array_equal(with_distractors[2], without[2])  # the same object and mask
    np.testing.assert_array_equal(with_distractors[1], without[1])
    changed = np.any(with_distractors[0] != without[0], axis=-1)
    assert 0.005 < changed.mean() < 0.1  # shapes of 1-3 % of the image each, in the background layer

"""A source reading any folder of photos, with an optional folder of ground-truth masks.

Without masks, every readable photo trains and there is no validation or test split: nothing could
score one. With a mask folder, the labelled photos are spread over validation and test by a hash of
each one's path relative to ``image_dir`` (and ``split_seed``), so adding or removing files never moves
the other files between splits; by default every photo, labelled or not, also trains (no method
reads a mask while training, and a user wants all their photos used).

Photos are decoded by `tfseg.data.decode` (JPEG, PNG of any depth, WebP, GIF, ...). Unreadable files
are skipped, counted and recorded there (``decode.skipped_files()``); a file is recorded when the
pipeline reaches it (files are decoded lazily, while iterating).

Mask formats (``mask_format``), each giving foreground = 1:

* "binary": first channel > 127 (CUB ``segmentations/*.png``, masks written by
  ``procedural.write_png_folder``).
* "flowers": Oxford Flowers 102 ``segmim``: background is R == 0 or G == 0 or B == 254 (the blue
  fill), foreground the rest. Mask names replace the ``image_`` prefix by ``segmim_`` unless
  ``mask_stem_replace`` says otherwise.
* "lfw": LFW part labels (``parts_lfw_funneled_gt_images/*.ppm``): foreground = 1 - blue channel
  (hair and face are foreground).
"""

from __future__ import annotations

import hashlib
import io
import os

import gin
import numpy as np
from PIL import Image
import tensorflow as tf

from tfseg.data import decode
from tfseg.data import pipeline
from tfseg.data.pipeline import SPLITS
from tfseg.errors import DataError, SplitUnavailableError
from tfseg.image_files import IMAGE_EXTENSIONS, list_images

MASK_FORMATS = ("binary", "flowers", "lfw")

# Kept here for callers of the folder source; the record itself lives in tfseg.data.decode.
skipped_files = decode.skipped_files
skipped_count = decode.skipped_count
reset_skipped_files = decode.reset_skipped_files


# --------------------------------------------------------------------------------------------------
# Decoding (runs inside tf.numpy_function).
# --------------------------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _mask_array(image: Image.Image, mask_format: str) -> np.ndarray:
    """Decoded mask file -> bool [h, w] foreground."""
    if mask_format == "binary":
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        arr = np.asarray(image)
        return (arr if arr.ndim == 2 else arr[..., 0]) > 127
    rgb = np.asarray(image.convert("RGB"))
    if mask_format == "flowers":
        background = (rgb[..., 0] == 0) | (rgb[..., 1] == 0) | (rgb[..., 2] == 254)
        return ~background
    return rgb[..., 2] <= 127  # lfw: foreground = 1 - blue


def _load(path: bytes, mask_path: bytes, mask_format: str, with_mask: bool):
    """Returns (image uint8 [h, w, 3], mask uint8 [h, w, 1], ok) for one file pair; ok=False skips it."""
    path, mask_path = path.decode(), mask_path.decode()
    no_mask = np.zeros((1, 1, 1), np.uint8)
    try:
        rgb, ok = decode.decode_or_skip(_read(path), path)
    except OSError as e:  # vanished or unreadable file
        decode.record_skip(path, f"{type(e).__name__}: {e}")
        rgb, ok = np.zeros((1, 1, 3), np.uint8), False
    if not ok or not with_mask:
        return rgb, no_mask, ok
    try:
        mask_image = Image.open(io.BytesIO(_read(mask_path)))
        mask_image.load()
        if mask_image.size != (rgb.shape[1], rgb.shape[0]):
            # Nearest keeps the mask binary; sizes only differ in hand-made folders.
            mask_image = mask_image.resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST)
        mask = _mask_array(mask_image, mask_format)
    except Exception as e:  # pylint: disable=broad-except
        decode.record_skip(mask_path, f"{type(e).__name__}: {e}")
        return np.zeros((1, 1, 3), np.uint8), no_mask, False
    return rgb, mask[..., None].astype(np.uint8), True


# --------------------------------------------------------------------------------------------------
# Listing and splitting (runs at call time).
# --------------------------------------------------------------------------------------------------


def split_of(relative_path: str, validation_fraction: float, test_fraction: float, split_seed: int = 0) -> str:
    """The split of one file: a function of its relative path and `split_seed` only."""
    digest = hashlib.sha1(f"{split_seed}/{relative_path}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"


def _mask_lookup(mask_dir: str, mask_files: list[str], replace: tuple[str, str] | None):
    """Returns a function: image relative path -> mask path or None."""
    by_rel_stem, by_stem = {}, {}
    for rel in mask_files:
        rel_stem = os.path.splitext(rel)[0]
        by_rel_stem.setdefault(rel_stem, rel)
        stem = os.path.basename(rel_stem)
        # A bare stem present in two sub-folders is ambiguous: only an exact relative match may use it.
        by_stem[stem] = None if (stem in by_stem and by_stem[stem] != rel) else rel

    def lookup(image_rel: str) -> str | None:
        rel_stem = os.path.splitext(image_rel)[0]
        folder, stem = os.path.split(rel_stem)
        if replace:
            stem = stem.replace(replace[0], replace[1], 1)
        rel = by_rel_stem.get(f"{folder}/{stem}" if folder else stem) or by_stem.get(stem)
        return None if rel is None else os.path.join(mask_dir, rel)

    return lookup


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction <= 1):
        raise DataError(f"validation_fraction={validation_fraction} and test_fraction={test_fraction} must be "
                        ">= 0 and sum to at most 1. Fix the gin bindings "
                        "tfseg.data.image_folder_source.validation_fraction / .test_fraction.")


def read_split_lists(split_lists: dict[str, str], files: list[str]) -> dict[str, str]:
    """`{relative image path: split}` from published split files, `{split: path of a text file}`.

    Each non-empty line of a file names one image by its path relative to image_dir, that path
    without its extension, or its file stem (the forms published split lists use).

    Raises:
        DataError: an unknown split, an unreadable file, a line that names no image (the first few
            are listed), or an image listed in two splits.
    """
    by_name = {}
    for rel in files:
        for name in (rel, os.path.splitext(rel)[0], os.path.splitext(os.path.basename(rel))[0]):
            by_name.setdefault(name, rel)
    assigned = {}
    for split, path in split_lists.items():
        if split not in SPLITS:
            raise DataError(f"tfseg.data.image_folder_source.split_lists names split {split!r}; splits are {SPLITS}.")
        try:
            with tf.io.gfile.GFile(path) as f:
                names = [line.strip() for line in f if line.strip()]
        except tf.errors.OpError as e:
            raise DataError(f"Cannot read the {split} split list {path!r} ({e.message}). Fix the gin binding "
                            "tfseg.data.image_folder_source.split_lists.") from e
        unknown = [name for name in names if name.replace("\\", "/") not in by_name]
        if unknown:
            raise DataError(f"{len(unknown)} of the {len(names)} lines of the {split} split list {path!r} name no "
                            f"image in image_dir (e.g. {', '.join(map(repr, unknown[:3]))}); lines are paths "
                            "relative to image_dir, with or without extension, or file stems.")
        for name in names:
            rel = by_name[name.replace("\\", "/")]
            if assigned.setdefault(rel, split) != split:
                raise DataError(f"{rel!r} is listed in both the {assigned[rel]} and the {split} split lists.")
    return assigned


def assign_splits(image_dir: str, mask_dir: str | None = None, validation_fraction: float = 0.5,
                  test_fraction: float = 0.5, split_seed: int = 0, mask_format: str = "binary",
                  mask_stem_replace: tuple[str, str] | None = None, train_on_all_images: bool = True,
                  split_lists: dict[str, str] | None = None) -> dict[str, list[tuple[str, str | None]]]:
    """The photos of each split: `{split: [(image path, mask path or None), ...]}`, sorted by path.

    Without `mask_dir`, every photo is in "train" and the evaluation splits are empty. With it, each
    labelled photo goes to "validation" with probability `validation_fraction`, to "test" with
    `test_fraction` (a hash of its relative path decides), and "train" holds every photo when
    `train_on_all_images`, else the photos in neither evaluation split. With `split_lists`
    (`read_split_lists`: published split files, e.g. the ReDO authors'), the lists decide instead:
    listed photos go to their split (an evaluation split's photos must have masks), unlisted ones to
    "train" (or nowhere, when a "train" list is given and `train_on_all_images` is False). Used by
    `image_folder_source` and by `tools/prepare_data.py`, so both split a folder the same way.

    Raises:
        DataError: a missing or empty `image_dir`, a missing `mask_dir` or one with no matching masks,
            invalid fractions or format.
    """
    if image_dir is None or not tf.io.gfile.exists(image_dir):
        raise DataError(f"image_dir {image_dir!r} does not exist. Set the gin binding "
                        "tfseg.data.image_folder_source.image_dir = '/path/to/photos' to a folder of photos.")
    if not tf.io.gfile.isdir(image_dir):
        raise DataError(f"image_dir {image_dir!r} is a file, not a folder. Set the gin binding "
                        "tfseg.data.image_folder_source.image_dir to the folder that holds the images.")
    if mask_format not in MASK_FORMATS:
        raise DataError(f"mask_format {mask_format!r} is not one of {MASK_FORMATS}. "
                        "Fix the gin binding tfseg.data.image_folder_source.mask_format.")
    _check_fractions(validation_fraction, test_fraction)
    files = list_images(image_dir)
    if not files:
        raise DataError(f"image_dir {image_dir!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}, searched "
                        "recursively). Set the gin binding tfseg.data.image_folder_source.image_dir to a folder of "
                        "photos.")
    masks_of = {}
    if mask_dir is not None:
        if not tf.io.gfile.isdir(mask_dir):
            raise DataError(f"mask_dir {mask_dir!r} does not exist. Set the gin binding "
                            "tfseg.data.image_folder_source.mask_dir = '/path/to/masks' to a folder of masks "
                            "named like the images, or to None to train without masks.")
        if mask_stem_replace is None and mask_format == "flowers":
            mask_stem_replace = ("image_", "segmim_")
        lookup = _mask_lookup(mask_dir, list_images(mask_dir), mask_stem_replace)
        masks_of = {rel: lookup(rel) for rel in files}
        masks_of = {rel: path for rel, path in masks_of.items() if path is not None}
        if not masks_of:
            raise DataError(f"None of the {len(files)} images in image_dir {image_dir!r} has a mask in mask_dir "
                            f"{mask_dir!r} (matched by relative path or file stem, mask_stem_replace="
                            f"{mask_stem_replace}). Check the gin bindings tfseg.data.image_folder_source.mask_dir "
                            "and .mask_stem_replace.")
    listed = read_split_lists(split_lists, files) if split_lists else None
    if listed is not None:
        unlabelled = [rel for rel, split in listed.items() if split != "train" and rel not in masks_of]
        if unlabelled:
            raise DataError(f"{len(unlabelled)} photo(s) of the evaluation split lists have no mask in mask_dir "
                            f"{mask_dir!r} (e.g. {unlabelled[0]!r}); validation and test photos need masks.")
    splits = {split: [] for split in SPLITS}
    for rel in files:
        path = os.path.join(image_dir, rel)
        if listed is not None:
            held_out = listed.get(rel, "train")
            if held_out == "train" and "train" in split_lists and rel not in listed and not train_on_all_images:
                continue  # a train list was given and this photo is in none of the lists
        else:
            held_out = (split_of(rel, validation_fraction, test_fraction, split_seed)
                        if rel in masks_of else "train")
        if held_out != "train":
            splits[held_out].append((path, masks_of[rel]))
        if held_out == "train" or train_on_all_images:
            splits["train"].append((path, masks_of.get(rel)))
    return splits


def describe_folder(image_dir: str, mask_dir: str | None) -> str:
    """How the data summary names a folder source."""
    return f"photo folder {image_dir!r}" + (f" with masks from {mask_dir!r}" if mask_dir else " (no masks)")


class _Loader:
    """The per-file decode function of one folder source (a class, not a lambda: AutoGraph skips it)."""

    def __init__(self, mask_format: str, with_mask: bool):
        self.mask_format, self.with_mask = mask_format, with_mask

    def __call__(self, path, mask_path):
        return _load(path, mask_path, self.mask_format, self.with_mask)


@gin.configurable(module="tfseg.data")
def image_folder_source(split: str, resolution: int, image_dir: str | None = None, mask_dir: str | None = None,
                        validation_fraction: float = 0.5, test_fraction: float = 0.5, split_seed: int = 0,
                        mask_format: str = "binary", mask_stem_replace: tuple[str, str] | None = None,
                        train_on_all_images: bool = True, split_lists: dict[str, str] | None = None) -> tf.data.Dataset:
    """Photos from a folder (searched recursively), with masks matched by file name.

    See `assign_splits` for which photo lands in which split. Without `mask_dir` there is only a
    "train" split: a folder of photos without masks could never score a validation or test split.

    Args:
        split: "train", "validation" or "test". Train files are read in a fresh random order each epoch
            (seeded by the global TF seed); evaluation files in sorted path order.
        resolution: unused (images are resized by `make_dataset`); part of the source signature.
        image_dir: root folder of photos (.jpg .png .webp .gif .bmp ...; extension case ignored).
        mask_dir: folder of masks named like the images (same relative path or same file stem, any image
            extension), or None.
        validation_fraction: share of the *labelled* photos in "validation".
        test_fraction: share of the labelled photos in "test".
        split_seed: changes the hash, hence the split assignment.
        mask_format: "binary", "flowers" or "lfw"; see the module docstring.
        mask_stem_replace: `(old, new)` applied once to an image's file stem to get its mask's stem;
            defaults to `("image_", "segmim_")` for "flowers", no change otherwise.
        train_on_all_images: "train" holds every photo, the labelled validation and test photos too
            (their masks are never read in training). False holds them out, as ReDO's paper does.
        split_lists: `{split: text file}` of published split lists (one image per line; see
            `read_split_lists`), e.g. `{'validation': 'splits/val.txt', 'test': 'splits/test.txt'}`;
            they replace the hash split (the fractions and `split_seed` are then unused).

    Returns:
        Unbatched `{"image": uint8 [h, w, 3]}` plus `"mask": uint8 [h, w, 1] in {0, 1}` on evaluation
        splits, and on "train" when every train image has a mask. Unreadable files are skipped and
        recorded (see `tfseg.data.decode.skipped_files`).

    Raises:
        DataError: at call time, see `assign_splits`. `SplitUnavailableError` when `split` has no image.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    del resolution  # Resizing happens in make_dataset, after decoding.
    chosen = assign_splits(image_dir, mask_dir, validation_fraction, test_fraction, split_seed, mask_format,
                           mask_stem_replace, train_on_all_images, split_lists)[split]
    if not chosen:
        why = ("there is no mask_dir, so no photo could be scored; train only" if mask_dir is None else
               f"validation_fraction={validation_fraction}, test_fraction={test_fraction}: adjust "
               "tfseg.data.image_folder_source.validation_fraction / .test_fraction or add masks")
        raise SplitUnavailableError(f"Split {split!r} of image_dir {image_dir!r} is empty ({why}).")
    with_mask = all(mask is not None for _, mask in chosen)
    paths = [path for path, _ in chosen]
    mask_paths = [mask or "" for _, mask in chosen]
    ds = tf.data.Dataset.from_tensor_slices((paths, mask_paths))
    if split == "train":
        # Shuffling file names is cheap; shuffling decoded photos would need a huge buffer.
        ds = ds.shuffle(len(paths), reshuffle_each_iteration=True)
    loader = _Loader(mask_format, with_mask)

    def load(path, mask_path):
        image, mask, ok = tf.numpy_function(loader, [path, mask_path], [tf.uint8, tf.uint8, tf.bool],
                                            stateful=True)  # It records skipped files.
        image.set_shape([None, None, 3])
        mask.set_shape([None, None, 1])
        ok.set_shape([])
        example = {"image": image, "mask": mask} if with_mask else {"image": image}
        return example, ok

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=split != "train")
    ds = pipeline.keep_decoded(ds)
    return pipeline.describe(ds, describe_folder(image_dir, mask_dir), len(chosen),
                             with_mask)


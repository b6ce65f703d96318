"""A source reading any folder of photos, with an optional folder of ground-truth masks.

Splits are assigned by a hash of each image's path relative to ``image_dir`` (and ``split_seed``), so
adding or removing files never moves the other files between splits.

Unreadable files are a fact of life in scraped photo folders. A truncated JPEG, a zero-byte file or a
text file with an image extension is *skipped* with an ``absl.logging`` warning (once per file) and
recorded; it never stops training. Inspect the record afterwards with::

    from tfseg.data import folder
    folder.skipped_count()   # number of distinct files skipped so far in this process
    folder.skipped_files()   # {path: reason}, in the order they were met
    folder.reset_skipped_files()

The record is process-wide and cumulative over all folder sources, and a file is recorded when the
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
import threading

from absl import logging
import gin
import numpy as np
from PIL import Image
import tensorflow as tf

from tfseg.data.pipeline import DataError, SPLITS, SplitUnavailableError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")
MASK_FORMATS = ("binary", "flowers", "lfw")

_skip_lock = threading.Lock()
_skipped: dict[str, str] = {}


def skipped_files() -> dict[str, str]:
    """Files skipped as unreadable so far in this process: `{path: reason}`, in the order met."""
    with _skip_lock:
        return dict(_skipped)


def skipped_count() -> int:
    """Number of distinct files skipped as unreadable so far in this process."""
    with _skip_lock:
        return len(_skipped)


def reset_skipped_files() -> None:
    """Forgets the skipped-file record (e.g. between evaluations)."""
    with _skip_lock:
        _skipped.clear()


def _record_skip(path: str, reason: str) -> None:
    with _skip_lock:
        first_time = path not in _skipped
        _skipped.setdefault(path, reason)
    # Training repeats the file list forever; warn once per file, not once per epoch.
    if first_time:
        logging.warning("Skipping unreadable file %s (%s).", path, reason)


# --------------------------------------------------------------------------------------------------
# Decoding (runs inside tf.numpy_function).
# --------------------------------------------------------------------------------------------------


def _open(path: str) -> Image.Image:
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if not data:
        raise OSError("empty file")
    image = Image.open(io.BytesIO(data))
    image.load()  # Decodes now, so truncation raises here and not later.
    return image


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
    empty = (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 1), np.uint8), False)
    try:
        image = _open(path)
        rgb = np.asarray(image.convert("RGB"))
    except Exception as e:  # pylint: disable=broad-except
        # PIL signals bad files with OSError, SyntaxError, ValueError, DecompressionBombError, ...: all mean "skip".
        _record_skip(path, f"{type(e).__name__}: {e}")
        return empty
    if not with_mask:
        return rgb, empty[1], True
    try:
        mask_image = _open(mask_path)
        if mask_image.size != image.size:
            # Nearest keeps the mask binary; sizes only differ in hand-made folders.
            mask_image = mask_image.resize(image.size, Image.NEAREST)
        mask = _mask_array(mask_image, mask_format)
    except Exception as e:  # pylint: disable=broad-except
        _record_skip(mask_path, f"{type(e).__name__}: {e}")
        return empty
    return rgb, mask[..., None].astype(np.uint8), True


# --------------------------------------------------------------------------------------------------
# Listing and splitting (runs at call time).
# --------------------------------------------------------------------------------------------------


def _list_images(root: str) -> list[str]:
    """Relative posix paths of all image files under `root`, recursively, sorted."""
    found = []
    for dirpath, _, files in tf.io.gfile.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


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


@gin.configurable(module="tfseg.data")
def image_folder_source(split: str, resolution: int, image_dir: str = gin.REQUIRED, mask_dir: str | None = None,
                        validation_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0,
                        mask_format: str = "binary",
                        mask_stem_replace: tuple[str, str] | None = None) -> tf.data.Dataset:
    """Photos from a folder (searched recursively), with masks matched by file name.

    Each image goes to "validation" with probability `validation_fraction`, to "test" with
    `test_fraction`, else to "train", decided by a hash of its relative path. With `mask_dir`, an
    image without a mask file always goes to "train" (it cannot be scored), so e.g. LFW's labelled
    subset can be spread over validation/test with `validation_fraction=0.45, test_fraction=0.55`.

    Args:
        split: "train", "validation" or "test". Train files are read in a fresh random order each epoch
            (seeded by the global TF seed); evaluation files in sorted path order.
        resolution: unused (images are resized by `make_dataset`); part of the source signature.
        image_dir: root folder of .jpg/.jpeg/.png/.bmp/.ppm files (extension case ignored).
        mask_dir: folder of masks named like the images (same relative path or same file stem, any image
            extension), or None.
        validation_fraction: share of images in "validation".
        test_fraction: share of images in "test".
        split_seed: changes the hash, hence the split assignment.
        mask_format: "binary", "flowers" or "lfw"; see the module docstring.
        mask_stem_replace: `(old, new)` applied once to an image's file stem to get its mask's stem;
            defaults to `("image_", "segmim_")` for "flowers", no change otherwise.

    Returns:
        Unbatched `{"image": uint8 [h, w, 3]}` plus `"mask": uint8 [h, w, 1] in {0, 1}` on evaluation
        splits when `mask_dir` is set, and on "train" when every train image has a mask. Unreadable files
        are skipped and recorded (see `skipped_files`).

    Raises:
        DataError: at call time, for a missing or empty `image_dir`, a missing `mask_dir` or one with no
            matching masks, or invalid fractions or format. `SplitUnavailableError` when `split` has no
            image.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    del resolution  # Resizing happens in make_dataset, after decoding.
    if image_dir is None or not tf.io.gfile.exists(image_dir):
        raise DataError(f"image_dir {image_dir!r} does not exist. Set the gin binding "
                        "tfseg.data.image_folder_source.image_dir = '/path/to/photos' to a folder of JPEG/PNG images.")
    if not tf.io.gfile.isdir(image_dir):
        raise DataError(f"image_dir {image_dir!r} is a file, not a folder. Set the gin binding "
                        "tfseg.data.image_folder_source.image_dir to the folder that holds the images.")
    if mask_format not in MASK_FORMATS:
        raise DataError(f"mask_format {mask_format!r} is not one of {MASK_FORMATS}. "
                        "Fix the gin binding tfseg.data.image_folder_source.mask_format.")
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction < 1):
        raise DataError(f"validation_fraction={validation_fraction} and test_fraction={test_fraction} must be "
                        ">= 0 and sum to less than 1 (train needs images). Fix the gin bindings "
                        "tfseg.data.image_folder_source.validation_fraction / .test_fraction.")
    files = _list_images(image_dir)
    if not files:
        raise DataError(f"image_dir {image_dir!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}, searched "
                        "recursively). Set the gin binding tfseg.data.image_folder_source.image_dir to a folder of "
                        "JPEG/PNG images.")

    masks_of = {}
    if mask_dir is not None:
        if not tf.io.gfile.isdir(mask_dir):
            raise DataError(f"mask_dir {mask_dir!r} does not exist. Set the gin binding "
                            "tfseg.data.image_folder_source.mask_dir = '/path/to/masks' to a folder of masks "
                            "named like the images, or to None to train without masks.")
        if mask_stem_replace is None and mask_format == "flowers":
            mask_stem_replace = ("image_", "segmim_")
        lookup = _mask_lookup(mask_dir, _list_images(mask_dir), mask_stem_replace)
        masks_of = {rel: lookup(rel) for rel in files}
        masks_of = {rel: path for rel, path in masks_of.items() if path is not None}
        if not masks_of:
            raise DataError(f"None of the {len(files)} images in image_dir {image_dir!r} has a mask in mask_dir "
                            f"{mask_dir!r} (matched by relative path or file stem, mask_stem_replace="
                            f"{mask_stem_replace}). Check the gin bindings tfseg.data.image_folder_source.mask_dir "
                            "and .mask_stem_replace.")

    def assigned(rel):
        if mask_dir is not None and rel not in masks_of:
            return "train"
        return split_of(rel, validation_fraction, test_fraction, split_seed)

    chosen = [rel for rel in files if assigned(rel) == split]
    if not chosen:
        raise SplitUnavailableError(
            f"Split {split!r} of image_dir {image_dir!r} is empty ({len(files)} images, validation_fraction="
            f"{validation_fraction}, test_fraction={test_fraction}"
            f"{', ' + str(len(masks_of)) + ' with masks' if mask_dir is not None else ''}). Adjust "
            f"tfseg.data.image_folder_source.validation_fraction / .test_fraction or add images.")
    with_mask = mask_dir is not None and all(rel in masks_of for rel in chosen)

    paths = [os.path.join(image_dir, rel) for rel in chosen]
    mask_paths = [masks_of.get(rel, "") for rel in chosen]
    ds = tf.data.Dataset.from_tensor_slices((paths, mask_paths))
    if split == "train":
        # Shuffling file names is cheap; shuffling decoded photos would need a huge buffer.
        ds = ds.shuffle(len(paths), reshuffle_each_iteration=True)

    def load(path, mask_path):
        image, mask, ok = tf.numpy_function(
            lambda p, m: _load(p, m, mask_format, with_mask), [path, mask_path], [tf.uint8, tf.uint8, tf.bool],
            stateful=True)  # It records skipped files.
        image.set_shape([None, None, 3])
        mask.set_shape([None, None, 1])
        ok.set_shape([])
        example = {"image": image, "mask": mask} if with_mask else {"image": image}
        return example, ok

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=split != "train")
    return ds.filter(lambda example, ok: ok).map(lambda example, ok: example)

"""TensorFlow Datasets sources, e.g. CUB-200-2011 (with masks).

tfseg never downloads inside a training run: `tfds_source` only reads data that was prepared
beforehand and raises `DataError` at call time, with the preparation command, when it is missing.

Splits:

* ``caltech_birds2011``: ReDO's 10,000 / 788 / 1,000 split file is not part of TFDS, which only has
  the official train (5,994) / test (5,794) split. The default ``split_map`` reproduces ReDO's split
  *sizes* deterministically from those: validation = ``train[:788]``, test = ``test[:1000]``,
  train = ``train[788:] + test[1000:]`` (10,000 images). The membership differs from ReDO's file,
  so numbers are comparable to the paper's in protocol, not image for image.
"""

from __future__ import annotations

import gin
import tensorflow as tf

from tfseg.data import lsun
from tfseg.data.pipeline import SPLITS
from tfseg.errors import DataError, SplitUnavailableError

# TFDS split expressions per tfseg split; a data set not listed maps each split to its own name.
DEFAULT_SPLIT_MAPS = {
    "caltech_birds2011": {
        "train": "train[788:]+test[1000:]",
        "validation": "train[:788]",
        "test": "test[:1000]",
    },
}
# Feature holding a ground-truth mask, and the threshold that binarises it (CUB masks are soft, 0..255;
# docs/methods.md section 6: binarised at > 0.5 after / 255).
MASK_FEATURES = {"segmentation_mask": 127}

_DEMO_HINT = ("To run without this data set, bind tfseg.data.make_dataset.source = @tfseg.data.procedural_source "
              "(the embedded procedural data, with masks).")


def _prepare_instructions(name: str, data_dir: str) -> str:
    """How to prepare `name` offline, as verified against the TFDS 4.9 builders."""
    return (f"Prepare it once with network access:\n    tfds build {name} --data_dir={data_dir}\n"
            f"or copy an already prepared {name} folder into {data_dir}.")


@gin.configurable(module="tfseg.data")
def tfds_source(split: str, resolution: int, name: str | None = None, data_dir: str | None = None,
                split_map: dict[str, str] | None = None) -> tf.data.Dataset:
    """Examples of a prepared TFDS data set, mapped to tfseg's `{"image", "mask"}` dicts.

    Args:
        split: "train", "validation" or "test".
        resolution: unused (images are resized by `make_dataset`); part of the source signature.
        name: TFDS name, e.g. "caltech_birds2011". None (not gin.REQUIRED, whose error names no fix)
            raises DataError.
        data_dir: TFDS data folder; None means TFDS's default (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`).
        split_map: tfseg split -> TFDS split expression (slicing and "+" allowed). Defaults to
            `DEFAULT_SPLIT_MAPS[name]`, else the identity.

    Returns:
        Unbatched `{"image": uint8 [h, w, 3]}`, plus `"mask": uint8 [h, w, 1] in {0, 1}` when the data set
        has a `segmentation_mask` feature (CUB). Train files are read in shuffled order, evaluation
        splits in a fixed order.

    Raises:
        DataError: at call time when `name` is unknown or its data are not prepared in `data_dir` (with
            instructions), or the split expression is invalid; for "lsun/..." names, pointing to
            `tfseg.data.lsun_source` (TFDS's LSUN builder needs tensorflow-io, which does not load).
            `SplitUnavailableError` when `split_map` has no entry for `split`.
    """
    del resolution  # Resizing happens in make_dataset.
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if not name:
        raise DataError("tfds_source needs a data set name. Set the gin binding tfseg.data.tfds_source.name, "
                        "e.g. 'caltech_birds2011'.")
    if name.startswith("lsun/"):
        category = name.split("/", 1)[1]
        raise DataError(f"tfds_source cannot read {name!r} (TFDS's LSUN builder needs tensorflow-io, which does not "
                        f"load here). Bind tfseg.data.make_dataset.source = @tfseg.data.lsun_source instead, as "
                        f"gin_configs/lsun_horse.gin does. {lsun.how_to_get(category)}")
    if split_map is None:
        split_map = DEFAULT_SPLIT_MAPS.get(name, {s: s for s in SPLITS})
    if split not in split_map:
        raise SplitUnavailableError(
            f"TFDS data set {name!r} has no tfseg split {split!r} (split_map={dict(split_map)}). Add it to the gin "
            f"binding tfseg.data.tfds_source.split_map, e.g. {{'{split}': 'train[:5%]'}}.")

    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # Heavy; only this source needs it.
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except  # TFDS raises several types for unknown names.
        raise DataError(f"Unknown TFDS data set {name!r}: {e}. Fix the gin binding tfseg.data.tfds_source.name.") from e

    try:
        ds = builder.as_dataset(split=split_map[split], shuffle_files=split == "train")
    except AssertionError as e:
        # TFDS's "could not find data in <data_dir>": the builder exists but was never prepared.
        root = str(builder.data_dir_root)
        raise DataError(f"TFDS data set {name!r} is not prepared in data_dir '{root}' (set with "
                        f"tfseg.data.tfds_source.data_dir). {_prepare_instructions(name, root)}\n{_DEMO_HINT}") from e
    except (ValueError, KeyError) as e:
        raise DataError(f"TFDS split expression {split_map[split]!r} for {name!r} is invalid: {e}. Fix the gin "
                        "binding tfseg.data.tfds_source.split_map.") from e

    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS data set {name!r} has no 'image' feature (features: {list(features.keys())}).")
    mask_key = next((k for k in MASK_FEATURES if k in features), None)

    def convert(example):
        image = example["image"]
        # Grey-scale photos exist in some TFDS image sets; the models expect RGB.
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        out = {"image": image}
        if mask_key is not None:
            mask = example[mask_key]
            if mask.shape[-1] != 1:
                mask = mask[..., :1]
            # Only mock data produce differently sized masks, but resizing is free when sizes agree.
            mask = tf.image.resize(mask, tf.shape(image)[:2], method="nearest")
            out["mask"] = tf.cast(mask > MASK_FEATURES[mask_key], tf.uint8)
        return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=split != "train")

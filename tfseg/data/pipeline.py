"""Batched input pipelines and a fake source for smoke tests.

A *source* is any callable ``source(split, resolution) -> tf.data.Dataset`` of unbatched examples
``{"image": uint8 [h, w, 3], "mask": uint8 [h, w, 1] in {0, 1}}`` ("mask" only where the source has
ground truth for that split). ``make_dataset`` turns the bound source into what the trainers and
evaluators consume. Typical gin config::

    tfseg.data.make_dataset.source = @tfseg.data.procedural_source
    tfseg.training.TrainConfig.resolution = 64   # the trainer passes it to make_dataset

Sources check their configuration when called, i.e. while the pipeline is *built*, and raise
``DataError`` naming the bad setting and the gin binding that fixes it; ``validate_data_config`` runs
those checks for every split before a trainer spends time building networks.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence
import weakref

import gin
import numpy as np
import tensorflow as tf

from tfseg.data import augment
# The data errors live in tfseg.errors; re-exported here, where sources have always found them.
from tfseg.errors import DataError, SplitUnavailableError  # noqa: F401

SPLITS = ("train", "validation", "test")

Source = Callable[[str, int], tf.data.Dataset]


# --------------------------------------------------------------------------------------------------
# What a source says about itself (for the data summary printed before training).
# --------------------------------------------------------------------------------------------------


class SourceDescription(NamedTuple):
    """What a source dataset is: `origin` names it for people, `images` counts its files or records
    before unreadable ones are skipped (None: unknown or unbounded), `has_masks` as in element_spec."""
    origin: str
    images: int | None
    has_masks: bool


_DESCRIPTIONS: "weakref.WeakKeyDictionary[tf.data.Dataset, SourceDescription]" = weakref.WeakKeyDictionary()


def describe(ds: tf.data.Dataset, origin: str, images: int | None = None,
             has_masks: bool | None = None) -> tf.data.Dataset:
    """Attaches a description to a source's dataset (returned unchanged), for the data summary."""
    if has_masks is None:
        has_masks = isinstance(ds.element_spec, dict) and "mask" in ds.element_spec
    _DESCRIPTIONS[ds] = SourceDescription(origin, images, bool(has_masks))
    return ds


def description_of(ds: tf.data.Dataset, source: Source) -> SourceDescription:
    """The description a source attached to `ds`, or one made from its name and cardinality."""
    if ds in _DESCRIPTIONS:
        return _DESCRIPTIONS[ds]
    cardinality = int(ds.cardinality())
    images = cardinality if cardinality >= 0 else None
    name = getattr(source, "__name__", None) or type(source).__name__
    return SourceDescription(name, images, "mask" in ds.element_spec)


def _ok_of(example, ok):
    del example
    return ok


def _example_of(example, ok):
    del ok
    return example


def keep_decoded(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`(example, ok)` pairs -> the examples whose decode succeeded (the others were recorded)."""
    return ds.filter(_ok_of).map(_example_of)


# --------------------------------------------------------------------------------------------------
# Fake source.
# --------------------------------------------------------------------------------------------------


@gin.configurable(module="tfseg.data")
def fake_source(split: str, resolution: int, num_examples: int = 8) -> tf.data.Dataset:
    """A tiny random data set with rectangular masks, for two-step smoke runs of any config.

    Images are deliberately wider than tall (R x 1.25 R) so that the resize and crop paths run.

    Args:
        split: "train", "validation" or "test" (each split has its own fixed examples).
        resolution: image height R.
        num_examples: examples per split.

    Returns:
        Unbatched `{"image": uint8 [R, W, 3], "mask": uint8 [R, W, 1] in {0, 1}}`, W = R + R // 4.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if num_examples < 1:
        raise DataError(f"num_examples must be >= 1, got {num_examples}. Set tfseg.data.fake_source.num_examples.")
    rng = np.random.default_rng(SPLITS.index(split))
    h, w = resolution, resolution + resolution // 4
    images = rng.integers(0, 256, size=(num_examples, h, w, 3), dtype=np.uint8)
    masks = np.zeros((num_examples, h, w, 1), np.uint8)
    for i in range(num_examples):
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        bottom, right = top + rng.integers(h // 4, h // 2 + 1), left + rng.integers(w // 4, w // 2 + 1)
        masks[i, top:bottom, left:right] = 1
        # A brighter rectangle, so the mask is visible in the image.
        images[i, top:bottom, left:right] = images[i, top:bottom, left:right] // 2 + 128
    return tf.data.Dataset.from_tensor_slices({"image": images, "mask": masks})


# --------------------------------------------------------------------------------------------------
# Pipeline.
# --------------------------------------------------------------------------------------------------


def _call_source(source: Source, split: str, resolution: int) -> tf.data.Dataset:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if not callable(source):
        raise DataError(f"The data source {source!r} is not callable. Bind a source function, e.g. "
                        "tfseg.data.make_dataset.source = @tfseg.data.procedural_source.")
    ds = source(split, resolution)
    spec = ds.element_spec
    if not isinstance(spec, dict) or "image" not in spec:
        raise DataError(f"Source {getattr(source, '__name__', source)!r} must yield dicts with an 'image' key, "
                        f"got element_spec {spec}.")
    return ds


@gin.configurable(module="tfseg.data")
def make_dataset(split: str, batch_size: int, source: Source = gin.REQUIRED, resolution: int = 64,
                 random_crop: bool = False, random_flip: bool = True, crop_scale: float = 1.125,
                 image_resize_method: str = "nearest", shuffle_buffer: int = 1000, repeat: bool | None = None,
                 drop_remainder: bool | None = None, num_parallel_calls: int = tf.data.AUTOTUNE,
                 square_resize: bool = False, seed: int | None = None) -> tf.data.Dataset:
    """Builds the batched, prefetched input pipeline of one split.

    "train": augmented (random flip; random crop when `random_crop`), shuffled, repeated forever,
    incomplete last batch dropped. "validation"/"test": one pass in the source's fixed order, resize +
    centre crop only, last batch kept.

    Args:
        split: "train", "validation" or "test".
        batch_size: examples per batch B.
        source: a source callable `source(split, resolution)`, e.g. `@tfseg.data.procedural_source`.
        resolution: output side R.
        random_crop: PerturbGAN-style random crops from a `crop_scale * R` resize (training only).
        random_flip: random horizontal flips (training only).
        crop_scale: see `random_crop`; 1.125 as in PerturbGAN.
        image_resize_method: `tf.image.resize` method for images ("nearest" as in ReDO); masks always
            use nearest neighbour.
        shuffle_buffer: examples in the shuffle buffer (training). Unbounded sources (the procedural
            stream) are not shuffled: their examples are already independent draws.
        repeat: repeat forever; default True for "train", False otherwise.
        drop_remainder: drop an incomplete last batch; default True for "train", False otherwise.
        num_parallel_calls: parallelism of the pre-processing map.
        square_resize: resize to a square ignoring aspect ratio (PerturbGAN) instead of the shorter side.
        seed: makes shuffling and augmentation reproducible; None draws fresh randomness.

    Returns:
        `tf.data.Dataset` of `{"image": float32 [B, R, R, 3] in [-1, 1], "mask": float32 [B, R, R, 1] in
        {0, 1}}`; "mask" only when the source has ground truth for `split` (test with
        `"mask" in ds.element_spec`).

    Raises:
        DataError: when the source's configuration is unusable (raised here, before any training).
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}.")
    if seed is not None:
        # Sources shuffle their file lists without an explicit seed; resetting the global seed here
        # gives those shuffles the same op seeds on every run, so a seeded stream repeats exactly.
        tf.random.set_seed(seed)
    ds = _call_source(source, split, resolution)
    training = split == "train"
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    unbounded = ds.cardinality() == tf.data.INFINITE_CARDINALITY

    if repeat and not unbounded:
        ds = ds.repeat()
    image_shape = ds.element_spec["image"].shape
    already_sized = image_shape.is_fully_defined() and image_shape[:2] == [resolution, resolution]
    if already_sized and not (training and random_crop):
        # Fast path (e.g. the procedural stream): nothing to resize or crop, so batch first and normalise
        # and flip whole batches, which is several times cheaper per example than the per-example map.
        if training and shuffle_buffer > 1 and not unbounded:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if training:
            ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
            fn = lambda b, s: augment.preprocess_batch(b, training=True, flip=random_flip, seed=s)
        else:
            fn = lambda b: augment.preprocess_batch(b, training=False)
        ds = ds.map(fn, num_parallel_calls=num_parallel_calls, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    if training:
        # One independent stateless seed per example; a fixed `seed` makes the stream reproducible.
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        fn = lambda ex, s: augment.preprocess(  # pylint: disable=g-long-lambda
            ex, resolution, training=True, random_crop=random_crop, flip=random_flip, crop_scale=crop_scale,
            image_resize_method=image_resize_method, square_resize=square_resize, seed=s)
    else:
        fn = lambda ex: augment.preprocess(  # pylint: disable=g-long-lambda
            ex, resolution, training=False, image_resize_method=image_resize_method, square_resize=square_resize)
    ds = ds.map(fn, num_parallel_calls=num_parallel_calls, deterministic=True)
    # Shuffle after pre-processing: R x R examples are small, raw photos in a 1000-deep buffer are not.
    if training and shuffle_buffer > 1 and not unbounded:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def has_masks(source: Source, split: str, resolution: int = 64) -> bool:
    """Whether `source` yields ground-truth masks for `split` (builds, but does not read, the data)."""
    return "mask" in _call_source(source, split, resolution).element_spec


def bound_source() -> tuple[Source, int]:
    """The source and resolution bound to `make_dataset` in the current gin config (and scope)."""
    bindings = gin.get_bindings(make_dataset)
    if "source" not in bindings:
        raise DataError("No data source is bound. Add a binding such as "
                        "`tfseg.data.make_dataset.source = @tfseg.data.procedural_source` to the gin config.")
    return bindings["source"], bindings.get("resolution", 64)


def dataset_has_masks(split: str) -> bool:
    """Whether the gin-bound source yields ground-truth masks for `split`."""
    source, resolution = bound_source()
    return has_masks(source, split, resolution)


class SplitInfo(NamedTuple):
    """What `validate_data_config` found for one split."""
    available: bool
    has_masks: bool
    images: int | None = None
    origin: str = ""


def _first_readable(ds: tf.data.Dataset, origin: str) -> None:
    """Reads one example of a source's dataset; DataError naming the skipped files if none is readable."""
    from tfseg.data import decode  # pylint: disable=g-import-not-at-top  # decode imports nothing of ours
    for _ in ds.take(1):
        return
    skipped = decode.skipped_files()
    listing = (f" The first unreadable files, with the reasons:\n{decode.first_skipped()}"
               if skipped else "")
    raise DataError(f"{origin} holds no readable image ({len(skipped)} skipped as unreadable).{listing}\n"
                    "Fix or remove those files, or point the data binding at another folder.")


def validate_data_config(splits: Sequence[str] = SPLITS, check_readable: bool = True) -> dict[str, SplitInfo]:
    """Calls the gin-bound source once per split so a bad config fails before training starts.

    Building a source checks paths, folders and prepared data and reads file listings; with
    `check_readable` one training example is also decoded, so a folder whose every file is broken
    stops here (a second or two), not after the networks are built.

    Args:
        splits: splits to check.
        check_readable: decode one example of "train".

    Returns:
        `{split: SplitInfo(available, has_masks, images, origin)}`. An evaluation split the source does
        not have (e.g. LSUN's validation split) is reported as unavailable instead of raising.

    Raises:
        DataError: when no source is bound, for any problem with "train" (including no readable
            image), and for any problem other than an absent evaluation split.
    """
    source, resolution = bound_source()
    info = {}
    for split in splits:
        try:
            ds = _call_source(source, split, resolution)
        except SplitUnavailableError:
            if split == "train":
                raise
            info[split] = SplitInfo(False, False)
            continue
        description = description_of(ds, source)
        if split == "train" and check_readable:
            _first_readable(ds, description.origin)
        info[split] = SplitInfo(True, "mask" in ds.element_spec, description.images, description.origin)
    return info


def format_data_summary(info: dict[str, SplitInfo]) -> str:
    """The data summary printed at the start of a run and by --dry_run, one line per split."""
    from tfseg.data import decode  # pylint: disable=g-import-not-at-top
    origin = next((i.origin for i in info.values() if i.origin), "?")
    lines = [f"data: {origin}"]
    for split, split_info in info.items():
        if not split_info.available:
            lines.append(f"  {split:<10}  none (the data have no {split} split with masks to score)")
            continue
        count = "an unbounded stream of" if split_info.images is None else f"{split_info.images:,}"
        masks = "with masks" if split_info.has_masks else "no masks"
        lines.append(f"  {split:<10}  {count} images, {masks}")
    lines.append(f"  skipped as unreadable so far: {decode.skipped_count()}")
    return "\n".join(lines)

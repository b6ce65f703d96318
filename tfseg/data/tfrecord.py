"""TFRecord shards of prepared photos: the record format, the writer behind `tools/prepare_data.py`,
and `tfrecord_source`, which reads them from local disk or any `tf.io.gfile` path (gs://...).

Why shards: a folder or LMDB source decodes full-size photos in Python on one machine, every epoch.
Shards hold photos already resized to the training resolution, decode natively inside tf.data,
stream from cloud storage, and split over the workers of a cluster.

Layout of a prepared folder OUT::

    OUT/train-00000-of-00008.tfrecord ...   (plus validation-/test- shards when the photos have masks)
    OUT/dataset.json                        counts per split, skipped inputs, resolution, format, source,
                                            command line, date, tfseg version

One record is a `tf.train.Example` with the features

    image          bytes  JPEG or PNG, RGB, resized so the shorter side is the prepared resolution
    mask           bytes  PNG, one channel, 0 / 255, same size; only in splits where every photo has one
    key            bytes  the photo's path relative to the image folder, or its LMDB key
    height, width  int64  the size of `image`

A split's photos are dealt round-robin over its shards in sorted input order, so every shard is a
sample of the whole split, and reading up to 16 shards interleaved gives back the input order.
"""

from __future__ import annotations

import collections
from concurrent import futures
import datetime
import functools
import io
import json
import os
import re
from typing import Callable, Iterable, NamedTuple, Sequence

import gin
import numpy as np
from PIL import Image
import tensorflow as tf

import tfseg
from tfseg.data import decode
from tfseg.data import folder
from tfseg.data import lsun
from tfseg.data import pipeline
from tfseg.data.pipeline import SPLITS
from tfseg.errors import DataError, SplitUnavailableError

FORMATS = ("jpeg", "png")
DATASET_JSON = "dataset.json"
JPEG_QUALITY = 95
LISTED_SKIPS = 20  # skipped inputs named in dataset.json; the count covers all of them
READ_CYCLE = 16  # shards read at once
HOW_TO_PREPARE = ("Write shards with `python tools/prepare_data.py --image_dir=DIR [--mask_dir=DIR] "
                  "--out=OUT --resolution=R` (or --lsun_lmdb=DIR), then bind "
                  "tfseg.data.tfrecord_source.file_pattern = 'OUT/{split}-*.tfrecord'.")

# Files of a prepared folder, including the hidden ones an interrupted run leaves.
_WRITTEN = re.compile(r"^\.?(train|validation|test)-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$|^dataset\.json$")

# What training reads of a record; key, height and width are for people and other tools.
_IMAGE_FEATURE = {"image": tf.io.FixedLenFeature([], tf.string)}
_MASK_FEATURE = {"mask": tf.io.FixedLenFeature([], tf.string)}


# --------------------------------------------------------------------------------------------------
# The record.
# --------------------------------------------------------------------------------------------------


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def resize_shorter_side(image: np.ndarray, resolution: int,
                        mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Resizes so the shorter side is `resolution`, aspect kept.

    Exact area averaging when shrinking (no aliasing; pillow's BOX filter is only exact for whole
    factors), bicubic when enlarging; the mask by nearest neighbour so it stays binary.
    """
    h, w = image.shape[:2]
    scale = resolution / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return image, mask
    method = "area" if scale < 1 else "bicubic"
    resized = tf.image.resize(image, size, method=method).numpy()
    image = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    if mask is not None:
        mask = tf.image.resize(mask[..., None], size, method="nearest").numpy()[..., 0]
    return image, mask


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        # No chroma subsampling: at 64 px, halving the colour resolution visibly blurs object edges.
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """`{0, 1}` [h, w] -> a one-channel 0/255 PNG (viewable, and what `mask_format="binary"` reads)."""
    buffer = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * np.uint8(255)).save(buffer, format="PNG")
    return buffer.getvalue()


def serialize(key: str, image: bytes, height: int, width: int, mask: bytes | None = None) -> bytes:
    """One record (see the module docstring)."""
    def as_bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def as_int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {"image": as_bytes(image), "key": as_bytes(key.encode()), "height": as_int(height),
               "width": as_int(width)}
    if mask is not None:
        feature["mask"] = as_bytes(mask)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _parse(serialized, with_mask: bool):
    spec = {**_IMAGE_FEATURE, **_MASK_FEATURE} if with_mask else _IMAGE_FEATURE
    features = tf.io.parse_single_example(serialized, spec)
    example = {"image": tf.io.decode_image(features["image"], channels=3, expand_animations=False)}
    if with_mask:
        example["mask"] = tf.cast(tf.io.decode_png(features["mask"], channels=1) > 127, tf.uint8)
    return example


# --------------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------------


class SkipInput(Exception):
    """An input that cannot be read; it is left out, counted and named in dataset.json."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class ShardWriter:
    """Deals one split's records round-robin over `num_shards` files.

    Files are written under hidden temporary names and renamed by `close`, so an interrupted run
    leaves nothing that a `{split}-*.tfrecord` pattern matches.
    """

    def __init__(self, out_dir: str, split: str, num_shards: int):
        self.names = [shard_name(split, i, num_shards) for i in range(num_shards)]
        self._paths = [os.path.join(out_dir, name) for name in self.names]
        self._writers = [tf.io.TFRecordWriter(self._temporary(path)) for path in self._paths]
        self.count = 0

    @staticmethod
    def _temporary(path: str) -> str:
        head, name = os.path.split(path)
        return os.path.join(head, f".{name}.tmp")

    def write(self, record: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(record)
        self.count += 1

    def close(self) -> list[str]:
        """Finishes the files; returns their names."""
        for writer, path in zip(self._writers, self._paths):
            writer.close()
            tf.io.gfile.rename(self._temporary(path), path, overwrite=True)
        return self.names


def prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    """Creates `out_dir`; refuses a non-empty one unless `overwrite`, which deletes earlier shards.

    Stale shards must go: a run writing 4 shards over one that wrote 8 would otherwise leave
    `train-00004-of-00008` ... for the `{split}-*` pattern to read twice. Other files are kept.
    """
    if tf.io.gfile.exists(out_dir):
        if not tf.io.gfile.isdir(out_dir):
            raise DataError(f"--out={out_dir} is a file, not a folder. Choose a folder for the shards.")
        present = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(out_dir))
        if present and not overwrite:
            raise DataError(f"--out={out_dir} is not empty (it holds {len(present)} entries, e.g. "
                            f"{present[0]!r}). Choose a new folder, or pass --overwrite to replace the shards "
                            "and dataset.json in it.")
        for name in present:
            if _WRITTEN.match(name):
                tf.io.gfile.remove(os.path.join(out_dir, name))
    else:
        tf.io.gfile.makedirs(out_dir)


def _ordered_map(fn: Callable, items: Iterable, workers: int):
    """`map(fn, items)` on `workers` threads, in order, holding a bounded number of items in flight.

    Threads help because pillow releases the GIL while decoding, resizing and encoding.
    """
    with futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Encoded(NamedTuple):
    image: bytes
    height: int
    width: int
    mask: bytes | None


def write_dataset(out_dir: str, inputs: Iterable[tuple[str, object, tuple[str, ...]]],
                  load: Callable[[object], tuple[np.ndarray, np.ndarray | None]], total: int,
                  split_sizes: dict[str, int], split_masks: dict[str, bool], resolution: int, fmt: str,
                  num_shards: int, source: dict, command: str | None = None,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> dict:
    """Writes the shards of every split and dataset.json; returns what dataset.json holds.

    Args:
        out_dir: an empty folder (see `prepare_out_dir`).
        inputs: `(key, payload, splits)` per photo, in the order to write; a photo may belong to
            several splits (a labelled photo trains and is scored) and is decoded once.
        load: payload -> `(rgb uint8 [h, w, 3], mask {0, 1} [h, w] or None)`; raises `SkipInput`.
        total: the number of inputs, for `progress`.
        split_sizes: photos planned per split (sets its shard count: `num_shards` at most).
        split_masks: whether the records of a split carry the mask (every photo of it has one).
        resolution, fmt, num_shards: see `tools/prepare_data.py`.
        source, command: recorded in dataset.json.
        progress: called as `progress(done, total)` after each input.
        workers: threads decoding and encoding; default: the CPU count.
    """
    writers = {split: ShardWriter(out_dir, split, min(num_shards, size))
               for split, size in split_sizes.items() if size}
    skipped = []

    def prepare(item):
        key, payload, splits = item
        try:
            image, mask = load(payload)
        except SkipInput as e:
            return key, splits, e
        image, mask = resize_shorter_side(image, resolution, mask)
        wants_mask = mask is not None and any(split_masks[split] for split in splits)
        return key, splits, _Encoded(encode_image(image, fmt), image.shape[0], image.shape[1],
                                     encode_mask(mask) if wants_mask else None)

    started = datetime.datetime.now(datetime.timezone.utc)
    for done, (key, splits, result) in enumerate(_ordered_map(prepare, inputs, workers or os.cpu_count() or 1), 1):
        if isinstance(result, SkipInput):
            skipped.append({"name": result.name, "reason": result.reason})
        else:
            for split in splits:
                writers[split].write(serialize(key, result.image, result.height, result.width,
                                               result.mask if split_masks[split] else None))
        if progress:
            progress(done, total)
    files = {split: writer.close() for split, writer in writers.items()}
    info = {
        "tfseg_version": tfseg.__version__,
        "created": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        "command": command,
        "source": source,
        "resolution": resolution,
        "format": fmt,
        "splits": {split: {"examples": writers[split].count, "shards": len(files[split]),
                           "masks": split_masks[split]} for split in files},
        "skipped": len(skipped),
        "skipped_inputs": skipped[:LISTED_SKIPS],
    }
    with tf.io.gfile.GFile(os.path.join(out_dir, DATASET_JSON), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return info


def _check_settings(resolution: int, fmt: str, num_shards: int) -> None:
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise DataError(f"--resolution must be a positive number of pixels, got {resolution!r}.")
    if fmt not in FORMATS:
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if num_shards < 1:
        raise DataError(f"--shards must be at least 1, got {num_shards}.")


class _FolderLoader:
    def __init__(self, mask_format: str):
        self.mask_format = mask_format

    def __call__(self, payload):
        path, mask_path = payload
        image, mask, ok = folder._load(path.encode(), (mask_path or "").encode(),  # pylint: disable=protected-access
                                       self.mask_format, mask_path is not None)
        if not ok:  # _load recorded which of the two files failed, and why
            recorded = decode.skipped_files()
            name = path if path in recorded else mask_path
            raise SkipInput(name, recorded.get(name, "unreadable"))
        return image, (mask[..., 0] if mask_path is not None else None)


def prepare_folder(out_dir: str, resolution: int, image_dir: str, mask_dir: str | None = None,
                   mask_format: str = "binary", validation_fraction: float = 0.5, test_fraction: float = 0.5,
                   split_seed: int = 0, mask_stem_replace: tuple[str, str] | None = None, fmt: str = "jpeg",
                   num_shards: int = 8, overwrite: bool = False, command: str | None = None,
                   progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> dict:
    """Shards of a photo folder, split as `image_folder_source` splits it (`folder.assign_splits`).

    Without masks every photo is in "train"; with them the labelled photos are spread over
    "validation" and "test", and "train" holds every photo. Masks are stored in a split's records
    when every photo of the split has one. Returns what dataset.json holds.

    Raises:
        DataError: bad settings, see `folder.assign_splits`, or a non-empty `out_dir` without `overwrite`.
    """
    _check_settings(resolution, fmt, num_shards)
    chosen = folder.assign_splits(image_dir, mask_dir, validation_fraction, test_fraction, split_seed,
                                  mask_format, mask_stem_replace, train_on_all_images=True)
    prepare_out_dir(out_dir, overwrite)
    split_masks = {split: bool(pairs) and all(mask is not None for _, mask in pairs)
                   for split, pairs in chosen.items()}
    membership = {}  # path -> (mask path, its splits)
    for split in SPLITS:
        for path, mask in chosen[split]:
            membership.setdefault(path, (mask, []))[1].append(split)
    inputs = []
    for path in sorted(membership):
        mask, splits = membership[path]
        wants_mask = any(split_masks[split] for split in splits)
        key = os.path.relpath(path, image_dir).replace(os.sep, "/")
        inputs.append((key, (path, mask if wants_mask else None), tuple(splits)))
    source = {"kind": "image_folder", "image_dir": image_dir, "mask_dir": mask_dir, "mask_format": mask_format,
              "validation_fraction": validation_fraction, "test_fraction": test_fraction,
              "split_seed": split_seed}
    return write_dataset(out_dir, inputs, _FolderLoader(mask_format), len(inputs),
                         {split: len(pairs) for split, pairs in chosen.items()}, split_masks, resolution, fmt,
                         num_shards, source, command, progress, workers)


class _LsunLoader:
    def __init__(self, lmdb_dir: str):
        self.lmdb_dir = lmdb_dir

    def __call__(self, payload):
        key, value = payload
        name = f"{self.lmdb_dir}:{key}"
        try:
            return decode.decode_rgb(value), None
        except decode.UnreadableImage as e:
            decode.record_skip(name, str(e))
            raise SkipInput(name, str(e)) from e


def _lsun_records(lmdb_dir: str, limit: int | None):
    for key, value in lsun.iterate_lmdb(lmdb_dir, limit):
        yield key.decode(errors="replace"), value


def prepare_lsun(out_dir: str, resolution: int, lmdb_dir: str, limit: int | None = None, fmt: str = "jpeg",
                 num_shards: int = 8, overwrite: bool = False, command: str | None = None,
                 progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> dict:
    """Train shards of an unzipped LSUN archive's first `limit` images in cursor order (as `lsun_source`).

    Raises:
        DataError: bad settings, no LSUN LMDB in `lmdb_dir`, or a non-empty `out_dir` without `overwrite`.
    """
    _check_settings(resolution, fmt, num_shards)
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be a positive number of images, got {limit}.")
    entries = lsun.open_lmdb(lmdb_dir).stat()["entries"]
    total = entries if limit is None else min(entries, limit)
    if not total:
        raise DataError(f"The LSUN LMDB in {lmdb_dir!r} holds no image.")
    prepare_out_dir(out_dir, overwrite)
    inputs = ((name, (name, value), ("train",)) for name, value in _lsun_records(lmdb_dir, limit))
    source = {"kind": "lsun_lmdb", "lmdb_dir": lmdb_dir, "limit": limit}
    return write_dataset(out_dir, inputs, _LsunLoader(lmdb_dir), total, {"train": total}, {"train": False},
                         resolution, fmt, num_shards, source, command, progress, workers)


def read_dataset_json(out_dir: str) -> dict | None:
    """The dataset.json of a prepared folder, or None when there is none (shards copied without it)."""
    path = os.path.join(out_dir, DATASET_JSON)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


# --------------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------------


class WorkerShard(NamedTuple):
    """What one worker reads: `files`, and of each file every `every`-th record from `offset` on."""
    files: list[str]
    every: int
    offset: int


def worker_shard(files: Sequence[str], num_workers: int, worker_index: int) -> WorkerShard:
    """Splits a split's files between workers so that each record is read by exactly one.

    Worker i reads files i, i+N, ... when there are at least N files (no record read twice);
    else every file, keeping every N-th record of each (all workers read all bytes, but there are
    fewer files than workers, so little data).
    """
    files = list(files)
    if num_workers <= 1:
        return WorkerShard(files, 1, 0)
    if len(files) >= num_workers:
        return WorkerShard(files[worker_index::num_workers], 1, 0)
    return WorkerShard(files, num_workers, worker_index)


def cluster_workers() -> tuple[int, int]:
    """`(number of workers, this worker's index)` from TF_CONFIG, counted as MultiWorkerMirroredStrategy
    counts them: the chief is worker 0 and the workers follow. `(1, 0)` without a cluster, and for tasks
    that read no training data (evaluator, ps)."""
    if not os.environ.get("TF_CONFIG"):
        return 1, 0
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return chiefs + workers, 0
    if resolver.task_type == "worker":
        return chiefs + workers, chiefs + int(resolver.task_id)
    return 1, 0


def _glob(pattern: str) -> list[str]:
    try:
        return sorted(tf.io.gfile.glob(pattern))
    except tf.errors.NotFoundError:
        return []
    except tf.errors.OpError as e:
        raise DataError(f"Cannot list {pattern!r} ({e.message}). Check the gin binding "
                        "tfseg.data.tfrecord_source.file_pattern and your access to that storage.") from e


def _first_record(files: list[str], pattern: str) -> tf.train.Example | None:
    try:
        for serialized in tf.data.TFRecordDataset(files).take(1):
            return tf.train.Example.FromString(serialized.numpy())
    except tf.errors.OpError as e:
        raise DataError(f"{pattern!r} names files that are not readable TFRecords ({e.message.splitlines()[0]}). "
                        f"{HOW_TO_PREPARE}") from e
    return None


def _worker_settings(num_workers: int | None, worker_index: int | None) -> tuple[int, int]:
    if num_workers is None and worker_index is None:
        return cluster_workers()
    if num_workers is None or worker_index is None or not 0 <= worker_index < num_workers:
        raise DataError(f"tfseg.data.tfrecord_source.num_workers={num_workers} and .worker_index={worker_index}: "
                        "bind both, with 0 <= worker_index < num_workers, or neither (then TF_CONFIG decides).")
    return num_workers, worker_index


class _ShardReader:
    """File name -> the records of it that this worker reads."""

    def __init__(self, every: int, offset: int):
        self.every, self.offset = every, offset

    def __call__(self, path):
        records = tf.data.TFRecordDataset(path)
        return records.shard(self.every, self.offset) if self.every > 1 else records


@gin.configurable(module="tfseg.data")
def tfrecord_source(split: str, resolution: int, file_pattern: str | None = None, shuffle_buffer: int = 2048,
                    num_workers: int | None = None, worker_index: int | None = None) -> tf.data.Dataset:
    """Photos (and masks) from the TFRecord shards written by `tools/prepare_data.py`.

    Args:
        split: "train", "validation" or "test".
        resolution: unused (images are resized by `make_dataset`); part of the source signature.
        file_pattern: a glob of shard files, local or any `tf.io.gfile` path, where `{split}` stands for
            the split: 'data/flowers_tfr/{split}-*.tfrecord', 'gs://bucket/horse/{split}-*.tfrecord'.
            A pattern without `{split}` names train shards only. None (not gin.REQUIRED, whose error
            names no fix) raises DataError saying how to write and bind shards.
        shuffle_buffer: records shuffled together in training (encoded, so a few KB each), after the
            shard order is shuffled.
        num_workers, worker_index: this worker's share of "train" for multi-worker training; default:
            read from TF_CONFIG (the chief counts as worker 0). See `worker_shard`. Evaluation splits
            are read whole by every worker.

    Returns:
        Unbatched `{"image": uint8 [h, w, 3]}`, plus `"mask": uint8 [h, w, 1] in {0, 1}` when the shards
        carry masks. "train" in a fresh random order each epoch; evaluation splits in the written order.
        tf.data's auto-sharding is turned off: the source shards "train" itself.

    Raises:
        DataError: no pattern bound, nothing matching, or files that are not such shards.
            `SplitUnavailableError` for a split the shards do not have (e.g. validation of a folder
            prepared without masks).
    """
    del resolution  # Shards hold the prepared size; make_dataset resizes to the training one.
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if not file_pattern:
        raise DataError(f"No TFRecord shards bound to tfseg.data.tfrecord_source.file_pattern. {HOW_TO_PREPARE}")
    if "{split}" not in file_pattern and split != "train":
        raise SplitUnavailableError(f"tfseg.data.tfrecord_source.file_pattern {file_pattern!r} has no {{split}}, so "
                                    f"it names train shards only; use e.g. 'OUT/{{split}}-*.tfrecord' to score "
                                    f"the {split} shards.")
    pattern = file_pattern.replace("{split}", split)
    files = _glob(pattern)
    if not files:
        if split != "train" and _glob(file_pattern.replace("{split}", "train")):
            raise SplitUnavailableError(f"The shards {file_pattern!r} have no {split} split (tools/prepare_data.py "
                                        "writes validation and test shards only for photos with --mask_dir).")
        raise DataError(f"tfseg.data.tfrecord_source.file_pattern {file_pattern!r} matches no file for the "
                        f"{split} split ({pattern!r}). {HOW_TO_PREPARE}")
    first = _first_record(files, pattern)
    if first is None:
        raise SplitUnavailableError(f"The {split} shards {pattern!r} hold no record (every input was skipped "
                                    "when they were written?).")
    if "image" not in first.features.feature:
        raise DataError(f"{pattern!r} holds TFRecords without an 'image' feature: not shards written by "
                        f"tools/prepare_data.py. {HOW_TO_PREPARE}")
    with_mask = "mask" in first.features.feature
    info = read_dataset_json(os.path.dirname(files[0]))
    images = (info or {}).get("splits", {}).get(split, {}).get("examples")

    training = split == "train"
    # Evaluation splits are read whole: every worker scores them alike.
    workers, index = _worker_settings(num_workers, worker_index) if training else (1, 0)
    shard = worker_shard(files, workers, index)
    ds = tf.data.Dataset.from_tensor_slices(shard.files)
    if training:
        ds = ds.shuffle(len(shard.files), reshuffle_each_iteration=True)
    ds = ds.interleave(_ShardReader(shard.every, shard.offset), cycle_length=min(len(shard.files), READ_CYCLE),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, reshuffle_each_iteration=True)
    ds = ds.map(functools.partial(_parse, with_mask=with_mask), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=not training)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(options)
    origin = f"TFRecord shards {pattern!r}" + (f" (the share of worker index {index} of {workers})"
                                               if workers > 1 else "")
    return pipeline.describe(ds, origin, images, with_mask)

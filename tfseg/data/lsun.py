"""LSUN object categories, read natively from the LMDB of the official archive.

An LSUN object archive (`horse.zip`, `car.zip`, ...) unzips to a folder holding `data.mdb` and
`lock.mdb`: one LMDB whose keys are 40-hex-digit image ids and whose values are the encoded photos
(WebP, occasionally JPEG). TFDS's LSUN builder reads that LMDB through tensorflow-io, whose native
library does not load under TF >= 2.17, so tfseg reads it with the maintained `lmdb` package and
decodes with `tfseg.data.decode` (pillow handles WebP; TFDS's image feature returns WebP as 4-D).

Only a "train" split exists (LSUN has no masks, so nothing could score a validation or test split).
PerturbGAN trains on the first 100,000 images of a category in cursor (key) order: `limit=100000`.
A value that does not decode is skipped and counted like a corrupt file in a photo folder.
"""

from __future__ import annotations

import os
import threading

import gin
import numpy as np
import tensorflow as tf

from tfseg.data import decode
from tfseg.data import pipeline
from tfseg.data.pipeline import SPLITS
from tfseg.errors import DataError, SplitUnavailableError

DOWNLOAD_URL = "http://dl.yf.io/lsun/objects/{category}.zip"
DATA_FILE = "data.mdb"

_lock = threading.Lock()
_environments: dict[str, object] = {}
_key_lists: dict[tuple[str, int | None], list[bytes]] = {}


def how_to_get(category: str | None) -> str:
    """The download / unzip / bind instructions, for error messages and config headers."""
    name = category or "<category>"
    return (f"Download the LSUN object archive {name}.zip ({DOWNLOAD_URL.format(category=name)}), unzip it "
            f"(`unzip {name}.zip` gives a folder {name}/ holding {DATA_FILE} and lock.mdb), then set the one "
            f"binding --gin_bindings=\"tfseg.data.lsun_source.lmdb_dir='/path/to/{name}'\".")


def _import_lmdb():
    try:
        import lmdb  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise DataError("Reading LSUN needs the `lmdb` package, a dependency of tfseg: reinstall with "
                        "pip install -e \".[cpu]\" (or pip install lmdb).") from e
    return lmdb


def _check_dir(lmdb_dir: str | None, category: str | None) -> str:
    if not lmdb_dir:
        raise DataError(f"No LSUN data bound (tfseg.data.lsun_source.lmdb_dir is not set). {how_to_get(category)}")
    if os.path.isfile(lmdb_dir):
        raise DataError(f"LSUN lmdb_dir {lmdb_dir!r} is a file; bind the folder that `unzip` makes, the one "
                        f"holding {DATA_FILE}. {how_to_get(category)}")
    if not os.path.isdir(lmdb_dir):
        raise DataError(f"LSUN lmdb_dir {lmdb_dir!r} does not exist. {how_to_get(category)}")
    if not os.path.isfile(os.path.join(lmdb_dir, DATA_FILE)):
        inside = sorted(os.path.join(lmdb_dir, d) for d in os.listdir(lmdb_dir)
                        if os.path.isfile(os.path.join(lmdb_dir, d, DATA_FILE)))
        hint = (f" Its sub-folder {inside[0]!r} holds one: set the binding "
                f"--gin_bindings=\"tfseg.data.lsun_source.lmdb_dir='{inside[0]}'\"." if inside
                else f" {how_to_get(category)}")
        raise DataError(f"LSUN lmdb_dir {lmdb_dir!r} holds no {DATA_FILE}, so it is not an unzipped LSUN "
                        f"archive.{hint}")
    return os.path.realpath(lmdb_dir)


def open_lmdb(lmdb_dir: str, category: str | None = None):
    """The read-only `lmdb.Environment` of an unzipped LSUN archive, opened once per process.

    Raises:
        DataError: no such folder, no data.mdb in it, or a file lmdb cannot open; the message says
            how to download and bind the data.
    """
    path = _check_dir(lmdb_dir, category)
    with _lock:
        if path not in _environments:
            lmdb = _import_lmdb()
            try:
                # lock=False: many readers, no writer; readahead=False: random access by key.
                _environments[path] = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                                max_readers=512, subdir=True)
            except lmdb.Error as e:
                raise DataError(f"LSUN lmdb_dir {lmdb_dir!r}: {DATA_FILE} is not a readable LMDB ({e}). "
                                f"Unzip the archive again. {how_to_get(category)}") from e
        return _environments[path]


def iterate_lmdb(lmdb_dir: str, limit: int | None = None, category: str | None = None):
    """`(key, value)` byte pairs in cursor (key) order, the first `limit` of them (all when None)."""
    env = open_lmdb(lmdb_dir, category)
    with env.begin(write=False) as txn:
        for i, (key, value) in enumerate(txn.cursor()):
            if limit is not None and i >= limit:
                return
            yield bytes(key), bytes(value)


def keys(lmdb_dir: str, limit: int | None = None, category: str | None = None) -> list[bytes]:
    """The first `limit` keys in cursor order (listed once per process: about 1 s per million)."""
    env = open_lmdb(lmdb_dir, category)
    cache_key = (os.path.realpath(lmdb_dir), limit)
    with _lock:
        if cache_key not in _key_lists:
            found = []
            with env.begin(write=False) as txn:
                for key in txn.cursor().iternext(keys=True, values=False):
                    if limit is not None and len(found) >= limit:
                        break
                    found.append(bytes(key))
            _key_lists[cache_key] = found
        return _key_lists[cache_key]


class _Reader:
    """Key -> decoded photo, inside `tf.numpy_function` (a class, not a lambda: AutoGraph skips it)."""

    def __init__(self, lmdb_dir: str, category: str | None):
        self.lmdb_dir, self.category = lmdb_dir, category

    def __call__(self, key: bytes):
        env = open_lmdb(self.lmdb_dir, self.category)
        with env.begin(write=False) as txn:
            value = txn.get(key)
        name = f"{self.lmdb_dir}:{key.decode(errors='replace')}"
        if value is None:
            decode.record_skip(name, "key vanished from the LMDB")
            return np.zeros((1, 1, 3), np.uint8), False
        return decode.decode_or_skip(value, name)


@gin.configurable(module="tfseg.data")
def lsun_source(split: str, resolution: int, lmdb_dir: str | None = None, limit: int | None = None,
                category: str | None = None, shuffle_buffer: int = 100_000) -> tf.data.Dataset:
    """Photos of one LSUN object category from its unzipped LMDB (`tfseg.data.lsun_source.lmdb_dir`).

    Args:
        split: only "train" exists; others raise `SplitUnavailableError` (LSUN has no masks).
        resolution: unused (images are resized by `make_dataset`); part of the source signature.
        lmdb_dir: the folder holding `data.mdb` after `unzip <category>.zip`. None (not gin.REQUIRED,
            whose error would not say where the data come from) raises DataError with instructions.
        limit: use the first `limit` images in cursor order (PerturbGAN: 100,000); None: all.
        category: the category's name ("horse"), used only in messages.
        shuffle_buffer: keys shuffled together (keys are 40 bytes; the whole 100k list fits).

    Returns:
        Unbatched `{"image": uint8 [h, w, 3]}`, in a fresh random key order each epoch.

    Raises:
        DataError: the data are missing (with download, unzip and binding instructions), `limit` < 1,
            or the LMDB is empty.
    """
    del resolution  # Resizing happens in make_dataset.
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"tfseg.data.lsun_source.limit must be a positive integer or None, got {limit!r}.")
    if split != "train":
        raise SplitUnavailableError(f"LSUN has no {split!r} split: it has no masks to score one.")
    listed = keys(lmdb_dir, limit, category)
    if not listed:
        raise DataError(f"The LSUN LMDB in {lmdb_dir!r} holds no image. {how_to_get(category)}")
    ds = tf.data.Dataset.from_tensor_slices(np.array(listed, dtype=object))
    ds = ds.shuffle(min(len(listed), max(1, shuffle_buffer)), reshuffle_each_iteration=True)
    reader = _Reader(lmdb_dir, category)

    def load(key):
        image, ok = tf.numpy_function(reader, [key], [tf.uint8, tf.bool], stateful=True)
        image.set_shape([None, None, 3])
        ok.set_shape([])
        return {"image": image}, ok

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = pipeline.keep_decoded(ds)
    return pipeline.describe(ds, f"LSUN LMDB {lmdb_dir!r}" + (f" (first {limit:,})" if limit else ""),
                             len(listed), has_masks=False)


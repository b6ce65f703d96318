"""tfseg.data: sources, pre-processing and batched pipelines.

Sources (gin configurables under `tfseg.data`), each `source(split, resolution) -> tf.data.Dataset` of
unbatched `{"image": uint8 [h, w, 3], "mask": uint8 [h, w, 1] in {0, 1}}`:

* `procedural_source`: the embedded procedural data set (no download, masks on every split).
* `image_folder_source`: any folder of photos (JPEG, PNG, WebP, ...), optional mask folder.
* `lsun_source`: an LSUN object category's LMDB, read natively (no masks).
* `tfrecord_source`: TFRecord shards written by `tools/prepare_data.py` (local disk or gs://).
* `tfds_source`: TFDS builders, e.g. `caltech_birds2011` (with masks).
* `fake_source`: a tiny random data set for smoke runs.

`make_dataset` batches and pre-processes the bound source; `validate_data_config` checks it before
training. Configuration problems raise `DataError`.

Importing this package imports no source (nor TensorFlow): each source registers its gin configurable
when its own module is imported, and `tfseg.registry.import_configurables()` imports them all for
the entry points. The names below are looked up on first use, so `tfseg.data.make_dataset` and
`from tfseg.data import lsun_source` work as before.
"""
import importlib

from tfseg.errors import DataError, SplitUnavailableError  # noqa: F401

#: Public name -> the module that defines it, imported when the name is first used.
_HOMES = {
    "SPLITS": "tfseg.data.pipeline",
    "SplitInfo": "tfseg.data.pipeline",
    "bound_source": "tfseg.data.pipeline",
    "dataset_has_masks": "tfseg.data.pipeline",
    "fake_source": "tfseg.data.pipeline",
    "has_masks": "tfseg.data.pipeline",
    "make_dataset": "tfseg.data.pipeline",
    "validate_data_config": "tfseg.data.pipeline",
    "format_data_summary": "tfseg.data.pipeline",
    "describe": "tfseg.data.pipeline",
    "preprocess": "tfseg.data.augment",
    "procedural_source": "tfseg.data.procedural",
    "image_folder_source": "tfseg.data.folder",
    "reset_skipped_files": "tfseg.data.decode",
    "skipped_count": "tfseg.data.decode",
    "skipped_files": "tfseg.data.decode",
    "lsun_source": "tfseg.data.lsun",
    "tfds_source": "tfseg.data.tfds_sources",
    "tfrecord_source": "tfseg.data.tfrecord",
}

_SUBMODULES = ("augment", "decode", "folder", "lsun", "pipeline", "procedural", "tfds_sources", "tfrecord")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES) | set(_SUBMODULES))

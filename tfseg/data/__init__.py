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
"""

from tfseg.data.pipeline import DataError
from tfseg.data.pipeline import SPLITS
from tfseg.data.pipeline import SplitInfo
from tfseg.data.pipeline import SplitUnavailableError
from tfseg.data.pipeline import bound_source
from tfseg.data.pipeline import dataset_has_masks
from tfseg.data.pipeline import fake_source
from tfseg.data.pipeline import has_masks
from tfseg.data.pipeline import make_dataset
from tfseg.data.pipeline import validate_data_config
from tfseg.data.pipeline import format_data_summary
from tfseg.data.pipeline import describe
from tfseg.data import decode
from tfseg.data.augment import preprocess
from tfseg.data import procedural
from tfseg.data.procedural import procedural_source
from tfseg.data import folder
from tfseg.data.folder import image_folder_source
from tfseg.data.decode import reset_skipped_files
from tfseg.data.decode import skipped_count
from tfseg.data.decode import skipped_files
from tfseg.data import lsun
from tfseg.data.lsun import lsun_source
from tfseg.data import tfds_sources
from tfseg.data.tfds_sources import tfds_source
from tfseg.data import tfrecord
from tfseg.data.tfrecord import tfrecord_source

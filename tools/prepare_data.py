"""Write photos as resized, sharded TFRecords for `tfseg.data.tfrecord_source`.

Why: a photo folder or an LSUN LMDB is decoded at full size, in Python, on one machine, every epoch.
Shards hold the photos resized once (shorter side --resolution, aspect kept, area resampling; masks
nearest neighbour), decode natively in tf.data, and can live on gs:// and feed every worker of a
cluster.

Inputs (exactly one):
  --image_dir=DIR [--mask_dir=DIR --mask_format=binary]  split as tfseg.data.image_folder_source
      splits it: without masks every photo is "train"; with masks the labelled photos are spread over
      "validation" and "test" (--validation_fraction, --test_fraction, --split_seed) and "train"
      holds every photo.
  --lsun_lmdb=DIR [--limit=N]  an unzipped LSUN object archive (the folder holding data.mdb), its
      first N images in key order (PerturbGAN: 100000); train only.

Writes OUT/<split>-00000-of-0000K.tfrecord ... and OUT/dataset.json (counts, skipped inputs,
settings). Undecodable inputs are skipped, counted and listed. OUT must be empty or new, unless
--overwrite (which deletes the shards and dataset.json already there, nothing else).

Examples:
  python tools/prepare_data.py --image_dir=data/flowers/jpg --mask_dir=data/flowers/masks \\
      --out=data/flowers_tfr --resolution=64
  python tools/prepare_data.py --lsun_lmdb=data/horse --limit=100000 --resolution=128 --shards=64 \\
      --out=gs://my-bucket/lsun_horse_128

Train on them:
  python -m tfseg.train --gin_file=gin_configs/redo_folder.gin --model_dir=runs/flowers_tfr \\
      --gin_bindings="tfseg.data.make_dataset.source=@tfseg.data.tfrecord_source" \\
      --gin_bindings="tfseg.data.tfrecord_source.file_pattern='data/flowers_tfr/{split}-*.tfrecord'"
"""
import os
import shlex
import sys
import time

from absl import app, flags

flags.DEFINE_string("image_dir", None, "Folder of photos (searched recursively).")
flags.DEFINE_string("mask_dir", None, "Folder of masks named like the photos (with --image_dir).")
flags.DEFINE_enum("mask_format", "binary", ["binary", "flowers", "lfw"],
                  "How masks encode the foreground, as tfseg.data.image_folder_source.mask_format.")
flags.DEFINE_list("mask_stem_replace", None, "old,new: replaced once in a photo's file stem to get its "
                  "mask's stem, as tfseg.data.image_folder_source.mask_stem_replace.")
flags.DEFINE_float("validation_fraction", 0.5, "Share of the labelled photos in validation.")
flags.DEFINE_float("test_fraction", 0.5, "Share of the labelled photos in test.")
flags.DEFINE_integer("split_seed", 0, "Changes which labelled photos are validation or test.")
flags.DEFINE_string("lsun_lmdb", None, "Unzipped LSUN object archive (the folder holding data.mdb).")
flags.DEFINE_integer("limit", None, "With --lsun_lmdb: the first N images in key order only.")
flags.DEFINE_string("out", None, "Output folder, local or gs://...; must be empty or new.")
flags.DEFINE_integer("resolution", None, "Shorter side of the stored photos in pixels: the training "
                     "resolution (e.g. 64), or more to train at several resolutions.")
flags.DEFINE_integer("shards", 8, "Files per split (fewer for a split with fewer photos). For a cluster, "
                     "at least the number of workers, so each reads its own files.")
flags.DEFINE_enum("format", "jpeg", ["jpeg", "png"], "Photo encoding: jpeg (quality 95, small) or png "
                  "(lossless, 3-5x larger).")
flags.DEFINE_bool("overwrite", False, "Replace the shards and dataset.json of a previous run in --out.")
FLAGS = flags.FLAGS


def _flag_problem():
    """The first wrong or missing flag, as a one-line message, or None."""
    if bool(FLAGS.image_dir) == bool(FLAGS.lsun_lmdb):
        return "give exactly one input: --image_dir=<folder of photos> or --lsun_lmdb=<unzipped LSUN folder>"
    if not FLAGS.out:
        return "--out=<folder for the shards> is required"
    if FLAGS.resolution is None:
        return "--resolution=<pixels of the shorter side, e.g. 64> is required"
    if FLAGS.image_dir and FLAGS.limit is not None:
        return "--limit applies to --lsun_lmdb only"
    if FLAGS.lsun_lmdb and FLAGS.mask_dir:
        return "--mask_dir applies to --image_dir only (LSUN has no masks)"
    if FLAGS.mask_stem_replace is not None and len(FLAGS.mask_stem_replace) != 2:
        return f"--mask_stem_replace must be old,new, got {','.join(FLAGS.mask_stem_replace)!r}"
    for flag in ("image_dir", "mask_dir", "lsun_lmdb"):
        path = getattr(FLAGS, flag)
        if path and "://" not in path and not os.path.isdir(path):
            return f"--{flag}={path} is not a folder"
    return None


class _ThrottledBar:
    """Feeds tfseg.progress.ProgressBar at most twice a second (a line per update off a terminal)."""

    def __init__(self):
        self.bar, self.last = None, time.time()

    def __call__(self, done, total):
        from tfseg.progress import ProgressBar  # pylint: disable=import-outside-toplevel
        if self.bar is None:
            self.bar = ProgressBar(total)
        now = time.time()
        if done == total or now - self.last >= 0.5:
            self.bar.update(done)
            self.last = now

    def close(self):
        if self.bar is not None:
            self.bar.close()


def summary_line(info, out):
    """`wrote 1,360 train, 423 validation ... to OUT in 9.1 s; skipped 1 unreadable input (first: ...)`."""
    counts = ", ".join(f"{split['examples']:,} {name}" for name, split in info["splits"].items())
    shards = sum(split["shards"] for split in info["splits"].values())
    line = (f"wrote {counts} photos ({shards} shards, {info['resolution']} px {info['format']}) to {out} "
            f"in {info['seconds']:.1f} s; skipped {info['skipped']} unreadable input(s)")
    if info["skipped_inputs"]:
        first = info["skipped_inputs"][0]
        line += f" (first: {first['name']}: {first['reason']}; see {out}/dataset.json)"
    return line


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}; see --help", file=sys.stderr)
        return 2
    problem = _flag_problem()
    if problem:
        print(f"error: {problem}. See --help.", file=sys.stderr)
        return 2
    # Imported after the flags are checked, so that --help and flag errors are quick.
    from tfseg.errors import DataError  # pylint: disable=import-outside-toplevel
    from tfseg.data import tfrecord  # pylint: disable=import-outside-toplevel

    command = " ".join(shlex.quote(arg) for arg in ["python", *sys.argv])
    progress = _ThrottledBar()
    try:
        if FLAGS.image_dir:
            info = tfrecord.prepare_folder(
                FLAGS.out, FLAGS.resolution, FLAGS.image_dir, FLAGS.mask_dir, FLAGS.mask_format,
                FLAGS.validation_fraction, FLAGS.test_fraction, FLAGS.split_seed,
                tuple(FLAGS.mask_stem_replace) if FLAGS.mask_stem_replace else None, FLAGS.format,
                FLAGS.shards, FLAGS.overwrite, command, progress)
        else:
            info = tfrecord.prepare_lsun(FLAGS.out, FLAGS.resolution, FLAGS.lsun_lmdb, FLAGS.limit, FLAGS.format,
                                         FLAGS.shards, FLAGS.overwrite, command, progress)
    except DataError as err:
        progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    progress.close()
    print(summary_line(info, FLAGS.out))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))

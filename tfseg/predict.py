"""Segment your own images: `python -m tfseg.predict --export_dir=serving/tfseg/1 --images=DIR --out=DIR`.

Uses an exported SavedModel (`--export_dir`, written by `python -m tfseg.export`) or a training run's
checkpoint directly (`--model_dir`); both run the same computation TF Serving runs. Writes, per image,
`<name>_mask.png` (grey, 255 = foreground, at the image's size), `<name>_cutout.png` (RGBA) and
`<name>_overlay.png`, plus `contact_sheet.png` and `predictions.json`. Unreadable files are reported
and skipped; the exit code is 0 when at least one image was segmented.

A model that draws its own images (an export with the `serve_latent` signature: a Labels4Free run
with `export_latent_signature`, e.g. the authors' alpha network converted by
tools/convert_labels4free.py) also masks latent codes: `--latents=z.npy` ([n, z_dim] float) instead
of `--images` writes `<i>_image.png`, `<i>_mask.png`, `<i>_overlay.png` and `masks.npy` (the soft
masks before the 0.5 threshold).
"""
import sys

from absl import flags

from tfseg import cli_flags

# allow_override: tfseg.train / evaluate / export define the same names (same meaning, same default), and
# tests import several entry points into one process.
flags.DEFINE_string("export_dir", None, "An exported version folder, e.g. serving/tfseg/1 (the base folder "
                    "serving/tfseg means its latest version).", allow_override=True)
flags.DEFINE_string("model_dir", None, "A training run directory, used instead of --export_dir.",
                    allow_override=True)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "With --model_dir: which checkpoint.",
                  allow_override=True)
flags.DEFINE_string("images", None, "Folder of images (JPEG, PNG, BMP, ...), searched recursively.")
flags.DEFINE_string("latents", None, "Instead of --images: a .npy of latent codes [n, z_dim]; writes the "
                    "images the exported model draws from them and their masks (exports with a serve_latent "
                    "signature only).")
flags.DEFINE_string("out", None, "Output folder, created if needed.")
flags.DEFINE_integer("batch_size", 16, "Images per model call.")
flags.DEFINE_integer("sheet_rows", 64, "Images shown in contact_sheet.png.")
flags.DEFINE_bool("invert", False, "Take the other region as the foreground, for a model whose masks came out "
                  "inverted (the object in the background). Two-region models only.", allow_override=True)
cli_flags.define_gin_bindings()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if bool(FLAGS.export_dir) == bool(FLAGS.model_dir):
        print("error: pass exactly one of --export_dir (e.g. serving/tfseg/1, written by python -m "
              "tfseg.export) or --model_dir (a training run)", file=sys.stderr)
        return 2
    if FLAGS.gin_bindings and not FLAGS.model_dir:
        print("error: --gin_bindings applies to a run's config (--model_dir); an export carries its own",
              file=sys.stderr)
        return 2
    if FLAGS.latents:
        return _predict_latents()
    if not FLAGS.images or not FLAGS.out:
        print("error: --images=<folder of images> and --out=<output folder> are required", file=sys.stderr)
        return 2
    import os  # pylint: disable=import-outside-toplevel
    from tfseg import console  # pylint: disable=import-outside-toplevel
    # Expected bad files are reported by us; TF's own warnings about them would garble the progress bar.
    console.quiet_tensorflow(FLAGS.verbosity)
    if not os.path.isdir(FLAGS.images):
        print(f"error: --images={FLAGS.images} is not a folder", file=sys.stderr)
        return 2
    from tfseg import registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.image_files import IMAGE_EXTENSIONS, list_images  # pylint: disable=import-outside-toplevel
    from tfseg.serving import inference  # pylint: disable=import-outside-toplevel
    registry.import_configurables()  # a run's config.gin (--model_dir) may name any configurable

    if not list_images(FLAGS.images):
        print(f"error: {FLAGS.images} holds no image files ({', '.join(IMAGE_EXTENSIONS)})",
              file=sys.stderr)
        return 2
    try:
        if FLAGS.export_dir:
            segment, metadata = inference.load_exported(FLAGS.export_dir)
        else:
            segment, metadata = inference.load_from_run(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_bindings)
    except (ConfigError, RunDirError, FileNotFoundError) as err:  # RunDirError: a checkpoint of another layout
        print(f"error: {err}", file=sys.stderr)
        return 2
    if FLAGS.invert:
        segment = inference.inverted(segment, metadata["resolution"], metadata.get("square_resize", False),
                                     refined=metadata.get("mask_refinement") is not None)
    source = metadata.get("version_dir") or metadata.get("checkpoint")
    print(f"segmenting {FLAGS.images} with {metadata.get('method', 'the model')} ({source}) "
          f"at {metadata.get('resolution', '?')} px{', foreground inverted' if FLAGS.invert else ''} -> {FLAGS.out}")
    summary = inference.predict_folder(segment, FLAGS.images, FLAGS.out, FLAGS.batch_size, FLAGS.sheet_rows)
    print(f"wrote masks, cut-outs and overlays of {len(summary['written'])} images to {FLAGS.out}"
          + (f"; contact sheet {summary['contact_sheet']}" if summary["contact_sheet"] else ""))
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} unreadable file(s) (listed in {FLAGS.out}/predictions.json):")
        for rel, reason in summary["skipped"].items():
            print(f"  {rel}: {reason}")
    return 0 if summary["written"] else 1


def _predict_latents():
    """`--latents`: the masks of the images an exported model draws from latent codes."""
    if FLAGS.images or not FLAGS.export_dir or not FLAGS.out:
        print("error: --latents=<codes.npy> takes --export_dir (an export with a serve_latent signature) and "
              "--out, and no --images", file=sys.stderr)
        return 2
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tfseg import console  # pylint: disable=import-outside-toplevel
    from tfseg.serving import inference  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)
    try:
        latents = np.load(FLAGS.latents)
    except (OSError, ValueError) as err:
        print(f"error: cannot read --latents={FLAGS.latents} as a .npy array ({err})", file=sys.stderr)
        return 2
    try:
        draw, z_dim = inference.load_latent_generator(FLAGS.export_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if latents.ndim != 2 or latents.shape[1] != z_dim or not np.all(np.isfinite(latents)):
        print(f"error: --latents={FLAGS.latents} holds an array of shape {latents.shape}; the model takes "
              f"finite codes of shape [n, {z_dim}]", file=sys.stderr)
        return 2
    written = inference.predict_latents(draw, latents.astype(np.float32), FLAGS.out, FLAGS.batch_size)
    print(f"wrote the images, masks and overlays of {len(written)} latent codes to {FLAGS.out} "
          f"(soft masks: {FLAGS.out}/masks.npy)")
    return 0 if written else 1


def run():
    """Console-script entry point (`tfseg-predict`)."""
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.run_entry_point(main, __name__)


if __name__ == "__main__":
    run()

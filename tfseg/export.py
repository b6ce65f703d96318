"""Export a trained run for TF Serving: `python -m tfseg.export --model_dir=runs/demo --export_dir=serving/tfseg`.

Writes a SavedModel to `<export_dir>/<version>/` (the next free integer unless --version is given; TF
Serving only loads integer folders) with two signatures, `serving_default` (JPEG/PNG bytes) and
`serve_image_tensor` (uint8 images); see `tfseg.serving.export_module`. The run's config.gin and a
`tfseg_export.json` (method, resolution, pre-processing, checkpoint) go into `assets/`.

Serve it with
    docker run -p 8501:8501 --mount type=bind,source=$PWD/serving/tfseg,target=/models/tfseg \\
        -e MODEL_NAME=tfseg tensorflow/serving
or run it locally with `python -m tfseg.predict --export_dir=serving/tfseg/1 --images=DIR --out=DIR`.
"""
import sys

from absl import flags

from tfseg import cli_flags

# allow_override: tfseg.train / evaluate / predict define the same names (same meaning, same default), and
# tests import several entry points into one process.
flags.DEFINE_string("model_dir", None, "A training run directory (holds config.gin and checkpoints).",
                    allow_override=True)
flags.DEFINE_string("export_dir", None, "Base folder of the exported versions, e.g. serving/tfseg (TF "
                    "Serving's model_base_path); the SavedModel goes to <export_dir>/<version>.",
                    allow_override=True)
flags.DEFINE_integer("version", None, "Integer version folder to write; default: the next free one.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                  "best: the validation-selected checkpoint; latest: the last one.", allow_override=True)
flags.DEFINE_bool("invert", False, "Serve the other region as the foreground, for a run whose masks came "
                  "out inverted (the object in the background region). Two-region models only.",
                  allow_override=True)
cli_flags.define_gin_bindings()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)
    from tfseg import registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.serving import export_module  # pylint: disable=import-outside-toplevel
    registry.import_configurables()  # the run's config.gin may name any configurable

    if not FLAGS.model_dir or not FLAGS.export_dir:
        print("error: --model_dir (a folder written by python -m tfseg.train) and --export_dir (e.g. "
              "serving/tfseg, the folder TF Serving watches) are required", file=sys.stderr)
        return 2
    if FLAGS.version is not None and FLAGS.version < 1:
        print(f"error: --version must be a positive integer (TF Serving loads only integer folders), "
              f"got {FLAGS.version}", file=sys.stderr)
        return 2
    try:
        path, checkpoint, metadata = export_module.export_run(FLAGS.model_dir, FLAGS.export_dir, FLAGS.version,
                                                              FLAGS.checkpoint, invert=FLAGS.invert,
                                                              extra_bindings=FLAGS.gin_bindings)
    except (ConfigError, RunDirError, FileExistsError, ValueError) as err:  # RunDirError: a checkpoint
        # of another layout (checkpointing.CheckpointMismatch), whose message says the binding to add
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {checkpoint} ({metadata['checkpoint_selection']}) to {path}; foreground region "
          f"{metadata['foreground_region']} ({metadata['foreground_rule']})")
    print(f"  signatures: {export_module.SIGNATURE_BYTES} ({export_module.INPUT_BYTES}: JPEG/PNG bytes), "
          f"{export_module.SIGNATURE_TENSOR} ({export_module.INPUT_TENSOR}: uint8 [batch, h, w, 3])")
    print(f"  inspect: saved_model_cli show --all --dir {path}")
    print(f"  predict: python -m tfseg.predict --export_dir={path} --images=DIR --out=DIR")
    return 0


def run():
    """Console-script entry point (`tfseg-export`)."""
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.run_entry_point(main, __name__)


if __name__ == "__main__":
    run()

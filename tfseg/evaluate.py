"""Score a trained run: `python -m tfseg.evaluate --model_dir=runs/demo [--split=test]`.

Prints a table of fg IoU, mIoU and accuracy (fixed polarity, dataset-level and per-image best
permutation; threshold 0.5), writes `eval_<split>.json` and an image | truth | prediction grid
`eval_<split>.png` into the run directory. The foreground region was chosen on validation
during training; test labels select nothing.
"""
import os
import sys

from absl import flags

from tfseg import cli_flags

# allow_override: tfseg.train / export / predict define the same names (same meaning, same default), and
# tests import several entry points into one process.
flags.DEFINE_string("model_dir", None, "A training run directory (holds config.gin and checkpoints).",
                    allow_override=True)
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Labelled split to score.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                  "best: the validation-selected checkpoint; latest: the last one.", allow_override=True)
cli_flags.define_gin_bindings()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)
    from tfseg import registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, DataError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.evaluation import metrics, split_evaluation  # pylint: disable=import-outside-toplevel
    from tfseg.training import loading, run_dir  # pylint: disable=import-outside-toplevel
    registry.import_configurables()  # the run's config.gin may name any configurable

    if not FLAGS.model_dir:
        print("error: --model_dir is required (a folder written by python -m tfseg.train)",
              file=sys.stderr)
        return 2
    try:
        model, train_config, path = loading.load_trained(FLAGS.model_dir, FLAGS.checkpoint,
                                                         FLAGS.gin_bindings)
        results = split_evaluation.run_split_evaluation(model, train_config, FLAGS.model_dir, FLAGS.split)
    except (ConfigError, DataError, RunDirError) as err:  # RunDirError: a checkpoint of another layout
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{FLAGS.split} split, checkpoint {path}:")
    print(metrics.format_table(results))
    print("wrote " + " and ".join(os.path.join(FLAGS.model_dir, name) for name in run_dir.eval_files(FLAGS.split)))
    return 0


def run():
    """Console-script entry point (`tfseg-evaluate`)."""
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.run_entry_point(main, __name__)


if __name__ == "__main__":
    run()

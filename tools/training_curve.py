"""Validation fg IoU against training step and wall-clock minutes, read from a run's TensorBoard logs.

    python tools/training_curve.py --model_dir=runs/demo [--png=runs/demo/curve.png]

Prints a table (step, minutes since the run's first log, fg IoU, mIoU, accuracy) and, with --png,
draws the fg IoU curve against minutes.
"""
import sys

from absl import app, flags

flags.DEFINE_string("model_dir", None, "A training run directory.")
flags.DEFINE_string("png", None, "Where to write a plot of fg IoU against minutes (optional).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.model_dir:
        print("error: --model_dir is required", file=sys.stderr)
        return 2
    from tfseg.evaluation import curves  # pylint: disable=import-outside-toplevel
    curve = curves.read_curve(FLAGS.model_dir)
    if not curve:
        print(f"error: no validation scores in {FLAGS.model_dir}/validation", file=sys.stderr)
        return 2
    print(f"{'step':>7}{'minutes':>9}{'fg IoU':>9}{'mIoU':>8}{'acc':>8}")
    for step, minutes, row in curve:
        print(f"{step:>7}{minutes:>9.1f}{row.get('fg_iou', float('nan')):>9.3f}"
              f"{row.get('miou', float('nan')):>8.3f}{row.get('accuracy', float('nan')):>8.3f}")
    if FLAGS.png:
        curves.draw(curve, FLAGS.png)
        print(f"wrote {FLAGS.png}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))

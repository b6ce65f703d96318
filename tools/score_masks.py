"""Score the masks `tfseg.predict` wrote against hand-made masks.

    python tools/score_masks.py --pred=my_masks --truth=/path/to/flowers17/masks [--json=scores.json]

For every truth mask `<truth>/<rel>/<stem>.png` the prediction `<pred>/<rel>/<stem>_mask.png` is read
(truth without a prediction is counted and reported, never scored as empty). Both are binarised
(> 127 is foreground) at the truth's size and scored with `tfseg.evaluation.metrics.MaskMetrics`:
fixed polarity (the mask as served: no flip), per-image means of fg IoU, mIoU and accuracy.
"""
import json
import os
import sys

from absl import app, flags
import numpy as np
from PIL import Image

flags.DEFINE_string("pred", None, "Folder written by python -m tfseg.predict (holds <stem>_mask.png files).")
flags.DEFINE_string("truth", None, "Folder of ground-truth masks (255 = foreground), named like the photos.")
flags.DEFINE_string("json", None, "Also write the scores to this JSON file.")
FLAGS = flags.FLAGS


def pairs(pred_dir, truth_dir):
    """`([(prediction path, truth path)], [truth paths without a prediction])`, sorted."""
    from tfseg import image_files  # pylint: disable=import-outside-toplevel
    found, missing = [], []
    for rel in image_files.list_images(truth_dir):
        pred = os.path.join(pred_dir, os.path.splitext(rel)[0] + "_mask.png")
        truth = os.path.join(truth_dir, rel)
        if os.path.exists(pred):
            found.append((pred, truth))
        else:
            missing.append(truth)
    return found, missing


def _binary(path, size=None):
    image = Image.open(path).convert("L")
    if size is not None and image.size != size:
        image = image.resize(size, Image.NEAREST)
    return (np.asarray(image) > 127).astype(np.float32)[..., None]


def score(pred_dir, truth_dir):
    """The `MaskMetrics` result of the predictions in `pred_dir` against `truth_dir`, plus counts."""
    from tfseg.evaluation.metrics import MaskMetrics  # pylint: disable=import-outside-toplevel
    found, missing = pairs(pred_dir, truth_dir)
    if not found:
        raise ValueError(f"no prediction in {pred_dir!r} matches a mask in {truth_dir!r} "
                         "(expected <stem>_mask.png for each <stem>.png)")
    metrics = MaskMetrics(threshold=0.5)
    for pred, truth in found:
        truth_mask = _binary(truth)
        size = (truth_mask.shape[1], truth_mask.shape[0])
        metrics.update(_binary(pred, size)[None], truth_mask[None])
    results = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.result().items()}
    results["missing_predictions"] = len(missing)
    return results


def main(argv):
    del argv
    if not FLAGS.pred or not FLAGS.truth:
        print("error: --pred=<folder of tfseg.predict> and --truth=<folder of masks> are required", file=sys.stderr)
        return 2
    from tfseg.evaluation import metrics  # pylint: disable=import-outside-toplevel
    try:
        results = score(FLAGS.pred, FLAGS.truth)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{results['num_images']} images scored, {results['missing_predictions']} masks without a prediction")
    print(metrics.format_table(results))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))

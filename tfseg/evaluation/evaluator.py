"""Runs a trained method over a labelled split and scores its masks; chooses the foreground region.

The foreground region (which of the n regions is the object) is chosen on the *validation*
split only; test labels never select anything. Without a labelled validation split, a method
whose regions are symmetric (ReDO) takes the region that touches the image border least
(`border_region`): photographers frame objects, backgrounds run off the edges.
"""
import numpy as np
import tensorflow as tf

from tfseg.evaluation import grids
from tfseg.evaluation.metrics import MaskMetrics, per_image_iou


def _region_fn(model):
    # One traced function per model: tracing costs more than a small evaluation.
    if getattr(model, "_tfseg_region_fn", None) is None:
        model._tfseg_region_fn = tf.function(model.final_region_masks)
    return model._tfseg_region_fn


#: Scores of `evaluate` that may rank checkpoints (`tfseg.training.TrainConfig.selection_metric`;
#: higher is better). "redo_iou" is ReDO's reference criterion (metrics.MaskMetrics).
RANKING_METRICS = ("fg_iou", "miou", "accuracy", "best_perm_fg_iou", "redo_iou")
#: Scores of `evaluate` filed in TensorBoard at each validation (under `eval/`).
SUMMARY_METRICS = ("fg_iou", "miou", "accuracy", "best_perm_fg_iou", "best_perm_accuracy", "confusion_miou")

#: The centred-disc baseline's name.
DISC = "centred disc, 50 % of the image"


def baseline_masks(height, width):
    """Label-free reference masks every score is read against: `{name: float32 [h, w, 1]}`."""
    yy, xx = np.mgrid[:height, :width]
    radius = np.sqrt(0.5 * height * width / np.pi)  # a disc covering half the image
    disc = ((yy + 0.5 - height / 2) ** 2 + (xx + 0.5 - width / 2) ** 2 <= radius ** 2)
    return {"full-image mask": np.ones((height, width, 1), np.float32),
            DISC: disc[..., None].astype(np.float32)}


#: The baseline of a refining model: its refinement seeded by the centred disc instead of the model.
REFINED_DISC = "centred disc + the model's refinement"


def score_baselines(truth_batches, threshold=0.5, image_batches=None, refinement=None):
    """`{baseline name: {"fg_iou", "miou", "accuracy"}}` of `baseline_masks` on the truth masks.

    With `refinement` (a model's `mask_refinement`) and the `image_batches` of the truths, also the
    centred disc passed through that refinement (`REFINED_DISC`): what the refinement does without
    the model, so the model is credited only with what it adds.
    """
    accumulators = None
    refine = refinement is not None and image_batches is not None
    for index, truth in enumerate(truth_batches):
        if accumulators is None:
            masks = baseline_masks(truth.shape[1], truth.shape[2])
            accumulators = {name: (MaskMetrics(threshold), mask) for name, mask in masks.items()}
            if refine:
                accumulators[REFINED_DISC] = (MaskMetrics(threshold), masks[DISC])
        for name, (acc, mask) in accumulators.items():
            mask = np.broadcast_to(mask, truth.shape)
            if name == REFINED_DISC:
                mask = refinement(image_batches[index], mask).numpy()
            acc.update(mask, truth)
    return {name: {k: float(acc.result()[k]) for k in ("fg_iou", "miou", "accuracy")}
            for name, (acc, _) in (accumulators or {}).items()}


def score_regions(model, dataset, threshold=0.5, max_examples=None):
    """Scores each region as if it were the foreground.

    Args:
        model: a `tfseg.methods.base.Method`.
        dataset: batches of {"image", "mask"}.
    Returns:
        list (one per region) of `MaskMetrics.result()` dicts, and a dict of numpy samples of the
        first batch ("image", "mask", "regions") for image grids.
    """
    region_fn = _region_fn(model)
    accumulators, sample, seen, coverage, truths, images = None, None, 0, 0.0, [], []
    for batch in dataset:
        if "mask" not in batch:
            raise ValueError("this split has no ground-truth masks; evaluation needs a labelled split")
        regions = region_fn(batch["image"]).numpy()
        truth = batch["mask"].numpy()
        if max_examples is not None:
            keep = max(0, min(len(truth), max_examples - seen))
            regions, truth = regions[:keep], truth[:keep]
            if keep == 0:
                break
        if accumulators is None:
            accumulators = [MaskMetrics(threshold) for _ in range(regions.shape[-1])]
            sample = {"image": batch["image"].numpy()[:len(truth)], "mask": truth, "regions": regions}
        for k, acc in enumerate(accumulators):
            acc.update(regions[..., k:k + 1], truth)
        coverage = coverage + regions.mean(axis=(1, 2)).sum(axis=0)
        truths.append(truth)
        if model.mask_refinement is not None:
            images.append(batch["image"].numpy()[:len(truth)])
        seen += len(truth)
    if accumulators is None:
        raise ValueError("the evaluation split is empty")
    results = [acc.result() for acc in accumulators]
    baselines = score_baselines(truths, threshold, images, model.mask_refinement)
    for k, result in enumerate(results):
        # Mean soft coverage of the region: watched for collapse (one region taking everything).
        result["prediction_coverage"] = float(coverage[k] / seen)
        result["baselines"] = baselines
    return results, sample


#: Width of the image frame the border rule reads, as a share of the side (at least one pixel).
BORDER_FRACTION = 1 / 16


def border_coverage(regions):
    """Mean soft coverage of each region on the image frame: `[n]` from `regions [b, R, R, n]`."""
    regions = np.asarray(regions, np.float64)
    side = regions.shape[1]
    width = max(1, int(round(side * BORDER_FRACTION)))
    frame = np.ones(regions.shape[1:3], bool)
    frame[width:side - width, width:side - width] = False
    return regions[:, frame, :].mean(axis=(0, 1))


def border_region(model, images):
    """`(index, coverage [n])`: the region of `model` on `images` that covers the image frame least."""
    coverage = border_coverage(_region_fn(model)(images).numpy())
    return int(np.argmin(coverage)), coverage


def choose_foreground_region(region_results):
    """Index of the region whose masks best match the foreground (by mean per-image fg IoU)."""
    return int(np.argmax([r["fg_iou"] for r in region_results]))


def evaluate(model, dataset, threshold=0.5, max_examples=None, choose_region=False):
    """Scores the model's foreground masks.

    Args:
        choose_region: True on the validation split: pick and store the foreground region
            (`model.foreground_region`) before scoring. False elsewhere: use the stored one.
    Returns:
        `(results, sample)`: the `MaskMetrics` result of the foreground region plus
        "foreground_region"; sample holds numpy "image", "mask", "prediction" for grids.
    """
    region_results, sample = score_regions(model, dataset, threshold, max_examples)
    if choose_region:
        model.foreground_region.assign(choose_foreground_region(region_results))
    region = int(model.foreground_region.numpy())
    results = dict(region_results[region])
    results["foreground_region"] = region
    sample = {"image": sample["image"], "mask": sample["mask"],
              "prediction": sample["regions"][..., region:region + 1]}
    return results, sample


def prediction_grid(sample, rows=8, cell=None):
    """uint8 grid with columns image | truth | prediction | overlay.

    With `cell` (pixels), cells are upscaled to at least that side, the columns are titled and each
    row carries its image's fg IoU, so a person sees at a glance where the model fails.
    """
    images = grids.images_to_uint8(sample["image"][:rows])
    truth = grids.masks_to_uint8(sample["mask"][:rows])
    pred = sample["prediction"][:rows]
    columns = [images, truth, grids.masks_to_uint8(pred), grids.overlay(images, pred[..., 0])]
    if cell is None:
        return grids.make_grid(columns)
    ious = per_image_iou(np.asarray(pred) >= 0.5, np.asarray(sample["mask"][:rows]) > 0.5)
    return grids.labelled_grid(columns, ["image", "truth", "prediction", "overlay"],
                               [f"fg IoU {iou:.2f}" for iou in ious], cell=cell)

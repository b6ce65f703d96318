"""Segmentation metrics for two-region (foreground / background) masks.

The evaluation protocol (docs/methods.md §2.6, §1.6, §3.6 and §4) made explicit:

* **Binarisation.** A soft mask ``m`` in ``[0, 1]`` (the probability that a pixel belongs to the region taken
  as foreground) becomes ``P = [m >= threshold]``; a pixel exactly at the threshold is foreground. The
  complement used by every "flipped" assignment is ``P̄ = [m < threshold]``, the complement of the *binarised*
  mask, as in the ReDO code. (Thresholding ``1 - m`` instead differs on pixels with ``m == 1 - threshold``.)
* **Empty masks.** The IoU of two empty sets (0 / 0) is defined as 1.0: predicting no foreground on an image
  with no foreground is perfect. Every IoU below, per image or dataset-level, uses this convention. (The ReDO
  code would produce NaN there.)
* **Polarity.** An unsupervised model does not know which of its regions is the object. Three assignments of
  region to foreground are reported side by side:

  - *fixed*: the prediction is taken as foreground as given. Use this for the final test numbers once the
    polarity has been fixed on the validation split with :func:`choose_polarity`.
  - *dataset permutation*: one assignment for the whole set, the one maximising the summed per-image fg IoU
    (the ReDO paper's wording; docs/methods.md §4 ``best_perm_dataset``).
  - *per-image best permutation*: each image picks its own assignment (what the ReDO code does). This is an
    optimistic upper bound and uses the labels to choose.

* **Averaging.** ``fg_iou`` / ``miou`` / ``accuracy`` are means over images of per-image scores
  (docs/methods.md ``fg_iou_per_image_mean``). ``confusion_miou`` / ``precision`` / ``recall`` / ``f1`` come from one
  2x2 confusion matrix summed over all pixels of the set (Labels4Free's metric script). ``redo_iou`` /
  ``redo_acc`` reproduce the ReDO code: a mean of per-batch means with the last incomplete batch dropped.

Never choose a checkpoint or a polarity on test labels: use the validation split.

Everything here is numpy; inputs may be numpy arrays or anything ``np.asarray`` accepts (e.g. eager
tensors).
"""

import numpy as np

__all__ = [
    "MaskMetrics",
    "choose_polarity",
    "format_table",
    "per_image_accuracy",
    "per_image_iou",
]


def _safe_ratio(numerator, denominator):
    """Element-wise ``numerator / denominator`` with 0 / 0 defined as 1.0.

    Only used where the denominator is zero exactly when the numerator is zero (IoU-like ratios).
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1.0), 1.0)


def _check_truth(truth):
    """Returns ``truth`` as a bool array, rejecting anything that is not {0, 1}-valued."""
    truth = np.asarray(truth)
    if truth.dtype != np.bool_:
        # A 0/255 mask or a soft mask here would silently give wrong scores.
        if not np.all((truth == 0) | (truth == 1)):
            raise ValueError("truth masks must contain only 0 and 1 (got values outside {0, 1}).")
        truth = truth == 1
    return truth


def _check_shapes(pred, truth):
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}.")
    if pred.ndim < 2:
        raise ValueError(f"masks must be batched, [B, H, W, 1]; got shape {pred.shape}.")


def _per_image_counts(pred_binary, truth):
    """Per-image confusion counts.

    Args:
        pred_binary: bool ``[B, ...]``, predicted foreground.
        truth: bool ``[B, ...]``, true foreground.

    Returns:
        int64 ``[B, 4]``: columns ``(tp, fp, fn, tn)`` counted in pixels.
    """
    batch = pred_binary.shape[0]
    p = pred_binary.reshape(batch, -1)
    g = truth.reshape(batch, -1)
    tp = np.count_nonzero(p & g, axis=1)
    fp = np.count_nonzero(p & ~g, axis=1)
    fn = np.count_nonzero(~p & g, axis=1)
    tn = p.shape[1] - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def per_image_iou(pred_binary, truth):
    """Foreground IoU of each image, |P ∩ G| / |P ∪ G|.

    Args:
        pred_binary: ``[B, H, W, 1]`` predicted foreground, bool or {0, 1}.
        truth: ``[B, H, W, 1]`` true foreground, bool or {0, 1}.

    Returns:
        float64 ``[B]`` in ``[0, 1]``. An image where both P and G are empty scores 1.0 (0 / 0 := 1).
    """
    pred_binary = _check_truth(pred_binary)
    truth = _check_truth(truth)
    _check_shapes(pred_binary, truth)
    tp, fp, fn, _ = _per_image_counts(pred_binary, truth).T
    return _safe_ratio(tp, tp + fp + fn)


def per_image_accuracy(pred_binary, truth):
    """Pixel accuracy of each image, mean(P == G).

    Args:
        pred_binary: ``[B, H, W, 1]`` predicted foreground, bool or {0, 1}.
        truth: ``[B, H, W, 1]`` true foreground, bool or {0, 1}.

    Returns:
        float64 ``[B]`` in ``[0, 1]``.
    """
    pred_binary = _check_truth(pred_binary)
    truth = _check_truth(truth)
    _check_shapes(pred_binary, truth)
    tp, _, _, tn = _per_image_counts(pred_binary, truth).T
    num_pixels = int(np.prod(truth.shape[1:]))
    return (tp + tn) / float(num_pixels)


def _check_batch_size(redo_batch_size):
    if redo_batch_size is not None and (int(redo_batch_size) != redo_batch_size or redo_batch_size < 1):
        raise ValueError(f"redo_batch_size must be a positive integer or None, got {redo_batch_size!r}.")


class MaskMetrics:
    """Streaming accumulator of all tfseg mask metrics (see the module docstring for the protocol).

    Memory is small: each ``update`` keeps four int64 confusion counts per image (tp, fp, fn, tn), from which
    every per-image score, both polarities and the dataset-level confusion matrix are derived in ``result``.

    ReDO batching (``redo_iou`` / ``redo_acc``): the ReDO code averages per-batch means over a shuffled loader
    with ``drop_last=True``. Two ways to say what a batch is:

    * ``redo_batch_size=None`` (default): each ``update`` call is one batch. The last call is dropped when it
      holds fewer images than the first call (an incomplete final batch); a single call is never dropped.
    * ``redo_batch_size=k``: the images, in update order, are cut into consecutive batches of ``k`` and the
      remainder (< k images) is dropped. With ``k`` = the ReDO batch size (20) and a shuffled input order this
      is the ReDO code's protocol exactly. If fewer than ``k`` images were seen, the ReDO scores are NaN (the
      reference code would divide by zero).

    Every other score is independent of how the images were split into updates.

    Example:
        >>> metrics = MaskMetrics(threshold=0.5)
        >>> for images, truth in val_batches:
        ...   metrics.update(mask_net(images), truth)
        >>> print(format_table(metrics.result()))

    Args:
        threshold: a pixel is foreground when ``pred_soft >= threshold``.
        redo_batch_size: default batch size for the ReDO protocol, or None for one batch per ``update`` call.
            ``result(redo_batch_size=...)`` overrides it.
    """

    def __init__(self, threshold=0.5, redo_batch_size=None):
        _check_batch_size(redo_batch_size)
        self.threshold = float(threshold)
        self.redo_batch_size = redo_batch_size
        self.reset()

    def reset(self):
        """Forgets every image seen so far."""
        self._counts = []  # list of int64 [b, 4] arrays, columns (tp, fp, fn, tn)
        self._batch_sizes = []

    def update(self, pred_soft, truth):
        """Adds a batch of images.

        Args:
            pred_soft: ``[B, H, W, 1]`` float in ``[0, 1]``, probability of the region taken as foreground
                (bool masks work too).
            truth: ``[B, H, W, 1]`` ground-truth foreground, {0, 1} or bool.

        Raises:
            ValueError: on mismatched shapes or a truth mask with values other than 0 and 1.
        """
        pred_soft = np.asarray(pred_soft)
        truth = _check_truth(truth)
        _check_shapes(pred_soft, truth)
        if pred_soft.shape[0] == 0:
            return
        self._counts.append(_per_image_counts(pred_soft >= self.threshold, truth))
        self._batch_sizes.append(pred_soft.shape[0])

    @property
    def num_images(self):
        return int(sum(self._batch_sizes))

    def _redo_batch_sizes(self, redo_batch_size):
        if redo_batch_size is None:
            sizes = list(self._batch_sizes)
            if len(sizes) > 1 and sizes[-1] < sizes[0]:
                sizes = sizes[:-1]
            return sizes
        return [int(redo_batch_size)] * (self.num_images // int(redo_batch_size))

    def result(self, redo_batch_size=None):
        """Computes every metric over the images seen since the last ``reset``.

        Args:
            redo_batch_size: batch size for ``redo_iou`` / ``redo_acc``; None uses the constructor's value (whose
                None means one batch per ``update`` call).

        Returns:
            A dict of Python floats (NaN when no image was seen) with keys

            * ``fg_iou``, ``bg_iou``, ``miou`` (= mean of the two), ``accuracy``: fixed polarity, means over images.
            * ``confusion_miou``, ``precision``, ``recall``, ``f1``: fixed polarity, from the dataset-level 2x2
              confusion matrix (``confusion_miou`` = mean of the fg-class and bg-class IoU). Precision (recall) is
              1.0 when nothing is predicted (true) as foreground and there are no false negatives (positives),
              else 0.0 on an empty denominator; ``f1`` = 2tp / (2tp + fp + fn) with 0 / 0 := 1.
            * ``best_perm_fg_iou``, ``best_perm_accuracy``: per image, the better of the two assignments, chosen
              independently for IoU and for accuracy (ReDO code).
            * ``best_perm_miou``: per image, the assignment that maximises fg IoU is chosen (ties keep the given
              polarity) and the image's fg and bg IoU under that same assignment are averaged.
            * ``dataset_perm_fg_iou``, ``dataset_perm_miou``, ``dataset_perm_accuracy``: one assignment for the
              whole set, the one with the larger summed per-image fg IoU (ties keep the given polarity);
              ``dataset_perm_flipped`` (bool) says whether the complement was chosen.
            * ``redo_iou``, ``redo_acc``: per-image best-of-two, then mean of per-batch means, last incomplete
              batch dropped (see the class docstring); ``redo_num_images``: images kept after the drop.
            * ``num_images`` (int), ``threshold`` (float).
        """
        if redo_batch_size is None:
            redo_batch_size = self.redo_batch_size
        _check_batch_size(redo_batch_size)

        nan = float("nan")
        out = {"num_images": self.num_images, "threshold": self.threshold}
        if not self._counts:
            for key in ("fg_iou", "bg_iou", "miou", "accuracy", "confusion_miou", "precision", "recall", "f1",
                        "best_perm_fg_iou", "best_perm_miou", "best_perm_accuracy", "dataset_perm_fg_iou",
                        "dataset_perm_miou", "dataset_perm_accuracy", "redo_iou", "redo_acc"):
                out[key] = nan
            out["dataset_perm_flipped"] = False
            out["redo_num_images"] = 0
            return out

        counts = np.concatenate(self._counts, axis=0)
        tp, fp, fn, tn = counts.T
        num_pixels = tp + fp + fn + tn

        # Per-image scores under the given assignment ...
        fg = _safe_ratio(tp, tp + fp + fn)
        bg = _safe_ratio(tn, tn + fn + fp)
        acc = (tp + tn) / num_pixels
        # ... and under the flipped one (P̄ as foreground): tp' = fn, fp' = tn, fn' = tp, tn' = fp.
        fg_flip = _safe_ratio(fn, fn + tn + tp)
        bg_flip = _safe_ratio(fp, fp + tp + tn)
        acc_flip = (fp + fn) / num_pixels

        out["fg_iou"] = float(fg.mean())
        out["bg_iou"] = float(bg.mean())
        out["miou"] = 0.5 * (out["fg_iou"] + out["bg_iou"])
        out["accuracy"] = float(acc.mean())

        # Python ints: no overflow however many pixels are summed.
        c_tp, c_fp, c_fn, c_tn = (int(v) for v in counts.sum(axis=0, dtype=np.int64))
        conf_fg = float(_safe_ratio(c_tp, c_tp + c_fp + c_fn))
        conf_bg = float(_safe_ratio(c_tn, c_tn + c_fn + c_fp))
        out["confusion_miou"] = 0.5 * (conf_fg + conf_bg)
        out["precision"] = c_tp / (c_tp + c_fp) if c_tp + c_fp else (1.0 if c_fn == 0 else 0.0)
        out["recall"] = c_tp / (c_tp + c_fn) if c_tp + c_fn else (1.0 if c_fp == 0 else 0.0)
        out["f1"] = float(_safe_ratio(2 * c_tp, 2 * c_tp + c_fp + c_fn))

        flip_each = fg_flip > fg
        best_iou = np.maximum(fg, fg_flip)
        best_acc = np.maximum(acc, acc_flip)
        out["best_perm_fg_iou"] = float(best_iou.mean())
        out["best_perm_miou"] = float(np.where(flip_each, 0.5 * (fg_flip + bg_flip), 0.5 * (fg + bg)).mean())
        out["best_perm_accuracy"] = float(best_acc.mean())

        flipped = bool(fg_flip.sum() > fg.sum())
        d_fg, d_bg, d_acc = (fg_flip, bg_flip, acc_flip) if flipped else (fg, bg, acc)
        out["dataset_perm_fg_iou"] = float(d_fg.mean())
        out["dataset_perm_miou"] = 0.5 * (float(d_fg.mean()) + float(d_bg.mean()))
        out["dataset_perm_accuracy"] = float(d_acc.mean())
        out["dataset_perm_flipped"] = flipped

        sizes = self._redo_batch_sizes(redo_batch_size)
        if sizes:
            bounds = np.cumsum([0] + sizes)
            out["redo_iou"] = float(np.mean([best_iou[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])]))
            out["redo_acc"] = float(np.mean([best_acc[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])]))
        else:
            out["redo_iou"] = out["redo_acc"] = nan
        out["redo_num_images"] = int(sum(sizes))
        return out


def choose_polarity(pred_soft, truth, threshold=0.5):
    """Whether the complement of the prediction should be taken as foreground.

    Fix a ReDO-style model's foreground region on the **validation** split with this, then evaluate the test
    split with fixed polarity (after replacing the prediction by its complement if this returned True).
    For a validation set that does not fit in memory, stream it through :class:`MaskMetrics` and read
    ``result()["dataset_perm_flipped"]``, which is the same decision.

    Args:
        pred_soft: ``[B, H, W, 1]`` float in ``[0, 1]``.
        truth: ``[B, H, W, 1]`` in {0, 1}.
        threshold: foreground is ``pred_soft >= threshold``.

    Returns:
        True when the complement ``pred_soft < threshold`` has a strictly higher mean per-image fg IoU than
        ``pred_soft >= threshold``. Note the complement is of the binarised mask: to apply the decision to soft
        masks use ``1 - pred_soft`` and be aware that pixels exactly at ``1 - threshold`` then change side.
    """
    metrics = MaskMetrics(threshold=threshold)
    metrics.update(pred_soft, truth)
    return metrics.result()["dataset_perm_flipped"]


def format_table(results):
    """Formats a :meth:`MaskMetrics.result` dict as a readable table.

    Args:
        results: the dict returned by ``MaskMetrics.result()``.

    Returns:
        A multi-line string: a header with threshold and image count, rows fixed polarity / dataset
        permutation / per-image best permutation with columns fg IoU, mIoU, accuracy, the label-free
        baselines of the same images when `results["baselines"]` has them (the floor every score is read
        against), then the ReDO-protocol and confusion-matrix scores.
    """
    rows = [
        ("fixed polarity", "fg_iou", "miou", "accuracy"),
        ("dataset permutation", "dataset_perm_fg_iou", "dataset_perm_miou", "dataset_perm_accuracy"),
        ("per-image best permutation", "best_perm_fg_iou", "best_perm_miou", "best_perm_accuracy"),
    ]
    label_width = max([len(r[0]) for r in rows] + [len("baseline: " + n) for n in results.get("baselines", {})])
    lines = [
        f"mask metrics: threshold {results['threshold']:g}, {results['num_images']} images",
        f"{'':<{label_width}}  {'fg IoU':>8}  {'mIoU':>8}  {'accuracy':>8}",
    ]
    for label, fg_key, miou_key, acc_key in rows:
        line = (f"{label:<{label_width}}  {results[fg_key]:>8.4f}  {results[miou_key]:>8.4f}  "
                f"{results[acc_key]:>8.4f}")
        if fg_key.startswith("dataset_perm") and "dataset_perm_flipped" in results:
            line += "  (complement chosen)" if results["dataset_perm_flipped"] else "  (as given)"
        lines.append(line)
    for name, scores in results.get("baselines", {}).items():
        lines.append(f"{'baseline: ' + name:<{label_width}}  {scores['fg_iou']:>8.4f}  {scores['miou']:>8.4f}  "
                     f"{scores['accuracy']:>8.4f}")
    if "redo_iou" in results:
        lines.append(f"ReDO protocol (per-image best, mean of batch means, drop-last over "
                     f"{results.get('redo_num_images', '?')} images): IoU {results['redo_iou']:.4f}, "
                     f"Acc {results['redo_acc']:.4f}")
    if "confusion_miou" in results:
        lines.append(f"dataset confusion matrix (fixed polarity): mIoU {results['confusion_miou']:.4f}, "
                     f"fg precision {results['precision']:.4f}, recall {results['recall']:.4f}, "
                     f"F1 {results['f1']:.4f}")
    return "\n".join(lines)

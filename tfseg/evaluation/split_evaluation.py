"""Scores a trained method on a whole split of its run's data and files the result in the run folder."""
import json
import os

from tfseg.data import pipeline
from tfseg.errors import DataError, SplitUnavailableError
from tfseg.evaluation import evaluator, grids
from tfseg.training import run_dir


def eval_dataset(config, split):
    """Batches of `split` for scoring, at the run's resolution and evaluation batch size."""
    return pipeline.make_dataset(split, config.eval_batch_size, resolution=config.resolution)


def run_split_evaluation(model, config, model_dir, split):
    """Scores `model` on `split` and writes `run_dir.eval_files(split)` (scores, image grid) into `model_dir`.

    Raises:
        DataError: the run's data have no masks for `split` (the message says how to get masks of
            the photos instead).
    """
    try:
        labelled = pipeline.dataset_has_masks(split)
    except SplitUnavailableError:
        labelled = False
    if not labelled:
        raise DataError(
            f"this run's data have no masks for the {split!r} split, so there is nothing to score. To see "
            f"the masks of your photos: python -m tfseg.export --model_dir={model_dir} --export_dir=serving/"
            f"{os.path.basename(os.path.normpath(model_dir))}, then python -m tfseg.predict --export_dir=serving/"
            f"{os.path.basename(os.path.normpath(model_dir))}/1 --images=DIR --out=DIR. To score, bind a mask "
            "folder (tfseg.data.image_folder_source.mask_dir) when training.")
    results, sample = evaluator.evaluate(model, eval_dataset(config, split))
    results = {k: (v.item() if hasattr(v, "item") else v) for k, v in results.items()}
    json_file, png_file = run_dir.eval_files(split)
    with open(os.path.join(model_dir, json_file), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    grids.save_png(evaluator.prediction_grid(sample, cell=256), os.path.join(model_dir, png_file))
    return results

"""SavedModel version folders as TF Serving reads them: `<export_dir>/<integer>/`.

TF Serving serves the largest integer-named folder of its model base path that holds a SavedModel and
ignores any other name (tfseg.export's temporary folder, for one). `tfseg.export` writes the next free
number; predict and the benchmark load the latest, as the server would. Local paths and any
`tf.io.gfile` URL (gs://...) work.
"""
import os

import tensorflow as tf


def version_numbers(export_dir):
    """The integer folder names under `export_dir`, ascending; [] when it is not a folder."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(export_dir))
    return sorted(int(name) for name in names if name.isdigit())


def next_version(export_dir):
    """The next free integer version under `export_dir`: 1 + the largest integer folder, or 1."""
    return max(version_numbers(export_dir), default=0) + 1


def latest_saved_model(path):
    """`path` itself if it is a SavedModel, else its largest integer version folder holding one.

    Raises:
        FileNotFoundError: naming `path`, which is neither.
    """
    if tf.saved_model.contains_saved_model(path):
        return path
    versions = [v for v in version_numbers(path) if tf.saved_model.contains_saved_model(os.path.join(path, str(v)))]
    if not versions:
        raise FileNotFoundError(f"'{path}' holds no SavedModel, neither itself nor in an integer version folder. "
                                "Export one with python -m tfseg.export --model_dir=<training run> "
                                "--export_dir=serving/tfseg")
    return os.path.join(path, str(versions[-1]))

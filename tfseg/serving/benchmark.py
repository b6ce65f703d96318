"""Inference speed of an exported SavedModel: images/s of both signatures at batch 1 and 32.

    from tfseg.serving import benchmark
    benchmark.savedmodel_rates("serving/tfseg/1", resolution=32)
    # {"savedmodel_bytes_b1": ..., "savedmodel_bytes_b32": ..., "savedmodel_tensor_b1": ..., ...}

The bytes signature is fed PNG files (decoding, resizing and PNG-encoding the masks are part of the
figure, as in TF Serving); the tensor signature uint8 images of the same size. Each figure is the median
over `repeats` timings, each running calls for at least `min_seconds` after one untimed warm-up call.
Loading the SavedModel and the first call are excluded. HTTP and JSON overheads are not included.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf

from tfseg.serving import export_module
from tfseg.serving.versions import latest_saved_model


def _median_rate(fn, images_per_call, repeats, min_seconds):
    fn()  # warm-up: graph optimisation on the first call
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and calls >= 2:
                break
        rates.append(calls * images_per_call / elapsed)
    return statistics.median(rates)


def savedmodel_rates(export_dir, resolution, batch_sizes=(1, 32), image_size=None, repeats=3, min_seconds=1.0,
                     seed=0):
    """Measures images/s of the exported signatures.

    Args:
        export_dir: a version folder (`serving/tfseg/1`) or the base folder (its latest version is used).
        resolution: the model's R; the default input image size.
        batch_sizes: batch sizes to time.
        image_size: `(height, width)` of the input images; default `(resolution, resolution)`.
        repeats: timings per figure (the median is reported).
        min_seconds: least duration of one timing.
        seed: seeds the random input images.

    Returns:
        dict `{"savedmodel_<bytes|tensor>_b<batch>": images per second}`.
    """
    loaded = tf.saved_model.load(latest_saved_model(export_dir))
    by_bytes = loaded.signatures[export_module.SIGNATURE_BYTES]
    by_tensor = loaded.signatures[export_module.SIGNATURE_TENSOR]
    h, w = image_size or (resolution, resolution)
    rng = np.random.default_rng(seed)
    rates = {}
    for batch in batch_sizes:
        images = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
        files = tf.constant([tf.io.encode_png(image).numpy() for image in images])
        tensor = tf.constant(images)
        rates[f"savedmodel_bytes_b{batch}"] = _median_rate(
            lambda files=files: by_bytes(**{export_module.INPUT_BYTES: files})["mask"].numpy(), batch, repeats,
            min_seconds)
        rates[f"savedmodel_tensor_b{batch}"] = _median_rate(
            lambda tensor=tensor: by_tensor(**{export_module.INPUT_TENSOR: tensor})["mask"].numpy(), batch, repeats,
            min_seconds)
    return rates

"""Which files are photos, and the one listing of a folder's photos (folder source, predict, tools).

Standard library only (TensorFlow is imported for a `gs://`-style URL alone), so the TF Serving
client in tools/ can use it on a machine without TensorFlow.
"""
from __future__ import annotations

import os

#: Lower-case extensions of the files listed as photos: the formats `tfseg.data.decode` reads
#: (through pillow). A file with another extension is not a photo to any tfseg program.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".gif", ".tif", ".tiff")


def list_images(root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """Relative posix paths of the image files under `root`, recursively, sorted.

    Symbolic links to folders are followed once: a folder already visited (by its real path) is
    not entered again, so a link loop or two links to one folder cannot list a photo twice.
    """
    if "://" in root:  # gs://, s3://, ...: no links there; tf.io.gfile lists them.
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        walk = tf.io.gfile.walk(root)
    else:
        walk = os.walk(root, followlinks=True)
    found, seen_dirs, seen_files = [], set(), set()
    for dirpath, dirnames, files in walk:
        real = dirpath if "://" in root else os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        # Real folders before links, so a photo is listed under its own path where possible.
        dirnames.sort(key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in extensions:
                continue
            real_file = os.path.join(real, name) if "://" in root else os.path.realpath(os.path.join(dirpath, name))
            if real_file in seen_files:
                continue
            seen_files.add(real_file)
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)

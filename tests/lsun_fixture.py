"""Writes a small LMDB laid out like an unzipped official LSUN object archive, for tests.

`unzip horse.zip` gives a folder `horse/` with `data.mdb` and `lock.mdb`; keys are 40-hex-digit image
ids (ascii), values the encoded photos: WebP, occasionally JPEG.
"""
import hashlib
import io
import os

import lmdb
import numpy as np
from PIL import Image


def photo(i, size=(96, 128)):
    """A deterministic RGB test photo `uint8 [h, w, 3]`: a bright square on a gradient."""
    h, w = size
    rng = np.random.default_rng(i)
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = np.linspace(0, 120, w, dtype=np.uint8)[None, :, None]
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    image[top:top + h // 3, left:left + w // 3] = rng.integers(150, 256, size=3, dtype=np.uint8)
    return image


def encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def write_lsun_lmdb(folder, num_images=6, num_jpeg=1, num_corrupt=1, size=(96, 128)):
    """Writes `folder/data.mdb` and `folder/lock.mdb`; returns `(keys in cursor order, {key: kind})`.

    The first `num_jpeg` images are JPEG, the rest WebP; `num_corrupt` extra values are truncated
    WebP bytes. Kinds: "webp", "jpeg" or "corrupt".
    """
    os.makedirs(folder, exist_ok=True)
    kinds = {}
    env = lmdb.open(folder, map_size=64 << 20, subdir=True)
    with env.begin(write=True) as txn:
        for i in range(num_images + num_corrupt):
            key = hashlib.sha1(f"lsun-test-{i}".encode()).hexdigest().encode()
            if i >= num_images:
                kind, value = "corrupt", encode(photo(i, size), "WEBP")[:40]
            elif i < num_jpeg:
                kind, value = "jpeg", encode(photo(i, size), "JPEG")
            else:
                kind, value = "webp", encode(photo(i, size), "WEBP")
            txn.put(key, value)
            kinds[key] = kind
    env.close()
    return sorted(kinds), kinds

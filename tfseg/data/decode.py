"""Photo bytes -> RGB pixels, and the record of files skipped as unreadable.

Every source that reads encoded photos (a folder, an LSUN LMDB, `tools/prepare_data.py`) decodes
them here, so that they all agree on what a photo is: JPEG, PNG (8- and 16-bit, grey, palette,
alpha), WebP (LSUN's format), GIF (first frame), BMP, PPM/PGM and TIFF, always returned as
`uint8 [h, w, 3]`.

Unreadable data are a fact of life in scraped photo collections. A truncated JPEG, a zero-byte
file or a text file with an image extension is *skipped*, with an `absl.logging` warning once per
file, and recorded; it never stops training. The record is process-wide and cumulative over all
sources::

    from tfseg.data import decode
    decode.skipped_count()   # distinct files (or LMDB keys) skipped so far in this process
    decode.skipped_files()   # {name: reason}, in the order they were met
    decode.reset_skipped_files()
"""

from __future__ import annotations

import io
import threading

from absl import logging
import numpy as np
from PIL import Image


_skip_lock = threading.Lock()
_skipped: dict[str, str] = {}


class UnreadableImage(ValueError):
    """The bytes are not an image this package can decode; the message says why."""


def skipped_files() -> dict[str, str]:
    """Files (or LMDB keys) skipped as unreadable so far in this process: `{name: reason}`, in order met."""
    with _skip_lock:
        return dict(_skipped)


def skipped_count() -> int:
    """Number of distinct files (or LMDB keys) skipped as unreadable so far in this process."""
    with _skip_lock:
        return len(_skipped)


def reset_skipped_files() -> None:
    """Forgets the skipped-file record (e.g. between evaluations, or in tests)."""
    with _skip_lock:
        _skipped.clear()


def record_skip(name: str, reason: str) -> None:
    """Records `name` as skipped; warns once per name (training repeats the list forever)."""
    with _skip_lock:
        first_time = name not in _skipped
        _skipped.setdefault(name, reason)
    if first_time:
        logging.warning("Skipping unreadable image %s (%s).", name, reason)


def first_skipped(n: int = 5) -> str:
    """The first `n` skipped names with their reasons, one per line, for error messages."""
    items = list(skipped_files().items())[:n]
    return "\n".join(f"    {name}: {reason}" for name, reason in items)


def to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as `uint8 [h, w, 3]`, scaling 16-bit and 32-bit grey to 8 bits.

    PIL's own `convert("RGB")` clips a 16-bit grey PNG ("I;16", "I") to 255, so such photos would
    come out almost white; they are scaled by their bit depth here instead.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit PNGs often arrive as mode "I"; their range tells the depth.
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded photo bytes -> `uint8 [h, w, 3]` (first frame of an animation).

    Raises:
        UnreadableImage: empty data, an unknown format, or a truncated or corrupt image.
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Decodes now, so truncation raises here and not later.
        return to_rgb(image)
    except Exception as e:  # pylint: disable=broad-except
        # PIL signals bad data with OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise UnreadableImage(f"{type(e).__name__}: {e}") from e


def decode_or_skip(data: bytes, name: str) -> tuple[np.ndarray, bool]:
    """`(rgb, True)`, or `(a 1x1 placeholder, False)` after recording `name` as skipped."""
    try:
        return decode_rgb(data), True
    except UnreadableImage as e:
        record_skip(name, str(e))
        return np.zeros((1, 1, 3), np.uint8), False



"""Image grids for snapshots and TensorBoard: images, masks and overlays side by side.

Value conventions are explicit in the function names: :func:`images_to_uint8` takes images in ``[-1, 1]``,
:func:`masks_to_uint8` takes masks in ``[0, 1]``. Everything that goes into :func:`make_grid` is
``[B, H, W, 3]`` uint8: one array per column, one batch element per row, e.g.
``make_grid([images, truth, prediction, overlay(images, pred_mask)])``.

Numpy and pillow only; TensorFlow is not imported.
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "images_to_uint8",
    "labelled_grid",
    "make_grid",
    "masks_to_uint8",
    "overlay",
    "save_png",
    "tensorboard_grid",
]


def _to_rgb(x):
    """Repeats a single channel three times; leaves 3 channels alone."""
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {x.shape}.")
    return x


def images_to_uint8(images):
    """Converts images from ``[-1, 1]`` to uint8 RGB.

    Args:
        images: ``[B, H, W, C]`` float in ``[-1, 1]``, C = 1 or 3. Values outside are clipped.

    Returns:
        uint8 ``[B, H, W, 3]``: -1 -> 0, 1 -> 255, rounded to nearest; grey images are repeated to 3 channels.
    """
    images = np.asarray(images, dtype=np.float32)
    out = np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return _to_rgb(out)


def masks_to_uint8(masks):
    """Converts masks from ``[0, 1]`` to uint8 grey shown as RGB.

    Args:
        masks: ``[B, H, W, 1]`` or ``[B, H, W]``, float or bool, in ``[0, 1]``. Values outside are clipped.

    Returns:
        uint8 ``[B, H, W, 3]``: 0 -> black, 1 -> white (255), the grey value repeated in the 3 channels.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 3:
        masks = masks[..., None]
    if masks.shape[-1] != 1:
        raise ValueError(f"masks must have one channel, got shape {masks.shape}.")
    out = np.rint(np.clip(masks, 0.0, 1.0) * 255.0).astype(np.uint8)
    return _to_rgb(out)


def overlay(image_uint8, mask_float, color=(255, 0, 0), alpha=0.5):
    """Tints the masked region of images with a colour.

    Each pixel becomes ``image * (1 - alpha * m) + color * alpha * m``: fully masked pixels are the blend
    ``(1 - alpha) * image + alpha * color``, unmasked pixels are unchanged, soft masks tint in proportion.

    Args:
        image_uint8: ``[B, H, W, 3]`` (or ``[H, W, 3]``) uint8.
        mask_float: ``[B, H, W, 1]`` or ``[B, H, W]`` (resp. ``[H, W, 1]`` / ``[H, W]``) in ``[0, 1]``.
        color: RGB tint, 0-255.
        alpha: opacity of the tint where the mask is 1, in ``[0, 1]``.

    Returns:
        uint8 array shaped like ``image_uint8``.
    """
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (use images_to_uint8 first), got {image.dtype}.")
    mask = np.clip(np.asarray(mask_float, dtype=np.float32), 0.0, 1.0)
    if mask.ndim == image.ndim - 1:
        mask = mask[..., None]
    weight = alpha * mask
    tint = np.asarray(color, dtype=np.float32)
    out = image.astype(np.float32) * (1.0 - weight) + tint * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_grid(columns, padding=2, pad_value=255):
    """Lays out columns of images as one picture.

    Cell (row r, column c) holds ``columns[c][r]``. Every cell is surrounded by ``padding`` pixels, shared
    between neighbours, so the output is ``[B * (H + p) + p, K * (W + p) + p, 3]`` and cell (r, c) starts
    at ``(p + r * (H + p), p + c * (W + p))``.

    Args:
        columns: list of K uint8 ``[B, H, W, 3]`` arrays, all of the same shape.
        padding: width in pixels of the separators and the border.
        pad_value: grey level of the separators (white by default so that black masks stay distinct).

    Returns:
        uint8 ``[B * (H + padding) + padding, K * (W + padding) + padding, 3]``.
    """
    if not columns:
        raise ValueError("make_grid needs at least one column.")
    columns = [np.asarray(c) for c in columns]
    shape = columns[0].shape
    for c in columns:
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[-1] != 3:
            raise ValueError(f"columns must be uint8 [B, H, W, 3]; got {c.dtype} {c.shape}.")
        if c.shape != shape:
            raise ValueError(f"all columns must have the same shape; got {shape} and {c.shape}.")
    rows, height, width, _ = shape
    p = int(padding)
    grid = np.full((rows * (height + p) + p, len(columns) * (width + p) + p, 3), pad_value, dtype=np.uint8)
    for c, column in enumerate(columns):
        x = p + c * (width + p)
        for r in range(rows):
            y = p + r * (height + p)
            grid[y:y + height, x:x + width] = column[r]
    return grid


def _font(size):
    try:
        return ImageFont.load_default(size=size)  # scalable where pillow has FreeType
    except TypeError:  # pragma: no cover  # older pillow
        return ImageFont.load_default()


def labelled_grid(columns, titles, row_labels=None, cell=256, padding=2):
    """:func:`make_grid` for people: cells upscaled to `cell` px, column titles, a label on each row.

    Args:
        columns: list of K uint8 ``[B, H, W, 3]`` arrays, as for :func:`make_grid`.
        titles: K column titles, written above the columns.
        row_labels: B strings written in the top-left corner of each row's first cell (e.g. a score).
        cell: side of a cell in pixels; cells are upscaled by an integer factor (nearest) to at least this.
        padding: as for :func:`make_grid`.

    Returns:
        uint8 ``[H', W', 3]``.
    """
    columns = [np.asarray(c) for c in columns]
    if len(titles) != len(columns):
        raise ValueError(f"{len(titles)} titles for {len(columns)} columns.")
    height = columns[0].shape[1]
    factor = max(1, -(-int(cell) // height))
    big = [np.repeat(np.repeat(c, factor, axis=1), factor, axis=2) for c in columns]
    grid = make_grid(big, padding=padding)
    side = height * factor
    header = max(14, side // 12)
    picture = Image.new("RGB", (grid.shape[1], grid.shape[0] + header), (255, 255, 255))
    picture.paste(Image.fromarray(grid), (0, header))
    draw = ImageDraw.Draw(picture)
    font = _font(int(header * 0.8))
    for k, title in enumerate(titles):
        draw.text((padding + k * (side + padding) + 4, 1), title, fill=(0, 0, 0), font=font)
    for r, label in enumerate(row_labels or []):
        x, y = padding + 2, header + padding + r * (side + padding) + 2
        box = draw.textbbox((x, y), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x, y), label, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def save_png(array, path):
    """Writes a uint8 picture as PNG, creating parent directories.

    Args:
        array: uint8 ``[H, W, 3]``, ``[H, W, 1]`` or ``[H, W]``.
        path: output file name.

    Returns:
        ``path``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8, got {array.dtype}.")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def tensorboard_grid(columns, padding=2, pad_value=255):
    """:func:`make_grid` as a float batch for ``tf.summary.image``.

    Args:
        columns: list of K uint8 ``[B, H, W, 3]`` arrays, as for :func:`make_grid`.
        padding: as for :func:`make_grid`.
        pad_value: as for :func:`make_grid`.

    Returns:
        numpy float32 ``[1, H', W', 3]`` in ``[0, 1]``.
    """
    grid = make_grid(columns, padding=padding, pad_value=pad_value)
    return (grid.astype(np.float32) / 255.0)[None]

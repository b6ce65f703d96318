"""Segmenting a folder of the user's own images (the library behind `python -m tfseg.predict`).

The images go through the `serving_default` computation (JPEG/PNG bytes in, masks out), either from an
exported SavedModel or built in-process from a run's checkpoint, so local predictions are exactly
what TF Serving returns. Per image ``<name>.<ext>`` the output folder gets

* ``<name>_mask.png``: the foreground mask, 8-bit grey (255 = foreground), at the image's size;
* ``<name>_cutout.png``: the image as RGBA with the mask as alpha;
* ``<name>_overlay.png``: the image with the foreground tinted red;

plus ``contact_sheet.png`` (titled columns image | mask | overlay | cut-out on grey, each row named by
its file; the first `sheet_rows` images)
and ``predictions.json`` (foreground fraction per image, skipped files with the reason). Sub-folders
of the input folder are mirrored. Files other than JPEG and PNG (BMP, PPM, ...) are converted to PNG
with pillow first; files nobody can read are reported and skipped.
"""
from __future__ import annotations

import io
import json
import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError
import tensorflow as tf

from tfseg.data import decode
from tfseg.evaluation import grids
from tfseg.image_files import list_images
from tfseg.modeling import refinement
from tfseg.progress import ProgressBar
from tfseg.serving import export_module
from tfseg.serving.versions import latest_saved_model

# One "unreadable" error for the package: the training sources' (tfseg.data.decode). The photo
# formats and the folder listing are tfseg.image_files'.
UnreadableImage = decode.UnreadableImage


# --------------------------------------------------------------------------------------------------
# Segmenters: list of file bytes -> dict of numpy outputs.
# --------------------------------------------------------------------------------------------------


def load_exported(version_dir):
    """The `serving_default` signature of an exported SavedModel, as a callable on a list of bytes.

    Args:
        version_dir: `<export_dir>/<version>`, a folder written by `tfseg.export`; given the base folder
            `<export_dir>`, its latest version is used (as TF Serving does).

    Returns:
        `(segment, metadata)`: `segment(list of bytes) -> {"mask", "mask_png_bytes",
        "foreground_fraction"}` numpy arrays; metadata is the export's `assets/tfseg_export.json` plus
        "version_dir".

    Raises:
        FileNotFoundError: `version_dir` holds no SavedModel.
    """
    version_dir = latest_saved_model(version_dir)
    loaded = tf.saved_model.load(version_dir)
    signature = loaded.signatures[export_module.SIGNATURE_BYTES]

    def segment(data):
        out = signature(**{export_module.INPUT_BYTES: tf.constant(data, tf.string)})
        return {k: v.numpy() for k, v in out.items()}

    segment.keep_alive = loaded  # the signature needs its SavedModel object alive
    try:
        metadata = export_module.read_metadata(version_dir)
    except FileNotFoundError:
        metadata = {}
    metadata["version_dir"] = version_dir
    return segment, metadata


def load_latent_generator(version_dir):
    """The `serve_latent` signature of an export, for a model that masks the images it draws itself.

    Returns:
        `(draw, z_dim)`: `draw(z float32 [b, z_dim]) -> (soft masks [b, R, R], images uint8 [b, R, R, 3])`.

    Raises:
        FileNotFoundError: `version_dir` holds no SavedModel.
        ValueError: the export has no `serve_latent` signature (it segments photos only).
    """
    version_dir = latest_saved_model(version_dir)
    loaded = tf.saved_model.load(version_dir)
    if export_module.SIGNATURE_LATENT not in loaded.signatures:
        raise ValueError(f"{version_dir} has no '{export_module.SIGNATURE_LATENT}' signature: only a model "
                         "that draws its own images serves masks from latent codes (a Labels4Free run with "
                         "tfseg.methods.labels4free.export_latent_signature = True, as "
                         "tools/convert_labels4free.py writes); segment photos with --images instead")
    signature = loaded.signatures[export_module.SIGNATURE_LATENT]
    z_dim = int(signature.structured_input_signature[1][export_module.INPUT_LATENT].shape[-1])

    def draw(z):
        out = signature(**{export_module.INPUT_LATENT: tf.constant(z, tf.float32)})
        return out["mask"].numpy()[..., 0], grids.images_to_uint8(out["image"].numpy())

    draw.keep_alive = loaded
    return draw, z_dim


def predict_latents(draw, latents, out_dir, batch_size=16):
    """Masks of the images a model draws from `latents` ([n, z_dim]), written like `predict_folder`'s:
    `<i>_image.png`, `<i>_mask.png` (255 at or above 0.5, the evaluation threshold), `<i>_overlay.png`,
    and `masks.npy`, the soft masks before the threshold ([n, R, R] float32). Returns the file names."""
    os.makedirs(out_dir, exist_ok=True)
    masks, written = [], []
    width = len(str(max(len(latents) - 1, 0)))
    for start in range(0, len(latents), batch_size):
        soft, images = draw(latents[start:start + batch_size])
        masks.append(soft.astype(np.float32))
        for offset, (mask, image) in enumerate(zip(soft, images)):
            stem = f"{start + offset:0{width}d}"
            Image.fromarray(image).save(os.path.join(out_dir, stem + "_image.png"))
            binary = np.where(mask >= 0.5, 255, 0).astype(np.uint8)
            Image.fromarray(binary).save(os.path.join(out_dir, stem + "_mask.png"))
            grids.save_png(grids.overlay(image, binary.astype(np.float32) / 255.0),
                           os.path.join(out_dir, stem + "_overlay.png"))
            written.append(stem)
    np.save(os.path.join(out_dir, "masks.npy"), np.concatenate(masks) if masks else np.zeros((0,), np.float32))
    return written


def load_from_run(model_dir, which="best", extra_bindings=()):
    """The same computation as the export, built in-process from a run's checkpoint (with
    `extra_bindings` applied over the run's config).

    Returns:
        `(segment, metadata)` as in `load_exported`.

    Raises:
        tfseg.errors.ConfigError: `model_dir` has no config.gin or no checkpoint.
    """
    from tfseg.training import loading  # pylint: disable=import-outside-toplevel

    model, train_config, checkpoint = loading.load_trained(model_dir, which, extra_bindings)
    serving = export_module.serving_functions_from_run(model, train_config)
    fn = tf.function(serving.from_bytes, input_signature=[tf.TensorSpec([None], tf.string)])

    def segment(data):
        return {k: v.numpy() for k, v in fn(tf.constant(data, tf.string)).items()}

    return segment, {"method": type(model).__name__, "resolution": serving.resolution,
                     "square_resize": serving.square_resize, "checkpoint": checkpoint,
                     "mask_refinement": refinement.describe(model.mask_refinement)}


def inverted(segment, resolution, square_resize=False, refined=False):
    """`segment` with the other of two regions as the foreground (`tfseg.predict --invert`).

    The R x R mask is inverted and mapped back onto each image exactly as the export does
    (`export_module.mask_to_original_size`), so pixels the model never saw stay 0. When the masks
    are `refined` at the photo's size (`tfseg.mask_refinement`), every pixel of the photo was decided
    and the refinement treats both regions alike: the PNG itself is inverted.
    """
    def segment_inverted(data):
        out = segment(data)
        mask = 1.0 - out["mask"]
        pngs = []
        for one_mask, png in zip(mask, out["mask_png_bytes"]):
            if refined:
                pngs.append(export_module.encode_mask_png(
                    1.0 - tf.io.decode_png(png)[..., :1].numpy().astype(np.float32) / 255.0).numpy())
                continue
            width, height = Image.open(io.BytesIO(png)).size
            full = export_module.mask_to_original_size(tf.constant(one_mask), tf.constant(height),
                                                       tf.constant(width), resolution, square_resize)
            pngs.append(export_module.encode_mask_png(full).numpy())
        fraction = (mask >= export_module.THRESHOLD).mean(axis=(1, 2, 3)).astype(np.float32)
        return {"mask": mask, "mask_png_bytes": np.array(pngs, dtype=object), "foreground_fraction": fraction}

    segment_inverted.keep_alive = getattr(segment, "keep_alive", None)
    return segment_inverted


# --------------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------------


def is_jpeg_or_png(data):
    return data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")


#: Side to which `read_image_bytes` shrinks a photo of more than `export_module.MAX_PIXELS` pixels.
REDUCED_SIDE = 4096


def read_image_bytes(path, max_pixels=None, reduced=None):
    """The bytes to send for the file at `path`: the file itself if a JPEG or PNG of at most `max_pixels`
    pixels (default: the export's limit), else a PNG made of it, shrunk to at most `REDUCED_SIDE` px.

    A large photo is read at reduced scale where the format allows (JPEG's DCT scaling), so an
    8000 x 5000 px file costs tens, not thousands, of MB. When `reduced` (a dict) is given, a shrunk
    file's new size is recorded there.

    Raises:
        UnreadableImage: empty, or neither JPEG/PNG nor a format pillow reads.
    """
    max_pixels = export_module.MAX_PIXELS if max_pixels is None else max_pixels
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise UnreadableImage("empty file")
    if is_jpeg_or_png(data):
        try:
            size = Image.open(io.BytesIO(data)).size  # reads the header only
        except Exception:  # pylint: disable=broad-except  # the export's own checks name what is wrong
            return data
        if size[0] * size[1] <= max_pixels:
            return data
    try:
        image = Image.open(io.BytesIO(data))
        too_big = image.size[0] * image.size[1] > max_pixels
        if too_big:
            scale = min(REDUCED_SIDE / max(image.size), (max_pixels / (image.size[0] * image.size[1])) ** 0.5)
            target = (max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale)))
            image.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale directly
            image = image.convert("RGB")
            image.thumbnail(target, Image.BILINEAR)
            if reduced is not None:
                reduced[path] = f"shrunk to {image.size[0]} x {image.size[1]} px (more than {max_pixels:,} pixels)"
        image.load()
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    except UnidentifiedImageError as err:
        raise UnreadableImage("not an image (neither JPEG, PNG nor another format pillow reads)") from err
    except Exception as err:  # pylint: disable=broad-except
        # pillow signals bad files with OSError, SyntaxError, ValueError, ...: all mean "unreadable".
        raise UnreadableImage(f"unreadable image ({type(err).__name__}: {err})") from err
    return buffer.getvalue()


def output_names(relative_paths):
    """Output stem per input: the path without extension, or with it (a.jpg -> a_jpg) where two collide."""
    stems = [os.path.splitext(p)[0] for p in relative_paths]
    taken = {}
    for stem in stems:
        taken[stem] = taken.get(stem, 0) + 1
    return [stem if taken[stem] == 1 else p.replace(".", "_") for stem, p in zip(stems, relative_paths)]


def error_text(err, with_index=True):
    """The useful line of a TF error (the assertion's message or the decoder's), without the graph noise.

    Args:
        err: a `tf.errors.OpError` (or any exception).
        with_index: keep the "image_bytes[i] " prefix of the export's checks (drop it for a batch of one).
    """
    message = getattr(err, "message", None) or str(err)
    start = message.find("assertion failed: [")
    if start >= 0:
        end = message.find("]\n", start)
        end = message.find("]", start + 19) if end < 0 else end
        text = message[start + len("assertion failed: ["):end]
        return text if with_index else re.sub(r"^image_bytes\[\d+\]", "the file", text)
    if "Detected at node" in message:
        # In-process graph errors carry the Python stack of the node first; the op's own message is
        # the last line before the "[[{{node ...}}]]" tag.
        head = message.split("[[{{node")[0].strip().splitlines()
        if head:
            return head[-1].strip().split(" [Op:")[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "<stack",
                                                             "[[{{"))]
    return (useful or lines or [message])[0].split(" [[{{")[0].split(" [Op:")[0]


# --------------------------------------------------------------------------------------------------
# Outputs.
# --------------------------------------------------------------------------------------------------


def _thumbnail(array, size, fill):
    """uint8 [h, w, 3] -> [size, size, 3]: fitted inside the square, centred, aspect kept."""
    image = Image.fromarray(array)
    scale = size / max(image.size)
    # Nearest when enlarging keeps small model-sized images crisp; bilinear when shrinking photos.
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.NEAREST if scale > 1 else Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return np.asarray(canvas)


def write_outputs(out_dir, stem, image_rgb, mask_png):
    """Writes the mask, cut-out and overlay of one image; returns (overlay, cut-out on grey) for the sheet.

    Args:
        image_rgb: uint8 [h, w, 3], the decoded input.
        mask_png: bytes, the `mask_png_bytes` output (grey, [h, w]).
    """
    base = os.path.join(out_dir, stem)
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    with open(base + "_mask.png", "wb") as f:
        f.write(mask_png)
    alpha = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L"))
    Image.fromarray(np.dstack([image_rgb, alpha])).save(base + "_cutout.png")
    overlay = grids.overlay(image_rgb, alpha.astype(np.float32) / 255.0)
    grids.save_png(overlay, base + "_overlay.png")
    weight = alpha[..., None].astype(np.float32) / 255.0
    on_grey = np.rint(image_rgb * weight + 128.0 * (1.0 - weight)).astype(np.uint8)
    return alpha, overlay, on_grey


def predict_folder(segment, images_dir, out_dir, batch_size=16, sheet_rows=64, thumb=96, stream=None):
    """Segments every image under `images_dir` and writes the outputs to `out_dir`.

    Args:
        segment: a callable from `load_exported` or `load_from_run`.
        images_dir: folder of images, searched recursively.
        out_dir: destination folder, created if needed.
        batch_size: images per call of the model.
        sheet_rows: images shown in `contact_sheet.png` (the first ones in sorted order).
        thumb: side in pixels of a contact-sheet cell.
        stream: where the progress bar and skip reports go (stderr by default).

    Returns:
        dict with "written" (list of relative paths), "skipped" ({relative path: reason}),
        "foreground_fraction" ({relative path: value}) and "contact_sheet" (path or None).
    """
    files = list_images(images_dir)
    names = output_names(files)
    os.makedirs(out_dir, exist_ok=True)
    bar = ProgressBar(len(files), stream)
    written, skipped, fractions, sheet, reduced = [], {}, {}, [], {}

    def skip(rel, reason):
        skipped[rel] = reason
        bar.message(f"skipped {os.path.join(images_dir, rel)}: {reason}")

    def run(items):
        """items: list of (rel, stem, bytes). Runs them as one batch; one by one if the batch fails."""
        try:
            return [(item, out) for item, out in zip(items, _split(segment([d for _, _, d in items])))]
        except tf.errors.InvalidArgumentError as err:
            if len(items) == 1:
                skip(items[0][0], error_text(err, with_index=False))
                return []
            # One bad file fails the whole batch: find it (them) by running each image alone.
            return [result for item in items for result in run([item])]

    done = 0
    for start in range(0, len(files), max(1, batch_size)):
        items = []
        for rel, stem in zip(files[start:start + batch_size], names[start:start + batch_size]):
            try:
                path = os.path.join(images_dir, rel)
                items.append((rel, stem, read_image_bytes(path, reduced=reduced)))
                if path in reduced:
                    bar.message(f"{path}: {reduced[path]}; its outputs have that size")
            except (UnreadableImage, OSError) as err:
                skip(rel, str(err))
        for (rel, stem, data), out in (run(items) if items else []):
            image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
            mask, overlay, on_grey = write_outputs(out_dir, stem, image, out["mask_png_bytes"])
            written.append(rel)
            fractions[rel] = float(out["foreground_fraction"])
            if len(sheet) < sheet_rows:
                sheet.append([_thumbnail(image, thumb, 255), _thumbnail(np.repeat(mask[..., None], 3, -1), thumb, 255),
                              _thumbnail(overlay, thumb, 255), _thumbnail(on_grey, thumb, 255)])
        done = min(start + batch_size, len(files))
        bar.update(done)
    bar.close()

    sheet_path = None
    if sheet:
        columns = [np.stack([row[c] for row in sheet]) for c in range(4)]
        names = [rel if len(rel) <= 18 else "…" + rel[-17:] for rel in written[:len(sheet)]]
        picture = grids.labelled_grid(columns, ["image", "mask", "overlay", "cut-out"], names, cell=thumb)
        sheet_path = grids.save_png(picture, os.path.join(out_dir, "contact_sheet.png"))
    summary = {"written": written, "skipped": skipped, "foreground_fraction": fractions,
               "contact_sheet": sheet_path, "shrunk": reduced}
    with open(os.path.join(out_dir, "predictions.json"), "w") as f:
        json.dump({"images_dir": os.path.abspath(images_dir), "foreground_fraction": fractions,
                   "skipped": skipped, "shrunk": reduced}, f, indent=2, sort_keys=True)
    return summary


def _split(outputs):
    """dict of batched numpy outputs -> list of per-image dicts."""
    n = len(outputs["mask_png_bytes"])
    return [{k: v[i] for k, v in outputs.items()} for i in range(n)]

"""The serving graph of a trained method and its SavedModel export (for TF Serving and `tfseg.predict`).

Two signatures, one per input type (as in tensorflow/models `official/vision/serving`):

* ``serving_default``: ``image_bytes`` tf.string ``[batch]``, each a JPEG or PNG file of any size (a
  batch may mix sizes and formats);
* ``serve_image_tensor``: ``images`` uint8 ``[batch, height, width, 3]``.

Both return

* ``mask``: float32 ``[batch, R, R, 1]`` in ``[0, 1]``, the foreground probability at the model's
  resolution R, for the pre-processed view of the image (the evaluation transform: shorter side
  resized to R with the run's ``image_resize_method``, centre crop R x R);
* ``mask_png_bytes``: tf.string ``[batch]``, each mask as an 8-bit grey PNG (0 = background,
  255 = foreground) at its own image's original size. Outside the centre crop the model saw nothing;
  those pixels are 0. TF Serving's REST API base64-encodes outputs named ``*_bytes``;
* ``foreground_fraction``: float32 ``[batch]``, the share of the R x R mask at or above 0.5 (the
  evaluation threshold).

A method that serves masks of its own generated images (``serves_latents``: a Labels4Free run with
``export_latent_signature``, e.g. one written by tools/convert_labels4free.py) gets a third signature,
``serve_latent``: ``z`` float32 ``[batch, z_dim]`` -> ``mask`` ``[batch, R, R, 1]`` and the generated
``image`` ``[batch, R, R, 3]`` in [-1, 1].

Decoding, resizing and PNG encoding run inside the graph, with the same functions as training and
evaluation (:func:`tfseg.data.augment.preprocess`), so served masks equal evaluated ones. Bad bytes
(empty, not a JPEG or PNG, truncated, too many pixels) fail the call with ``InvalidArgument`` and a
message naming the image's index and the problem.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from tfseg.data import augment
from tfseg.modeling import refinement
from tfseg.serving.versions import next_version
from tfseg.training import run_dir

SIGNATURE_BYTES = "serving_default"
SIGNATURE_TENSOR = "serve_image_tensor"
INPUT_BYTES = "image_bytes"
INPUT_TENSOR = "images"
OUTPUTS = ("mask", "mask_png_bytes", "foreground_fraction")
#: Optional third signature (methods with `serves_latents`): latent codes z float32 [batch, z_dim] -> "mask"
#: [batch, R, R, 1], the mask of the image the model's generator draws from z, and that "image" in [-1, 1].
SIGNATURE_LATENT = "serve_latent"
INPUT_LATENT = "z"
LATENT_OUTPUTS = ("mask", "image")
METADATA_FILE = "tfseg_export.json"
CONFIG_FILE = "config.gin"
#: Binarisation threshold of `foreground_fraction` (the evaluation protocol's).
THRESHOLD = 0.5
#: Largest decoded image accepted (4096 x 4096): an 8000 x 5000 photo cost 2.9 GB in the decode, the resize
#: and the full-size mask PNG. `tfseg.predict` shrinks bigger photos before sending them; TF Serving
#: clients must resize them.
MAX_PIXELS = 4096 * 4096

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8\xff"


def _checked(condition, message):
    """An op that fails with InvalidArgument("`message`") unless `condition` holds."""
    return tf.debugging.Assert(condition, [message], name="check_image_bytes")


def _image_size(data, is_png):
    """(height, width) int32 from a PNG's IHDR or a JPEG's frame header, without decoding pixels."""
    def png_size():
        width_height = tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.int32, little_endian=False)
        return tf.stack([width_height[1], width_height[0]])

    def jpeg_size():
        return tf.io.extract_jpeg_shape(data)[:2]

    return tf.cond(is_png, png_size, jpeg_size)


def decode_image_bytes(data, index, max_pixels=MAX_PIXELS):
    """Decodes one JPEG or PNG file to uint8 RGB, failing with a clear message on bad bytes.

    Args:
        data: scalar tf.string, the file's bytes.
        index: int32 scalar, the element's position in the batch (named in error messages).
        max_pixels: refuse images with more pixels than this.

    Returns:
        uint8 ``[h, w, 3]`` (grey is repeated to RGB, alpha dropped).

    Raises:
        tf.errors.InvalidArgumentError (when run): empty, not JPEG or PNG, truncated PNG, corrupt data
            (the decoder's message), or more than `max_pixels` pixels.
    """
    where = tf.strings.format("image_bytes[{}]", index)
    length = tf.strings.length(data)
    is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_SOI)), _JPEG_SOI)
    head = tf.strings.substr(data, 0, 16)
    # Base64 text of a PNG or JPEG: a client that encoded the file twice.
    twice = tf.logical_or(tf.equal(tf.strings.substr(data, 0, 11), b"iVBORw0KGgo"),
                          tf.equal(tf.strings.substr(data, 0, 4), b"/9j/"))
    checks = [
        _checked(length > 0, tf.strings.join([where, " is empty: send the bytes of a JPEG or PNG file"])),
        _checked(tf.logical_not(twice), tf.strings.join([
            where, " is base64 text of an image, not the image: it was base64-encoded twice (send the "
            "file's bytes; in a REST request encode them once, as {\"b64\": ...})"])),
        _checked(is_png | is_jpeg, tf.strings.join([
            where, " is not a JPEG or PNG image (its first bytes, base64-encoded: ",
            tf.io.encode_base64(head), "); send the raw bytes of a JPEG or PNG file"])),
    ]
    with tf.control_dependencies(checks):
        # PNG requires IEND last, so a cut-off file is recognised before libpng's terse error.
        tail = tf.strings.substr(data, tf.maximum(length - len(_PNG_IEND), 0), len(_PNG_IEND))
        ends_ok = tf.logical_or(tf.logical_not(is_png), tf.equal(tail, _PNG_IEND))
        truncated = _checked(ends_ok, tf.strings.join([
            where, " is a truncated PNG (it does not end with an IEND chunk)"]))
    with tf.control_dependencies([truncated]):
        size = _image_size(data, is_png)
        pixels = tf.cast(size[0], tf.int64) * tf.cast(size[1], tf.int64)
        too_big = _checked(pixels <= max_pixels, tf.strings.join([
            where, tf.strings.format(" has {} x {} pixels, more than the export's limit of ", (size[0], size[1])),
            str(max_pixels), "; resize it first"]))
    with tf.control_dependencies([too_big]):
        # Corrupt or truncated JPEG data fails here with the decoder's "Invalid JPEG data".
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _crop_geometry(height, width, resolution, square_resize):
    """Where the R x R model input sits: (resized height, resized width, top, left) as int32.

    The same arithmetic as `tfseg.data.augment._resize` and `_centre_crop`.
    """
    if square_resize:
        zero = tf.constant(0, tf.int32)
        return tf.constant(resolution, tf.int32), tf.constant(resolution, tf.int32), zero, zero
    hw = tf.cast(tf.stack([height, width]), tf.float32)
    scale = resolution / tf.reduce_min(hw)
    size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), resolution)
    return size[0], size[1], (size[0] - resolution) // 2, (size[1] - resolution) // 2


def mask_to_original_size(mask, height, width, resolution, square_resize=False):
    """Maps a mask of the R x R model input back onto the original image.

    The mask is placed where the centre crop was taken in the resized image (zeros elsewhere: the model
    saw nothing there), then resized bilinearly to the original size.

    Args:
        mask: float32 ``[R, R, 1]`` in ``[0, 1]``.
        height, width: int32 scalars, the original image size.
        resolution: R.
        square_resize: whether the pre-processing resized to a square (no crop).

    Returns:
        float32 ``[height, width, 1]`` in ``[0, 1]``.
    """
    resized_h, resized_w, top, left = _crop_geometry(height, width, resolution, square_resize)
    canvas = tf.pad(mask, [[top, resized_h - resolution - top], [left, resized_w - resolution - left], [0, 0]])
    return tf.clip_by_value(tf.image.resize(canvas, tf.stack([height, width]), method="bilinear"), 0.0, 1.0)


def encode_mask_png(mask):
    """float32 ``[h, w, 1]`` in ``[0, 1]`` -> scalar tf.string, an 8-bit grey PNG (255 = foreground)."""
    return tf.io.encode_png(tf.cast(tf.round(mask * 255.0), tf.uint8))


class ServingFunctions:
    """The two serving computations of a trained method, usable in-process or exported.

    Args:
        model: a `tfseg.methods.base.Method` (anything with `segment(images)`: ``[B, R, R, 3]`` in
            ``[-1, 1]`` -> ``[B, R, R, 1]`` in ``[0, 1]``).
        resolution: R, the model's input side.
        image_resize_method: the run's `tfseg.data.make_dataset.image_resize_method`.
        square_resize: the run's `tfseg.data.make_dataset.square_resize`.
        max_pixels: largest image accepted by the bytes signature.
    """

    def __init__(self, model, resolution, image_resize_method="nearest", square_resize=False,
                 max_pixels=MAX_PIXELS):
        if image_resize_method not in augment.RESIZE_METHODS:
            raise ValueError(f"image_resize_method {image_resize_method!r} is not one of {augment.RESIZE_METHODS}.")
        self.model = model
        self.resolution = int(resolution)
        self.image_resize_method = image_resize_method
        self.square_resize = bool(square_resize)
        self.max_pixels = int(max_pixels)

    def preprocess(self, image):
        """uint8 ``[h, w, 3]`` -> float32 ``[R, R, 3]`` in ``[-1, 1]``: the evaluation transform."""
        return augment.preprocess({"image": image}, self.resolution, training=False,
                                  image_resize_method=self.image_resize_method,
                                  square_resize=self.square_resize)["image"]

    def _outputs(self, images, sizes, original):
        """Segments pre-processed `images` [B, R, R, 3]; `sizes` int32 [B, 2] are the original sizes.

        `original(i)` gives the i-th original uint8 image: a run that refines its masks
        (`tfseg.mask_refinement`) refines each PNG mask again at the photo's own size, seeded by the
        network's mask, so outlines follow the photo's pixels rather than the model's R x R grid.
        """
        network, mask = self.model.foreground_masks(images)
        network = tf.ensure_shape(tf.cast(network, tf.float32), [None, self.resolution, self.resolution, 1])
        mask = tf.ensure_shape(tf.cast(mask, tf.float32), [None, self.resolution, self.resolution, 1])
        refine = self.model.mask_refinement

        def png(args):
            one_mask, one_network_mask, size, index = args
            if refine is None:
                return encode_mask_png(mask_to_original_size(one_mask, size[0], size[1], self.resolution,
                                                             self.square_resize))
            seed = mask_to_original_size(one_network_mask, size[0], size[1], self.resolution, self.square_resize)
            photo = tf.cast(original(index), tf.float32) / 127.5 - 1.0
            return encode_mask_png(refine(photo[None], seed[None])[0])

        # map_fn: every mask has its own image's size, so the PNGs cannot be made as one batch.
        indices = tf.range(tf.shape(mask)[0], dtype=tf.int32)
        pngs = tf.map_fn(png, (mask, network, sizes, indices), fn_output_signature=tf.TensorSpec([], tf.string))
        fraction = tf.reduce_mean(tf.cast(mask >= THRESHOLD, tf.float32), axis=[1, 2, 3])
        return {"mask": mask, "mask_png_bytes": pngs, "foreground_fraction": fraction}

    def from_bytes(self, image_bytes):
        """Signature `serving_default`: tf.string ``[batch]`` of JPEG/PNG files -> the outputs dict."""
        r = self.resolution

        def decode(args):
            data, index = args
            image = decode_image_bytes(data, index, self.max_pixels)
            return self.preprocess(image), tf.shape(image)[:2]

        indices = tf.range(tf.shape(image_bytes)[0], dtype=tf.int32)
        images, sizes = tf.map_fn(decode, (image_bytes, indices), fn_output_signature=(
            tf.TensorSpec([r, r, 3], tf.float32), tf.TensorSpec([2], tf.int32)))
        # Decoded again when needed: the originals have different sizes, so they cannot be a batch.
        return self._outputs(images, sizes, lambda i: decode_image_bytes(image_bytes[i], i, self.max_pixels))

    def from_tensor(self, images):
        """Signature `serve_image_tensor`: uint8 ``[batch, h, w, 3]`` -> the outputs dict."""
        r = self.resolution
        shape = tf.shape(images)
        pre = tf.map_fn(self.preprocess, images, fn_output_signature=tf.TensorSpec([r, r, 3], tf.float32))
        sizes = tf.tile(shape[1:3][None], [shape[0], 1])
        return self._outputs(pre, sizes, lambda i: images[i])


# --------------------------------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------------------------------


def _gin_value(fn, name):
    """The gin-bound value of `fn`'s parameter `name` in the parsed config, else its default."""
    import gin  # pylint: disable=import-outside-toplevel
    bindings = gin.get_bindings(fn)
    if name in bindings:
        return bindings[name]
    return inspect.signature(fn).parameters[name].default


def serving_functions_from_run(model, train_config):
    """`ServingFunctions` with the pre-processing of the run whose gin config is currently parsed."""
    from tfseg.data import pipeline  # pylint: disable=import-outside-toplevel
    return ServingFunctions(model, train_config.resolution,
                            image_resize_method=_gin_value(pipeline.make_dataset, "image_resize_method"),
                            square_resize=_gin_value(pipeline.make_dataset, "square_resize"))


def _method_reference(config_path):
    """The gin reference of the run's method factory in its config.gin, e.g. "@tfseg.methods.redo"."""
    with open(config_path) as f:
        match = re.search(r"TrainConfig\.method\s*=\s*(@[\w.]+)", f.read())
    return match.group(1) if match else ""


def export(serving, export_dir, version=None, config_path=None, metadata=None):
    """Writes the SavedModel of `serving` to `export_dir/<version>` with keras.export.ExportArchive.

    The version folder appears in one rename, so a TF Serving instance polling `export_dir` never loads
    a half-written model (it ignores the non-integer temporary folder).

    Args:
        serving: a `ServingFunctions`.
        export_dir: the model's base path (what TF Serving's `--model_base_path` points at).
        version: integer version; default `next_version(export_dir)`.
        config_path: the run's config.gin, copied to `assets/config.gin`.
        metadata: dict written (with the signature names and pre-processing) to `assets/tfseg_export.json`.

    Returns:
        The path of the written version folder.

    Raises:
        FileExistsError: `export_dir/<version>` exists already.
    """
    from tfseg.training import nonfinite  # pylint: disable=import-outside-toplevel
    broken = nonfinite.nonfinite_variables(serving.model.variables)
    if broken:
        raise ValueError(f"the model holds non-finite weights ({len(broken)} variables, e.g. {broken[0]}): a NaN "
                         "model is never exported. Export an earlier checkpoint (--checkpoint) or retrain with "
                         "lower learning rates.")
    version = next_version(export_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's rule), got {version}.")
    final = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} exists already: pick another --version or leave it out to use the "
                              f"next free one ({next_version(export_dir)}).")
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    # mkdtemp makes the folder private (0700); a server running as another user must read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        archive = keras.export.ExportArchive()
        # Only the variables the endpoints use are saved (the mask network, the foreground region), not
        # the generators, discriminator and optimizers of the training run.
        archive.add_endpoint(SIGNATURE_BYTES, serving.from_bytes,
                             input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
        archive.add_endpoint(SIGNATURE_TENSOR, serving.from_tensor,
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_TENSOR)])
        latent = _latent_endpoint(serving.model)
        if latent is not None:
            archive.add_endpoint(SIGNATURE_LATENT, latent[0], input_signature=[latent[1]])
        archive.write_out(tmp, verbose=False)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        if config_path:
            shutil.copyfile(config_path, os.path.join(assets, CONFIG_FILE))
        record = dict(metadata or {})
        record.update({
            "version": version,
            "resolution": serving.resolution,
            "image_resize_method": serving.image_resize_method,
            "square_resize": serving.square_resize,
            "threshold": THRESHOLD,
            "max_pixels": serving.max_pixels,
            "signatures": {SIGNATURE_BYTES: {"inputs": [INPUT_BYTES], "outputs": list(OUTPUTS)},
                           SIGNATURE_TENSOR: {"inputs": [INPUT_TENSOR], "outputs": list(OUTPUTS)}},
        })
        if latent is not None:
            record["signatures"][SIGNATURE_LATENT] = {"inputs": [INPUT_LATENT], "outputs": list(LATENT_OUTPUTS)}
        with open(os.path.join(assets, METADATA_FILE), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _latent_endpoint(model):
    """`(function, input spec)` of the `serve_latent` signature of a model that serves masks of its own
    generated images (`serves_latents`, e.g. a converted Labels4Free run), else None."""
    if not getattr(model, "serves_latents", False):
        return None

    def serve_latent(z):
        mask, images = model.latent_masks(z)
        return {"mask": tf.cast(mask, tf.float32), "image": tf.cast(images, tf.float32)}

    return serve_latent, tf.TensorSpec([None, model.z_dim], tf.float32, name=INPUT_LATENT)


def checkpoint_selection(checkpoint, which):
    """How the exported checkpoint was chosen, in words (for the summary line and tfseg_export.json)."""
    if os.path.basename(os.path.dirname(checkpoint)) == run_dir.BEST_DIR:
        return "best on the labelled validation split"
    if which == "best":
        return "latest: the run has no labelled validation split to choose a best checkpoint"
    return "latest, as asked (--checkpoint=latest)"


def invert_foreground(model):
    """Makes the other of two regions the foreground (the `--invert` flag)."""
    regions = getattr(model, "num_regions", 2)
    if regions != 2:
        raise ValueError(f"--invert needs a two-region model; this one has {regions} regions. Bind "
                         "tfseg.training.TrainConfig.foreground_region to the region you want instead.")
    model.foreground_region.assign(1 - int(model.foreground_region.numpy()))


def export_run(model_dir, export_dir, version=None, which="best", invert=False, extra_bindings=()):
    """Exports the trained run in `model_dir` (its `which` checkpoint) to `export_dir/<version>`.

    Args:
        invert: serve the other region as the foreground (for a run whose object came out as the
            background region).
        extra_bindings: gin bindings over the run's config.gin (`tfseg.export --gin_bindings`).

    Returns:
        `(path of the version folder, checkpoint path, metadata dict)`.

    Raises:
        tfseg.errors.ConfigError: `model_dir` has no config.gin or no checkpoint.
        FileExistsError: the version exists already.
    """
    from tfseg.training import duties, loading  # pylint: disable=import-outside-toplevel
    import tfseg  # pylint: disable=import-outside-toplevel

    model, train_config, checkpoint = loading.load_trained(model_dir, which, extra_bindings)
    foreground = duties.read_foreground(model_dir) or {"rule": "initial value (never chosen)"}
    if invert:
        invert_foreground(model)
        foreground = {"rule": "--invert", "why": f"inverted at export; the run's choice: {foreground}"}
    config_path = os.path.join(model_dir, CONFIG_FILE)
    serving = serving_functions_from_run(model, train_config)
    metadata = {
        "method": type(model).__name__,
        "method_factory": _method_reference(config_path),
        "foreground_region": int(model.foreground_region.numpy()),
        "foreground_rule": foreground.get("rule"),
        "foreground_why": foreground.get("why", ""),
        # The colour refinement the masks pass through (tfseg.mask_refinement), or None.
        "mask_refinement": refinement.describe(model.mask_refinement),
        "checkpoint_selection": checkpoint_selection(checkpoint, which),
        "checkpoint": os.path.abspath(checkpoint),
        "model_dir": os.path.abspath(model_dir),
        "tfseg_version": tfseg.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    path = export(serving, export_dir, version, config_path, metadata)
    return path, checkpoint, metadata


def read_metadata(version_dir):
    """The `assets/tfseg_export.json` of an exported version, as a dict."""
    with open(os.path.join(version_dir, "assets", METADATA_FILE)) as f:
        return json.load(f)

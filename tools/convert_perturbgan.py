"""Convert a checkpoint of the authors' PerturbGAN (`train.py` of Bielski & Favaro's perturbed-seg) to a tfseg run.

Their `train.py` saves a dict with `generator` and `generator_running` (the layered generator and its
moving average: state dicts of `BgFgMask`, or of `BgFgMaskSharedStyle` with --common_style, or of
`SimpleBgFgMask` with --one_generator), `discriminator`, both optimizers' states, `alpha` and `step`
(the resolution is 4 x 2^step). Usage:

    pip install -e ".[convert]"
    python tools/convert_perturbgan.py --checkpoint=train_step-5.model --model_dir=runs/pgan_authors
    python -m tfseg.export --model_dir=runs/pgan_authors --export_dir=serving/pgan_authors
    python -m tfseg.predict --export_dir=serving/pgan_authors/1 --images=photos --out=masks

writes `config.gin` (PerturbGAN in the authors' mode: `perturbgan_paper_base.gin`'s StyleGAN v1
switches, sizes read from the weights, `ema_decay` 0.999 so the moving average has a home) and a
checkpoint under `checkpoints/` that `tfseg.evaluate`, `tfseg.export` and `tfseg.predict` load as
they load a run of `tfseg.train`. G goes to `generator`, `generator_running` to `generator_ema`
(what tfseg samples from), D to `discriminator`. The optimizers' states are not converted.

What the export serves: the authors' code has no network that segments photos (the paper's encoder
was not released with it), so the run segments through tfseg's encoder route, mask = G_ema's mask
at z = E(x) rendered without noise, with tfseg's encoder E freshly initialised: the served masks
are the authors' generator's masks for that latent, not yet a segmentation of the photo. Train the
encoder and the distilled segmenter on your photos to get one: the config's `stage_steps` skip the
adversarial stage (`generator: 0`), so `python -m tfseg.train --model_dir=DIR` with data bindings
added (e.g. `--gin_bindings="tfseg.data.make_dataset.name='...'"`) goes on with them.

A checkpoint that was saved mid fade-in (`alpha` < 1) is converted at its resolution with the new
layers at full weight (tfseg's export does not blend); the tool says so.

The mapping (`convert_networks`) is a pure function of `{name: numpy array}` dicts, tested without
torch (tests/test_convert_perturbgan.py) and against the authors' modules
(tests/test_reference_perturbgan.py). Layout changes: conv weights OIHW -> HWIO (the fused
transposed conv's IOHW -> HWIO), linear [out, in] -> [in, out], the constant NCHW -> NHWC, D's 4x4
valid conv -> a dense layer over the NHWC-flattened 4x4 map; the AdaIN scale's bias 1 moves into
tfseg's `1 + gamma`; the mapping networks' weights are divided by tfseg's lr_mul (0.01; the authors
slow them with an optimizer group at 0.01 x lr instead, the same Adam update).
"""
import argparse
import math
import os
import re
import shutil
import sys

import numpy as np

# Run as a script from anywhere in the repository.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SQRT2 = math.sqrt(2.0)
#: The authors' generator classes, told apart by their state dicts' keys.
LAYOUTS = ("BgFgMask", "BgFgMaskSharedStyle", "SimpleBgFgMask")
#: The authors' StyleGAN v1 port has nine blocks (4 ... 1024 px) and fuses its resampling from 128 px.
AUTHORS_BLOCKS = 9
FUSED_FROM = 128


class ConversionError(ValueError):
    """A checkpoint that is not what the authors' train.py saves, or does not fit the networks."""


def _fail(what, message):
    raise ConversionError(f"{what}: {message}")


# -- reading the authors' state dicts -------------------------------------------------------------
def generator_layout(state_dict, what="generator"):
    """`(layout, mapping prefixes, [(synthesis prefix, head name)])` of an authors' generator state dict."""
    keys = set(state_dict)
    if any(k.startswith("generator_bg.") for k in keys):
        return ("BgFgMask", ["generator_bg.style.", "generator_objects.style."],
                [("generator_bg.generator.", "to_rgb"), ("generator_objects.generator.", "to_out")])
    if any(k.startswith("generator.generators.") for k in keys):
        return ("BgFgMaskSharedStyle", ["generator.style."],
                [("generator.generators.0.", "to_rgb"), ("generator.generators.1.", "to_out")])
    if any(k.startswith("generator.generator.progression.") for k in keys):
        return ("SimpleBgFgMask", ["generator.style."], [("generator.generator.", "to_out")])
    sample = sorted(keys)[:3]
    _fail(what, f"not a state dict of the authors' layered generators ({', '.join(LAYOUTS)}); its first "
          f"keys are {sample}")


def _take(state_dict, key, what):
    if key not in state_dict:
        _fail(what, f"state dict has no '{key}' (a checkpoint of another network or resolution?)")
    return np.asarray(state_dict[key], np.float32)


def _mapping_layers(state_dict, prefix):
    indices = sorted(int(m.group(1)) for k in state_dict
                     for m in [re.match(re.escape(prefix) + r"(\d+)\.linear\.weight_orig$", k)] if m)
    return indices


def networks_config(checkpoint, what="checkpoint"):
    """The tfseg sizes of the authors' networks in `checkpoint` (`generator`, `discriminator`, `step`).

    Returns:
        dict: resolution, z_dim, w_dim, mapping_layers, channel_base, max_channels,
        single_generator, shared_mapping, layout, step, alpha.
    """
    for key in ("generator", "discriminator", "step"):
        if key not in checkpoint:
            _fail(what, f"has no '{key}': not what the authors' train.py saves (it saves generator, "
                  f"generator_running, discriminator, g_optimizer, d_optimizer, alpha, step)")
    g = checkpoint["generator"]
    layout, mappings, synthesis = generator_layout(g, what + " 'generator'")
    step = int(checkpoint["step"])
    if not 1 <= step < AUTHORS_BLOCKS:
        _fail(what, f"step {step} is not a resolution tfseg's PerturbGAN trains at (8 ... 1024 px: step 1 ... 8)")
    resolution = 4 * 2 ** step
    layers = _mapping_layers(g, mappings[0])
    if not layers:
        _fail(what, f"'generator' has no mapping network ({mappings[0]}*.linear.weight_orig)")
    first = _take(g, f"{mappings[0]}{layers[0]}.linear.weight_orig", what)
    w_dim, z_dim = first.shape
    prefix = synthesis[0][0]
    widths = {}
    for i in range(step + 1):
        widths[4 * 2 ** i] = _take(g, f"{prefix}progression.{i}.conv2.conv.weight_orig", what).shape[0]
    max_channels = widths[4]
    below = [r * c for r, c in widths.items() if c < max_channels]
    channel_base = max(below) if below else max_channels * 32  # the port: widths halve from 64 px
    from tfseg.modeling.equalized import channels_at
    for r, c in widths.items():
        if channels_at(r, channel_base, max_channels) != c:
            _fail(what, f"generator widths {widths} do not follow min(max, base / r) for any base")
    alpha = checkpoint.get("alpha", 1.0)
    return dict(resolution=resolution, z_dim=int(z_dim), w_dim=int(w_dim), mapping_layers=len(layers),
                channel_base=int(channel_base), max_channels=int(max_channels),
                single_generator=layout == "SimpleBgFgMask", shared_mapping=layout == "BgFgMaskSharedStyle",
                layout=layout, step=step, alpha=float(1.0 if alpha is None else alpha))


# -- writing tfseg variables -----------------------------------------------------------------------
def _assign(variable, value, key):
    value = np.asarray(value, np.float32)
    if tuple(variable.shape) != value.shape:
        raise ConversionError(f"'{key}' has shape {value.shape} after conversion; tfseg's "
                              f"{variable.path} has {tuple(variable.shape)} (another size or layout)")
    variable.assign(value)


def _dense(layer, state_dict, prefix, what, bias_offset=None):
    """Equalized linear [out, in] (gain sqrt 2) -> EqualDense kernel [in, out] (its gain and lr_mul)."""
    weight = _take(state_dict, prefix + "weight_orig", what)
    bias = _take(state_dict, prefix + "bias", what)
    if bias_offset is not None:
        bias = bias - bias_offset
    _assign(layer.kernel, weight.T * SQRT2 / (layer.gain * layer.lr_mul), prefix + "weight_orig")
    _assign(layer.bias, bias / layer.lr_mul, prefix + "bias")


def _conv(layer, state_dict, prefix, what):
    """Equalized conv OIHW (gain sqrt 2) -> EqualConv2D HWIO."""
    weight = _take(state_dict, prefix + "weight_orig", what)
    _assign(layer.kernel, weight.transpose(2, 3, 1, 0) * SQRT2 / layer.gain, prefix + "weight_orig")
    _assign(layer.bias, _take(state_dict, prefix + "bias", what), prefix + "bias")


def _fused(layer, state_dict, prefix, what, transposed):
    """FusedUpsample IOHW / FusedDownsample OIHW (multiplier sqrt(2 / fan_in)) -> FusedScaleConv2D HWIO."""
    weight = _take(state_dict, prefix + "weight", what)
    weight = weight.transpose(2, 3, 0, 1) if transposed else weight.transpose(2, 3, 1, 0)
    _assign(layer.kernel, weight * SQRT2 / layer.gain, prefix + "weight")
    _assign(layer.bias, _take(state_dict, prefix + "bias", what), prefix + "bias")


def _mapping(mapping, state_dict, prefix, what):
    indices = _mapping_layers(state_dict, prefix)
    if len(indices) != len(mapping.dense):
        _fail(what, f"{prefix} has {len(indices)} layers, tfseg's mapping network {len(mapping.dense)}")
    for layer, index in zip(mapping.dense, indices):
        _dense(layer, state_dict, f"{prefix}{index}.linear.", what)


def _synthesis(network, state_dict, prefix, head_name, what):
    top = len(network.blocks) - 1
    for i, block in enumerate(network.blocks):
        q = f"{prefix}progression.{i}."
        c = block.channels
        if block.first:
            _assign(block.constant, _take(state_dict, q + "conv1.input", what).transpose(0, 2, 3, 1), q + "conv1.input")
        elif block.fused:
            _fused(block.conv_a, state_dict, q + "conv1.0.", what, transposed=True)
        else:
            _conv(block.conv_a, state_dict, q + "conv1.1.conv.", what)
        _conv(block.conv_b, state_dict, q + "conv2.conv.", what)
        for noise, name in ((block.noise_a, "noise1"), (block.noise_b, "noise2")):
            value = _take(state_dict, q + name + ".weight_orig", what).reshape(-1)
            _assign(noise, value * SQRT2 / math.sqrt(c) / block.noise_scale, q + name + ".weight_orig")
        for adain, name in ((block.adain_a, "adain1"), (block.adain_b, "adain2")):
            offset = np.concatenate([np.ones(c, np.float32), np.zeros(c, np.float32)])
            _dense(adain.style, state_dict, q + name + ".style.linear.", what, bias_offset=offset)
    _conv(network.head, state_dict, f"{prefix}{head_name}.{top}.conv.", what)
    for r in network.growth_resolutions:  # the heads of lower resolutions (progressive growing)
        _conv(network.head_at(r), state_dict, f"{prefix}{head_name}.{int(math.log2(r)) - 2}.conv.", what)


def convert_generator(state_dict, generator, what="generator"):
    """Authors' layered generator state dict -> tfseg `LayeredGenerator` (built, at the checkpoint's R)."""
    layout, mappings, synthesis = generator_layout(state_dict, what)
    if (layout == "SimpleBgFgMask") != generator.single_generator or len(mappings) != len(generator.mappings):
        _fail(what, f"a {layout} does not fit a tfseg generator with {len(generator.synthesis)} synthesis and "
              f"{len(generator.mappings)} mapping networks")
    for mapping, prefix in zip(generator.mappings, mappings):
        _mapping(mapping, state_dict, prefix, what)
    for network, (prefix, head) in zip(generator.synthesis, synthesis):
        _synthesis(network, state_dict, prefix, head, what)


def convert_discriminator(state_dict, discriminator, what="discriminator"):
    """Authors' `Discriminator` state dict -> tfseg `ProGANDiscriminator` (authors' mode, built at R)."""
    if not any(k.startswith("progression.") for k in state_dict) or "linear.linear.weight_orig" not in state_dict:
        _fail(what, f"not a state dict of the authors' Discriminator (first keys {sorted(state_dict)[:3]})")
    from tfseg.modeling import equalized  # pylint: disable=import-outside-toplevel
    index = lambda r: AUTHORS_BLOCKS + 1 - int(math.log2(r))  # noqa: E731  (4 px: 8, 128 px: 3)
    r = discriminator.resolution
    _conv(discriminator.from_rgb, state_dict, f"from_rgb.{index(r)}.0.conv.", what)
    for lower in discriminator.growth_resolutions:
        _conv(discriminator.from_rgb_at(lower), state_dict, f"from_rgb.{index(lower)}.0.conv.", what)
    for (conv_a, conv_b), res in zip(discriminator.down, discriminator.down_resolutions):
        q = f"progression.{index(res)}."
        _conv(conv_a, state_dict, q + "conv1.0.conv.", what)
        if isinstance(conv_b, equalized.FusedScaleConv2D):
            _fused(conv_b, state_dict, q + "conv2.1.", what, transposed=False)
        else:
            _conv(conv_b, state_dict, q + "conv2.1.conv.", what)
    q = f"progression.{index(4)}."
    _conv(discriminator.final_conv, state_dict, q + "conv1.0.conv.", what)
    weight = _take(state_dict, q + "conv2.0.conv.weight_orig", what)   # [C, C, 4, 4], valid conv
    dense = discriminator.final_dense
    _assign(dense.kernel, weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]) * SQRT2 / dense.gain,
            q + "conv2.0.conv.weight_orig")
    _assign(dense.bias, _take(state_dict, q + "conv2.0.conv.bias", what), q + "conv2.0.conv.bias")
    _dense(discriminator.output_dense, state_dict, "linear.linear.", what)


def convert_networks(checkpoint, model, what="checkpoint"):
    """Writes the authors' `generator`, `generator_running` (if any) and `discriminator` into a built
    tfseg PerturbGAN `model` (its `generator`, `generator_ema`, `discriminator`)."""
    parts = [("generator", model.generator, convert_generator)]
    if model.generator_ema is not None:
        parts.append(("generator_running" if "generator_running" in checkpoint else "generator",
                      model.generator_ema, convert_generator))
    parts.append(("discriminator", model.discriminator, convert_discriminator))
    for key, network, convert in parts:
        name = f"{what} '{key}'"
        try:
            convert(checkpoint[key], network, name)
        except ConversionError as err:
            if str(err).startswith(name):
                raise
            raise ConversionError(f"{name}: {err}") from err


# -- the run folder --------------------------------------------------------------------------------
def config_text(sizes, min_mask_coverage=0.05, shift_fraction=0.125, batch_size=32):
    """config.gin of the converted run: PerturbGAN in the authors' mode at the checkpoint's sizes."""
    lines = [
        "# Converted by tools/convert_perturbgan.py from a checkpoint of the authors' train.py",
        f"# ({sizes['layout']}, step {sizes['step']}, alpha {sizes['alpha']:g}). The adversarial stage is",
        "# done (stage_steps generator 0); tfseg's encoder and segmenter are not trained yet.",
        "import tfseg.methods.perturbgan",
        "import tfseg.data.pipeline",
        "tfseg.training.TrainConfig.method = @tfseg.methods.perturbgan",
        f"tfseg.training.TrainConfig.resolution = {sizes['resolution']}",
        f"tfseg.training.TrainConfig.batch_size = {batch_size}",
        "tfseg.training.TrainConfig.stage_steps = {'generator': 0, 'encoder': 20000, 'segmenter': 20000}",
        "tfseg.training.TrainConfig.collapse_threshold = 0.0",
        f"tfseg.methods.perturbgan.min_mask_coverage = {min_mask_coverage}",
        f"tfseg.methods.perturbgan.shift_fraction = {shift_fraction}",
    ]
    for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "max_channels", "single_generator",
                 "shared_mapping"):
        lines.append(f"tfseg.methods.perturbgan.{name} = {sizes[name]}")
    lines += [
        "tfseg.methods.perturbgan.ema_decay = 0.999",
        f"tfseg.methods.perturbgan.style_gain = {SQRT2!r}",
        "tfseg.methods.perturbgan.equalized_noise = True",
        f"tfseg.methods.perturbgan.fused_scale_from = {FUSED_FROM}",
        "tfseg.methods.perturbgan.discriminator_widen_first_conv = True",
        f"tfseg.methods.perturbgan.discriminator_output_gain = {SQRT2!r}",
        "tfseg.methods.perturbgan.pytorch_adam_epsilon = True",
        # The authors' data: resize to the resolution (torchvision Resize, bilinear).
        "tfseg.data.make_dataset.image_resize_method = 'bilinear'",
    ]
    return "\n".join(lines) + "\n"


def convert_checkpoint(checkpoint, model_dir, min_mask_coverage=0.05, shift_fraction=0.125, what="checkpoint"):
    """Converts a loaded checkpoint (state dicts as numpy dicts) into a tfseg run folder `model_dir`.

    Returns:
        (sizes dict, checkpoint path).
    """
    from tfseg.training import run_dir  # pylint: disable=import-outside-toplevel
    sizes = networks_config(checkpoint, what)
    if os.path.exists(os.path.join(model_dir, run_dir.CONFIG_FILE)):
        raise ConversionError(f"{model_dir} already holds a run (config.gin); pick a new --model_dir")
    import gin
    import tensorflow as tf
    from tfseg import config as tfseg_config
    from tfseg import registry
    from tfseg.methods import perturbgan
    from tfseg.training import checkpointing, loading, train_config

    created = not os.path.exists(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    text = config_text(sizes, min_mask_coverage, shift_fraction)
    path = os.path.join(model_dir, run_dir.CONFIG_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        registry.import_configurables()
        gin.clear_config()
        tfseg_config.parse([path], ())
        train_config = train_config.TrainConfig()
        model = loading.build_method(train_config)
        model.build_for_training(train_config.batch_size)
        convert_networks(checkpoint, model, what)
        model.segmentation_route.assign(perturbgan.ENCODER_ROUTE)
        state = checkpointing.RunState()
        latest, _ = checkpointing.managers(checkpointing.make_checkpoint(model, state), model_dir)
        saved = latest.save(checkpoint_number=0)
    except Exception:
        # Leave nothing a later tfseg command could take for a run.
        if created:
            shutil.rmtree(model_dir, ignore_errors=True)
        else:
            os.remove(path)
            shutil.rmtree(os.path.join(model_dir, run_dir.CHECKPOINTS_DIR), ignore_errors=True)
        raise
    finally:
        gin.clear_config()
    del tf
    return sizes, saved


def load_torch_checkpoint(path):
    """The authors' checkpoint as `{key: numpy state dict | number}` (needs torch)."""
    try:
        import torch  # only reading the file needs torch
    except ImportError as e:
        raise SystemExit('convert_perturbgan: PyTorch is needed to read the checkpoint; install it with  '
                         'pip install -e ".[convert]"') from e
    # weights_only=False: the file holds optimizer states and plain numbers beside the tensors; only
    # convert checkpoints you trust (unpickling runs code).
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a missing file, or not a torch file at all  # pylint: disable=broad-except
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path}: holds a {type(checkpoint).__name__}, not the dict the authors' train.py saves")
    out = {}
    for key, value in checkpoint.items():
        if isinstance(value, dict) and value and all(hasattr(v, "detach") for v in value.values()):
            out[key] = {k: v.detach().cpu().numpy() for k, v in value.items()}
        elif key in ("alpha", "step"):
            out[key] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a .model file the authors' train.py saved (train_step-<k>.model)")
    parser.add_argument("--model_dir", required=True, help="new tfseg run folder to write")
    parser.add_argument("--min_mask_coverage", type=float, default=0.05,
                        help="eta of the run's config, for further training (the authors' default 0.05; "
                             "not stored in their checkpoints)")
    parser.add_argument("--shift_fraction", type=float, default=0.125,
                        help="the authors' --location_jitter, for further training (not stored in their checkpoints)")
    args = parser.parse_args(argv)
    try:
        checkpoint = load_torch_checkpoint(args.checkpoint)
        sizes, saved = convert_checkpoint(checkpoint, args.model_dir, args.min_mask_coverage, args.shift_fraction,
                                          what=args.checkpoint)
    except (ConversionError, KeyError) as e:
        raise SystemExit(f"convert_perturbgan: {e}") from e
    if sizes["alpha"] < 1.0:
        print(f"convert_perturbgan: note: {args.checkpoint} was saved mid fade-in (alpha {sizes['alpha']:.3f}); "
              f"the {sizes['resolution']} px layers are served at full weight", file=sys.stderr)
    print(f"convert_perturbgan: wrote {args.model_dir} ({sizes['layout']}, {sizes['resolution']} px, "
          f"widths {sizes['channel_base']}/{sizes['max_channels']}, checkpoint {saved})")


if __name__ == "__main__":
    main()

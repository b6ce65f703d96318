"""Convert a rosinality StyleGAN2 PyTorch checkpoint to tfseg's Keras networks (docs/methods.md §3.2, §5).

The checkpoint is the one Labels4Free loads: a `.pt` holding `g_ema` (and `g`, `d`) state dicts
in the rosinality/stylegan2-pytorch layout, optionally `latent_avg`. Usage:

    pip install -e ".[convert]"
    python tools/convert_stylegan2.py --checkpoint=stylegan2-horse-config-f.pt --out=pretrained/horse256

writes `config.json`, `generator.weights.h5` and (if the checkpoint has `d`)
`discriminator.weights.h5` to `--out`, which Labels4Free loads with
`tfseg.methods.labels4free.pretrained_dir = '<out>'`. Network sizes are read from the state dicts'
shapes; `--resolution` etc. only check them.

The mapping itself (`convert_generator`, `convert_discriminator`) is a pure function of a
`{name: numpy array}` dict, so it is tested without torch. Layout changes:
conv weights OIHW (modulated: 1 x O x I x k x k) -> HWIO; linear weights [out, in] -> [in, out];
the constant input and noise buffers NCHW -> NHWC; D's first dense layer reads an NCHW-flattened
4x4 map, so its input rows are permuted to NHWC order.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

# Run as a script from anywhere in the repository.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfseg.modeling import stylegan2 as sg2  # noqa: E402

# Buffers of the reference that carry no learned state (FIR kernels are fixed).
_IGNORED = re.compile(r"(^|\.)kernel$")


class _Consumer:
    """Reads entries of a state dict once each, so unused or missing keys can be reported."""

    def __init__(self, state_dict, what):
        self.state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
        self.used = set()
        self.what = what

    def __call__(self, key):
        if key not in self.state_dict:
            raise KeyError(f"{self.what}: state dict has no '{key}'")
        self.used.add(key)
        return self.state_dict[key].astype(np.float32)

    def check_all_used(self):
        unused = sorted(k for k in self.state_dict if k not in self.used and not _IGNORED.search(k))
        if unused:
            raise ValueError(f"{self.what}: state dict entries not used (wrong resolution or "
                             f"layout?): {unused[:10]}{' ...' if len(unused) > 10 else ''}")


def _assign(variable, value, key):
    value = np.asarray(value, np.float32)
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"'{key}' has shape {value.shape} after conversion, tfseg variable "
                         f"{variable.path} has {tuple(variable.shape)}")
    variable.assign(value)


def _linear(layer, take, prefix):
    """EqualLinear [out, in] (+ bias) -> EqualDense kernel [in, out] (+ bias)."""
    _assign(layer.kernel, take(prefix + ".weight").T, prefix + ".weight")
    if layer.use_bias:
        _assign(layer.bias, take(prefix + ".bias"), prefix + ".bias")


def _modulated_conv(conv, take, prefix):
    """ModulatedConv2d: weight [1, O, I, k, k] -> [k, k, I, O]; modulation EqualLinear."""
    _assign(conv.kernel, take(prefix + ".weight")[0].transpose(2, 3, 1, 0), prefix + ".weight")
    _linear(conv.affine, take, prefix + ".modulation")


def _styled_conv(layer, take, prefix):
    _modulated_conv(layer.conv, take, prefix + ".conv")
    _assign(layer.noise.strength, take(prefix + ".noise.weight").reshape(()), prefix + ".noise.weight")
    _assign(layer.activate.bias, take(prefix + ".activate.bias"), prefix + ".activate.bias")


def _to_rgb(layer, take, prefix):
    _modulated_conv(layer.conv, take, prefix + ".conv")
    _assign(layer.bias, take(prefix + ".bias").reshape(3), prefix + ".bias")


def convert_generator(state_dict, generator, latent_avg=None, strict=True):
    """Copies a rosinality `Generator` state dict into a tfseg `Generator` (in place).

    Args:
        state_dict: `{name: array}` (`style.1.weight`, `input.input`, `conv1.conv.weight`, ...,
            `convs.N...`, `to_rgbs.N...`, `noises.noise_N`).
        generator: `tfseg.modeling.stylegan2.Generator` of the same size (built here if needed).
        latent_avg: optional `[w_dim]` (or `[1, w_dim]`) truncation centre for `w_avg`.
        strict: raise if a learned entry of the state dict is left unused.
    Returns:
        the generator.
    Raises:
        KeyError / ValueError: missing entries, shape mismatches, unused entries.
    """
    if not generator.built:
        sg2.build_generator(generator)
    take = _Consumer(state_dict, "generator")
    for i, dense in enumerate(generator.mapping.dense):
        _linear(dense, take, f"style.{i + 1}")    # style.0 is the PixelNorm
    _assign(generator.const, take("input.input").transpose(0, 2, 3, 1), "input.input")
    _styled_conv(generator.conv_4x4, take, "conv1")
    _to_rgb(generator.to_rgb_4x4, take, "to_rgb1")
    for j, block in enumerate(generator.blocks):
        _styled_conv(block.conv0, take, f"convs.{2 * j}")
        _styled_conv(block.conv1, take, f"convs.{2 * j + 1}")
        _to_rgb(block.to_rgb, take, f"to_rgbs.{j}")
    for i, buffer in enumerate(generator.noise_buffers):
        key = f"noises.noise_{i}"
        if key in take.state_dict:      # older checkpoints have no noise buffers
            _assign(buffer, take(key).transpose(0, 2, 3, 1), key)
    if latent_avg is not None:
        _assign(generator.w_avg, np.asarray(latent_avg).reshape(-1), "latent_avg")
    if strict:
        take.check_all_used()
    return generator


def _conv_layer(layer, take, prefix):
    """rosinality ConvLayer (nn.Sequential): [Blur,] EqualConv2d, [FusedLeakyReLU]."""
    conv_index = 1 if layer.downsample else 0
    key = f"{prefix}.{conv_index}.weight"
    _assign(layer.conv.kernel, take(key).transpose(2, 3, 1, 0), key)
    if layer.activate is not None:
        key = f"{prefix}.{conv_index + 1}.bias"
        _assign(layer.activate.bias, take(key), key)
    elif layer.conv.use_bias:
        key = f"{prefix}.{conv_index}.bias"
        _assign(layer.conv.bias, take(key), key)


def convert_discriminator(state_dict, discriminator, strict=True):
    """Copies a rosinality `Discriminator` state dict into a tfseg `Discriminator` (in place).

    Args:
        state_dict: `{name: array}` (`convs.0.0.weight`, `convs.K.conv1.0.weight`,
            `convs.K.skip.1.weight`, `final_conv.0.weight`, `final_linear.0.weight`, ...).
        discriminator: `tfseg.modeling.stylegan2.Discriminator` of the same size.
        strict: raise if a learned entry of the state dict is left unused.
    Returns:
        the discriminator.
    """
    if not discriminator.built:
        sg2.build_discriminator(discriminator)
    take = _Consumer(state_dict, "discriminator")
    _conv_layer(discriminator.from_rgb, take, "convs.0")
    for k, block in enumerate(discriminator.blocks, start=1):
        _conv_layer(block.conv1, take, f"convs.{k}.conv1")
        _conv_layer(block.conv2, take, f"convs.{k}.conv2")
        _conv_layer(block.skip, take, f"convs.{k}.skip")
    _conv_layer(discriminator.final_conv, take, "final_conv")
    weight = take("final_linear.0.weight")                       # [out, C * 4 * 4], NCHW order
    out_dim, in_dim = weight.shape
    channels = in_dim // 16
    weight = weight.reshape(out_dim, channels, 4, 4).transpose(2, 3, 1, 0).reshape(in_dim, out_dim)
    _assign(discriminator.final_dense.kernel, weight, "final_linear.0.weight")
    _assign(discriminator.final_dense.bias, take("final_linear.0.bias"), "final_linear.0.bias")
    _linear(discriminator.out, take, "final_linear.1")
    if strict:
        take.check_all_used()
    return discriminator


# -- sizes from the state dicts -------------------------------------------------------------------
def generator_config(state_dict):
    """tfseg Generator kwargs implied by a rosinality generator state dict's shapes."""
    num_blocks = len({k.split(".")[1] for k in state_dict if k.startswith("to_rgbs.")})
    resolution = 4 * 2**num_blocks
    mapping_layers = len([k for k in state_dict if re.fullmatch(r"style\.\d+\.weight", k)])
    w_dim, z_dim = np.shape(state_dict["style.1.weight"])
    c4 = np.shape(state_dict["input.input"])[1]
    last = f"to_rgbs.{num_blocks - 1}.conv.weight" if num_blocks else "to_rgb1.conv.weight"
    c_last = np.shape(state_dict[last])[2]
    return {"resolution": int(resolution), "z_dim": int(z_dim), "w_dim": int(w_dim),
            "mapping_layers": int(mapping_layers), "channel_base": int(c_last * resolution),
            "max_channels": int(c4)}


def discriminator_config(state_dict, mbstd_group=4):
    """tfseg Discriminator kwargs implied by a rosinality discriminator state dict's shapes."""
    num_blocks = len({k.split(".")[1] for k in state_dict if re.match(r"convs\.\d+\.conv1\.", k)})
    resolution = 4 * 2**num_blocks
    c_res = np.shape(state_dict["convs.0.0.weight"])[0]
    c4 = np.shape(state_dict["final_conv.0.weight"])[0]
    return {"resolution": int(resolution), "channel_base": int(c_res * resolution),
            "max_channels": int(c4), "mbstd_group": int(mbstd_group)}


# -- CLI ------------------------------------------------------------------------------------------
def _load_torch_checkpoint(path):
    try:
        import torch  # only the CLI needs torch
    except ImportError as e:
        raise SystemExit('convert_stylegan2: PyTorch is needed to read .pt checkpoints; '
                         'install it with  pip install -e ".[convert]"') from e
    # weights_only=False: rosinality checkpoints pickle an argparse Namespace under "args".
    # Only convert checkpoints you trust (unpickling runs code).
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)

    def to_numpy(d):
        return {k: v.detach().cpu().numpy() for k, v in d.items() if hasattr(v, "detach")}

    if not isinstance(checkpoint, dict):
        raise SystemExit(f"convert_stylegan2: {path} does not hold a dict")
    out = {}
    for key in ("g_ema", "g", "d"):
        if key in checkpoint:
            out[key] = to_numpy(checkpoint[key])
    if "latent_avg" in checkpoint:
        out["latent_avg"] = np.asarray(checkpoint["latent_avg"].detach().cpu().numpy())
    if not out and any(k.startswith("style.") for k in checkpoint):
        out["g_ema"] = to_numpy(checkpoint)     # a bare generator state dict
    return out


def convert_checkpoint(checkpoint, out, generator_key="g_ema", resolution=None,
                       channel_multiplier=None, with_discriminator=True, w_avg_samples=4096,
                       mbstd_group=4, seed=0, source=None):
    """Converts a loaded checkpoint and writes it where Labels4Free's `pretrained_dir` reads it.

    Args:
        checkpoint: `{"g_ema"/"g": state dict, "d": state dict (optional),
            "latent_avg": array (optional)}`, state dicts as `{name: numpy array}`.
        out: output directory.
        generator_key: "g_ema" (falls back to "g") or "g".
        resolution, channel_multiplier: expected sizes, checked against the shapes (None: skip).
        with_discriminator: also convert "d" when present.
        w_avg_samples: z samples for `w_avg` when there is no `latent_avg`.
        mbstd_group: the discriminator's minibatch-stddev group.
        seed: seed of the `w_avg` estimate.
        source: recorded in config.json.
    Returns:
        the config written to `out/config.json`.
    """
    key = generator_key if generator_key in checkpoint else "g"
    if key not in checkpoint:
        raise ValueError("no generator ('g_ema' or 'g') in the checkpoint")
    g_config = generator_config(checkpoint[key])
    if resolution and g_config["resolution"] != resolution:
        raise ValueError(f"checkpoint is {g_config['resolution']} px, expected {resolution}")
    if channel_multiplier and g_config["channel_base"] != 16384 * channel_multiplier:
        raise ValueError(f"checkpoint widths imply channel_base {g_config['channel_base']}, "
                         f"not 16384 * {channel_multiplier}")

    generator = sg2.Generator(**g_config)
    latent_avg = checkpoint.get("latent_avg")
    convert_generator(checkpoint[key], generator, latent_avg=latent_avg)
    if latent_avg is None:
        # Labels4Free's w-bar: the mean of 4096 mapped z.
        generator.compute_w_avg(w_avg_samples, seed=seed)

    config = {"generator": g_config, "discriminator": None, "source": source,
              "generator_key": key}
    os.makedirs(out, exist_ok=True)
    generator.save_weights(os.path.join(out, sg2.GENERATOR_WEIGHTS))
    if "d" in checkpoint and with_discriminator:
        d_config = discriminator_config(checkpoint["d"], mbstd_group)
        discriminator = sg2.Discriminator(**d_config)
        convert_discriminator(checkpoint["d"], discriminator)
        discriminator.save_weights(os.path.join(out, sg2.DISCRIMINATOR_WEIGHTS))
        config["discriminator"] = d_config
    with open(os.path.join(out, sg2.CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="rosinality StyleGAN2 .pt file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--generator_key", default="g_ema", choices=["g_ema", "g"],
                        help="which generator of the checkpoint to convert")
    parser.add_argument("--resolution", type=int, default=None, help="expected S (checked)")
    parser.add_argument("--channel_multiplier", type=int, default=None,
                        help="expected rosinality channel multiplier (checked)")
    parser.add_argument("--no_discriminator", action="store_true", help="skip 'd'")
    parser.add_argument("--w_avg_samples", type=int, default=4096,
                        help="z samples for w_avg when the checkpoint has no latent_avg")
    parser.add_argument("--mbstd_group", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the w_avg estimate")
    args = parser.parse_args(argv)

    checkpoint = _load_torch_checkpoint(args.checkpoint)
    try:
        config = convert_checkpoint(
            checkpoint, args.out, generator_key=args.generator_key, resolution=args.resolution,
            channel_multiplier=args.channel_multiplier,
            with_discriminator=not args.no_discriminator, w_avg_samples=args.w_avg_samples,
            mbstd_group=args.mbstd_group, seed=args.seed,
            source=os.path.abspath(args.checkpoint))
    except (KeyError, ValueError) as e:
        raise SystemExit(f"convert_stylegan2: {e}") from e
    print(f"convert_stylegan2: wrote {args.out} ({config['generator']['resolution']} px, "
          f"{'with' if config['discriminator'] else 'without'} discriminator)")


if __name__ == "__main__":
    main()

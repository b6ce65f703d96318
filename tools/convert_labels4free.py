"""Convert a Labels4Free alpha network and its StyleGAN2 generator into a tfseg run folder.

Labels4Free's authors release (and their train.py writes) a checkpoint of the alpha network, the
"background extractor", trained on top of a frozen rosinality StyleGAN2 generator. Usage:

    pip install -e ".[convert]"
    python tools/convert_labels4free.py --alpha=horse_alpha.pt \\
        --generator=stylegan2-horse-config-f.pt --model_dir=runs/l4f_horse_converted

`--alpha`: a `.pt` holding `bg_extractor_ema` (what their test_sample.py loads) or `bg_extractor`,
optionally with `d` (the stage-2 discriminator) and `args`; or a bare alpha-network state dict. Both
of their layouts are read: `bg_extractor` (`conv_fns0.N`, `conv_fns1.N`, `conv_merge_fns.N`,
`conv_n`) and `bg_extractor_repro` (`conv1` .. `conv12`, `conv_next` .. `conv_next4`, `conv_n`; the
paper's `--reproduce_model`), which compute the same function.
`--generator`: the rosinality checkpoint it was trained on (`g_ema`, as their samplers load, and `d`).

The result is a training run folder as `tfseg.train` writes one: `config.gin` (sizes read from the
state dicts; truncation and the stage-2 settings from the alpha checkpoint's `args` when it has
them) and `checkpoints/ckpt-0` with the generator (and its EMA copy, the one Labels4Free renders
with), the discriminators and the alpha network. `python -m tfseg.export` of it serves, besides the
distilled segmenter (untrained until the "segmenter" stage runs: `python -m tfseg.train
--model_dir=DIR` trains it), the `serve_latent` signature: z -> the alpha network's mask of G_fg(z),
with the generator's stored noise maps, as the authors' sampler computes it.

The weight mapping (`alpha_state_dict`, `convert_alpha_network`) is a pure function of
`{name: numpy array}` dicts and is tested without torch (tests/test_convert_labels4free.py); the
generator and discriminator go through tools/convert_stylegan2.py's mapping.
"""
import argparse
import os
import re
import sys

import numpy as np

# Run as a script from anywhere in the repository.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import convert_stylegan2 as sg2_convert  # noqa: E402

#: The alpha network reads this many of the generator's finest synthesis blocks (their code: 6).
ALPHA_BLOCKS = 6
#: Their `bg_extractor_repro` names -> the `bg_extractor` names (the same function).
_REPRO_MERGES = ("conv_next", "conv_next2", "conv_next3", "conv_next4")


class CheckpointKindError(ValueError):
    """A checkpoint of another kind or size than the flag that named it expects."""


def _looks_like_generator(keys):
    return any(k.startswith("style.") for k in keys) and any(k.startswith("to_rgb") for k in keys)


def _looks_like_alpha(keys):
    return "conv_n.weight" in keys and ("conv_fns0.0.weight" in keys or "conv1.weight" in keys)


def alpha_state_dict(state_dict, what="alpha network"):
    """Their alpha-network state dict in either layout -> the `bg_extractor` layout.

    Args:
        state_dict: `{name: array}` of `bg_extractor` or `bg_extractor_repro`.
        what: names the source in error messages (e.g. the file).
    Returns:
        `{name: float32 array}` with keys `conv_fns0.j.*`, `conv_fns1.j.*` (j < 6),
        `conv_merge_fns.k.*` (k < 4), `conv_n.*`.
    Raises:
        CheckpointKindError: neither layout (a generator, a ReDO network, ...).
    """
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    keys = set(sd)
    if _looks_like_generator(keys):
        raise CheckpointKindError(f"{what} is a StyleGAN2 generator state dict, not an alpha network "
                                  "(were --alpha and --generator swapped?)")
    if not _looks_like_alpha(keys):
        raise CheckpointKindError(f"{what} is not a Labels4Free alpha network (no conv_n and no "
                                  f"conv_fns0.0 / conv1; keys: {sorted(keys)[:8]}...)")
    if "conv_fns0.0.weight" in keys:
        out = dict(sd)
    else:
        out = {}
        for j in range(ALPHA_BLOCKS):
            for branch, number in ((0, 2 * j + 1), (1, 2 * j + 2)):
                for part in ("weight", "bias"):
                    out[f"conv_fns{branch}.{j}.{part}"] = sd[f"conv{number}.{part}"]
        for k, name in enumerate(_REPRO_MERGES):
            for part in ("weight", "bias"):
                out[f"conv_merge_fns.{k}.{part}"] = sd[f"{name}.{part}"]
        for part in ("weight", "bias"):
            out[f"conv_n.{part}"] = sd[f"conv_n.{part}"]
        unused = sorted(keys - {f"conv{n}.{p}" for n in range(1, 13) for p in ("weight", "bias")}
                        - {f"{m}.{p}" for m in _REPRO_MERGES + ("conv_n",) for p in ("weight", "bias")})
        if unused:
            raise CheckpointKindError(f"{what}: entries a bg_extractor_repro does not have: {unused[:8]}")
    expected = ({f"conv_fns{b}.{j}.{p}" for b in (0, 1) for j in range(ALPHA_BLOCKS) for p in ("weight", "bias")}
                | {f"conv_merge_fns.{k}.{p}" for k in range(ALPHA_BLOCKS - 2) for p in ("weight", "bias")}
                | {f"conv_n.{p}" for p in ("weight", "bias")})
    missing, extra = sorted(expected - set(out)), sorted(set(out) - expected)
    if missing or extra:
        raise CheckpointKindError(f"{what}: not the authors' 6-block alpha network (missing {missing[:6]}, "
                                  f"unexpected {extra[:6]})")
    return out


def alpha_input_channels(state_dict):
    """`[(C_a, C_b)]` per block (coarse to fine): the feature widths the alpha network reads."""
    return [(state_dict[f"conv_fns0.{j}.weight"].shape[1], state_dict[f"conv_fns1.{j}.weight"].shape[1])
            for j in range(ALPHA_BLOCKS)]


def check_alpha_fits_generator(alpha_sd, g_config, alpha_what="--alpha", generator_what="--generator"):
    """Raises CheckpointKindError unless the alpha network reads this generator's 6 finest blocks."""
    from tfseg.modeling.equalized import channels_at  # pylint: disable=import-outside-toplevel
    resolution = g_config["resolution"]
    blocks = [2**i for i in range(3, int(np.log2(resolution)) + 1)]
    if len(blocks) < ALPHA_BLOCKS:
        raise CheckpointKindError(f"{generator_what} draws {resolution} px images ({len(blocks)} synthesis "
                                  f"blocks); the authors' alpha network reads 6 blocks (256, 512 or 1024 px)")
    wanted = [channels_at(r, g_config["channel_base"], g_config["max_channels"]) for r in blocks[-ALPHA_BLOCKS:]]
    found = alpha_input_channels(alpha_sd)
    if any(a != w or b != w for (a, b), w in zip(found, wanted)):
        raise CheckpointKindError(
            f"{alpha_what} reads features of widths {[a for a, _ in found]} but the {resolution} px generator of "
            f"{generator_what} has {wanted} in its last 6 blocks: the alpha network was trained on another "
            "generator (resolution or channel multiplier)")


def _conv1x1(conv, sd, prefix):
    """torch Conv2d 1x1 weight [O, I, 1, 1] -> Keras kernel [1, 1, I, O]; bias as is."""
    weight, bias = sd[prefix + ".weight"], sd[prefix + ".bias"]
    kernel = weight.transpose(2, 3, 1, 0)
    if tuple(conv.kernel.shape) != kernel.shape:
        raise CheckpointKindError(f"'{prefix}.weight' is {weight.shape}; tfseg's {conv.name} needs "
                                  f"{tuple(conv.kernel.shape)} (as [1, 1, in, out])")
    conv.kernel.assign(kernel)
    conv.bias.assign(bias)


def convert_alpha_network(state_dict, alpha_network):
    """Copies their alpha network (`alpha_state_dict` layout) into a built tfseg `AlphaNetwork`.

    Block j's two 1x1 projections are `conv_fns0.j` / `conv_fns1.j` (tfseg `project_j_a/_b`), the
    merges `conv_merge_fns.k` (tfseg `mix_{k+1}`), the head `conv_n`. Their merge reads
    cat(this block's projections, the running map), tfseg's the same order.
    """
    if alpha_network.num_blocks != ALPHA_BLOCKS:
        raise CheckpointKindError(f"the authors' alpha network has {ALPHA_BLOCKS} blocks; tfseg's reads "
                                  f"{alpha_network.num_blocks}")
    for j, (proj_a, proj_b) in enumerate(alpha_network.projections):
        _conv1x1(proj_a, state_dict, f"conv_fns0.{j}")
        _conv1x1(proj_b, state_dict, f"conv_fns1.{j}")
    for k, mixer in enumerate(alpha_network.mixers):
        _conv1x1(mixer, state_dict, f"conv_merge_fns.{k}")
    _conv1x1(alpha_network.head, state_dict, "conv_n")
    return alpha_network


# -- what the checkpoints hold ----------------------------------------------------------------------
def split_alpha_checkpoint(checkpoint, what="--alpha"):
    """`(alpha state dict, stage-2 discriminator state dict or None, args dict)` of a loaded alpha
    checkpoint (`{name: numpy}` state dicts). Raises CheckpointKindError for another kind of file."""
    if not isinstance(checkpoint, dict):
        raise CheckpointKindError(f"{what} does not hold a dict (a state dict or a checkpoint)")
    for key in ("bg_extractor_ema", "bg_extractor"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            d = checkpoint.get("d")
            return alpha_state_dict(checkpoint[key], f"{what} ['{key}']"), d, dict(checkpoint.get("args") or {})
    if "g_ema" in checkpoint or _looks_like_generator(checkpoint):
        raise CheckpointKindError(f"{what} is a StyleGAN2 generator checkpoint (g_ema / style.*), not an alpha "
                                  "network: were --alpha and --generator swapped?")
    if any(isinstance(v, dict) for v in checkpoint.values()) and not _looks_like_alpha(checkpoint):
        raise CheckpointKindError(f"{what} holds {sorted(checkpoint)[:8]}: not a Labels4Free alpha checkpoint "
                                  "(bg_extractor_ema / bg_extractor), e.g. a ReDO or PerturbGAN file?")
    return alpha_state_dict(checkpoint, what), None, {}


def split_generator_checkpoint(checkpoint, what="--generator"):
    """`(generator state dict, discriminator state dict or None, latent_avg or None)` of a loaded
    rosinality checkpoint. Raises CheckpointKindError for another kind of file."""
    if not isinstance(checkpoint, dict):
        raise CheckpointKindError(f"{what} does not hold a dict (a state dict or a checkpoint)")
    if any(k in checkpoint for k in ("bg_extractor_ema", "bg_extractor")) or _looks_like_alpha(checkpoint):
        raise CheckpointKindError(f"{what} is a Labels4Free alpha-network checkpoint, not a StyleGAN2 "
                                  "generator: were --alpha and --generator swapped?")
    for key in ("g_ema", "g"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            generator = checkpoint[key]
            break
    else:
        if _looks_like_generator(checkpoint):
            generator = checkpoint
        else:
            raise CheckpointKindError(f"{what} holds {sorted(checkpoint)[:8]}: no rosinality StyleGAN2 generator "
                                      "('g_ema' or 'g'), e.g. a ReDO or PerturbGAN file?")
    if not _looks_like_generator(generator):
        raise CheckpointKindError(f"{what}: its generator entry is not a rosinality StyleGAN2 state dict")
    latent_avg = checkpoint.get("latent_avg")
    return generator, checkpoint.get("d"), None if latent_avg is None else np.asarray(latent_avg)


#: Their train.py arguments -> tfseg.methods.labels4free settings (stage 2).
_ARGS_TO_SETTINGS = {"trunc": "truncation", "loss_multiplier": "mask_loss_weight", "sat_weight": "adversarial_weight",
                     "fg_coverage_value": "min_foreground_coverage", "bg_coverage_wt": "background_coverage_weight",
                     "lr": "alpha_learning_rate", "r1": "r1_gamma", "d_reg_every": "r1_interval"}


def settings_from_args(args):
    """tfseg settings from their `args` (argparse Namespace as a dict); unknown ones are ignored."""
    out = {}
    for theirs, ours in _ARGS_TO_SETTINGS.items():
        if args.get(theirs) is not None:
            out[ours] = float(args[theirs]) if ours not in ("r1_interval",) else int(args[theirs])
    if args.get("bg_coverage_value") is not None:
        # Their L_bg = relu(value - (1 - mean alpha)) is tfseg's max-foreground hinge with phi_bg = value.
        out["min_background_coverage"] = float(args["bg_coverage_value"])
    return out


# -- the run folder ---------------------------------------------------------------------------------
def _gin_value(value):
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def run_config_text(g_config, d_config, settings, batch_size=8, segmenter_steps=10000, extra_bindings=()):
    """The config.gin of a converted run (bindings of tfseg's own configurables only)."""
    lines = ["# Written by tools/convert_labels4free.py: the authors' alpha network and StyleGAN2 generator,",
             "# converted (stages 'stylegan2' and 'alpha' done; 'segmenter' not trained yet).",
             "import tfseg.methods.labels4free", "",
             "tfseg.training.TrainConfig.method = @tfseg.methods.labels4free",
             f"tfseg.training.TrainConfig.resolution = {g_config['resolution']}",
             f"tfseg.training.TrainConfig.batch_size = {batch_size}",
             f"tfseg.training.TrainConfig.stage_steps = {{'stylegan2': 0, 'alpha': 0, 'segmenter': {segmenter_steps}}}"]
    values = {"z_dim": g_config["z_dim"], "w_dim": g_config["w_dim"], "mapping_layers": g_config["mapping_layers"],
              "channel_base": g_config["channel_base"], "max_channels": g_config["max_channels"],
              "discriminator_channel_base": d_config["channel_base"],
              "discriminator_max_channels": d_config["max_channels"],
              "zero_4x4": "input" if g_config["resolution"] == 512 else "output",
              "alpha_blocks": ALPHA_BLOCKS, "export_latent_signature": True}
    values.update(settings)
    lines += [f"tfseg.methods.labels4free.{k} = {_gin_value(v)}" for k, v in values.items()]
    lines += list(extra_bindings)
    return "\n".join(lines) + "\n"


def convert(alpha_checkpoint, generator_checkpoint, model_dir, batch_size=8, mbstd_group=2, segmenter_steps=10000,
            extra_bindings=(), w_avg_samples=4096, seed=0, alpha_what="--alpha", generator_what="--generator"):
    """Writes the run folder `model_dir` from two loaded checkpoints (`{key: {name: numpy}}` dicts).

    Returns:
        the checkpoint path written.
    Raises:
        CheckpointKindError: a checkpoint of the wrong kind or size, naming it.
        FileExistsError: `model_dir` already holds a run.
    """
    alpha_sd, alpha_d_sd, args = split_alpha_checkpoint(alpha_checkpoint, alpha_what)
    g_sd, d_sd, latent_avg = split_generator_checkpoint(generator_checkpoint, generator_what)
    g_config = sg2_convert.generator_config(g_sd)
    check_alpha_fits_generator(alpha_sd, g_config, alpha_what, generator_what)
    if args.get("size") not in (None, g_config["resolution"]):
        raise CheckpointKindError(f"{alpha_what} was trained at --size {args['size']}, {generator_what} draws "
                                  f"{g_config['resolution']} px images")
    from tfseg.training import run_dir  # pylint: disable=import-outside-toplevel
    some_d = alpha_d_sd if alpha_d_sd is not None else d_sd
    d_config = (sg2_convert.discriminator_config(some_d, mbstd_group) if some_d is not None
                else {"channel_base": g_config["channel_base"], "max_channels": g_config["max_channels"]})
    settings = dict(settings_from_args(args), mbstd_group=mbstd_group, alpha_r1_logit_weight=1.0,
                    pytorch_adam_epsilon=True, seed=seed)
    if os.path.exists(os.path.join(model_dir, run_dir.CONFIG_FILE)):
        raise FileExistsError(f"{model_dir} already holds a run (config.gin); pass an empty --model_dir")
    os.makedirs(model_dir, exist_ok=True)
    text = run_config_text(g_config, d_config, settings, batch_size, segmenter_steps, extra_bindings)
    with open(os.path.join(model_dir, run_dir.CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(text)

    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.training import checkpointing, loading, train_config  # pylint: disable=import-outside-toplevel
    registry.import_configurables()
    config.load_run_config(model_dir)
    train_config = train_config.TrainConfig()
    model = loading.build_method(train_config)
    model.build_for_training(train_config.batch_size)
    for generator in (model.generator, model.generator_ema):
        sg2_convert.convert_generator(g_sd, generator, latent_avg=latent_avg)
    if latent_avg is None:
        # The authors' w-bar: the mean of 4096 mapped z (theirs random at start-up, ours seeded).
        model.generator_ema.compute_w_avg(w_avg_samples, seed=seed)
        model.generator.w_avg.assign(model.generator_ema.w_avg)
    if d_sd is not None:
        sg2_convert.convert_discriminator(d_sd, model.discriminator)
    if alpha_d_sd is not None:
        sg2_convert.convert_discriminator(alpha_d_sd, model.alpha_discriminator)
    convert_alpha_network(alpha_sd, model.alpha_network)
    state = checkpointing.RunState()
    checkpoint = checkpointing.make_checkpoint(model, state)
    latest, _ = checkpointing.managers(checkpoint, model_dir)
    path = latest.save(checkpoint_number=0)
    del tf
    return path


def _load(path, what):
    try:
        import torch  # only the CLI needs torch
    except ImportError as e:
        raise SystemExit('convert_labels4free: PyTorch is needed to read .pt checkpoints; '
                         'install it with  pip install -e ".[convert]"') from e
    if not os.path.exists(path):
        raise SystemExit(f"convert_labels4free: {what}={path} does not exist")
    try:
        # weights_only=False: their checkpoints pickle an argparse Namespace under "args".
        # Only convert checkpoints you trust (unpickling runs code).
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SystemExit(f"convert_labels4free: {what}={path} is not a PyTorch checkpoint ({e})") from e

    def convert_value(value):
        if hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        if isinstance(value, dict) and value and all(hasattr(v, "detach") for v in value.values()):
            return {k: v.detach().cpu().numpy() for k, v in value.items()}
        if isinstance(value, argparse.Namespace):
            return vars(value)
        return value

    if isinstance(loaded, dict):
        if loaded and all(hasattr(v, "detach") for v in loaded.values()):
            return {k: v.detach().cpu().numpy() for k, v in loaded.items()}
        return {k: convert_value(v) for k, v in loaded.items() if not re.search(r"optim$", str(k))}
    return loaded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    parser.add_argument("--alpha", required=True, help="the authors' alpha-network checkpoint (.pt)")
    parser.add_argument("--generator", required=True,
                        help="the rosinality StyleGAN2 checkpoint the alpha network was trained on (.pt)")
    parser.add_argument("--model_dir", required=True, help="the run folder to write (must not hold a run)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="global batch of the run's later stages (their 4 GPUs x 2)")
    parser.add_argument("--mbstd_group", type=int, default=2,
                        help="D's minibatch-stddev group (their per-GPU batch 2 gives 2)")
    parser.add_argument("--segmenter_steps", type=int, default=10000,
                        help="budget of the distilled segmenter stage, if you train it")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="extra bindings for config.gin, e.g. the data source that tfseg.evaluate "
                             "and the segmenter stage read")
    parser.add_argument("--seed", type=int, default=0, help="seed of the w-bar estimate and of the run")
    args = parser.parse_args(argv)

    alpha = _load(args.alpha, "--alpha")
    generator = _load(args.generator, "--generator")
    try:
        path = convert(alpha, generator, args.model_dir, batch_size=args.batch_size, mbstd_group=args.mbstd_group,
                       segmenter_steps=args.segmenter_steps, extra_bindings=args.gin_bindings, seed=args.seed,
                       alpha_what=f"--alpha={args.alpha}", generator_what=f"--generator={args.generator}")
    except (CheckpointKindError, FileExistsError, KeyError, ValueError) as e:
        raise SystemExit(f"convert_labels4free: {e}") from e
    print(f"convert_labels4free: wrote {args.model_dir} ({path})")
    print(f"  export: python -m tfseg.export --model_dir={args.model_dir} --export_dir=serving/l4f "
          "(signature serve_latent: z -> the alpha network's mask)")


if __name__ == "__main__":
    main()

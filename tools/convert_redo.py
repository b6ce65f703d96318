"""Convert the ReDO authors' PyTorch checkpoints into a tfseg run folder (docs/fidelity.md).

Chen, Artieres & Denoyer released, per data set, `<dataset>_nets_state.pth` (a dict with the state
dicts `netEncM`, `netGenX`, `netDX`, `netRecZ` and the training `options`, an argparse Namespace)
and `<dataset>_netM_state.pth` (the mask network alone, with `options`); their `train.py` writes the
same dict (`state_%05d.pth`, `best.pth`). Usage:

    pip install -e ".[convert]"
    python tools/convert_redo.py --checkpoint=flowers_nets_state.pth --model_dir=runs/redo_flowers_authors
    python -m tfseg.export --model_dir=runs/redo_flowers_authors --export_dir=serving/redo_flowers
    python -m tfseg.predict --export_dir=serving/redo_flowers/1 --images=photos --out=masks
    python -m tfseg.evaluate --model_dir=runs/redo_flowers_authors --split=test   # needs the data set

The run folder holds `config.gin` (from the checkpoint's options: sizex, nf/nfM/nfX/nfD/nfZ, nResM,
nz, nMasks, useSelfAttG/D, temperature; the data bindings of `gin_configs/redo_<dataset>.gin` when
the options name flowers, cub or lfw) and a checkpoint in `best/`, which `tfseg.evaluate`,
`tfseg.export` and `tfseg.predict` read as they read a trained run. Networks absent from the file
(a netM file) keep tfseg's initial weights; the optimizers' states are not converted (a converted
run is for inference, not to resume training). The foreground is region 0 (the authors' `mPred[:, 0]`)
unless `--foreground_region=1`.

The mapping (`convert_state_dicts`) is a pure function of `{name: numpy array}` dicts that returns
`{tfseg weight path: numpy array}`, tested without torch (tests/test_convert_redo.py). Layout changes:
conv weights OIHW -> HWIO; linear and 1x1-conv-on-z weights [out, in(,1,1)] -> [in, out]; spectral
norm keeps its trained `weight_orig` and its power-iteration vectors (`weight_u` as is, `weight_v`
permuted from PyTorch's (in, kh, kw) order to tfseg's (kh, kw, in)), so W / sigma is the same in
inference; the generators' first linear layer writes an NCHW 4x4 map, so its output columns are
permuted to NHWC; self-attention's f, g, h, o are tfseg's query, key, value, out.
"""
import argparse
import json
import os
import re
import shutil
import sys

import numpy as np

# Run as a script from anywhere in the repository.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NETWORKS = ("netEncM", "netGenX", "netDX", "netRecZ")
_DATASETS = ("flowers", "cub", "lfw")


class ConversionError(ValueError):
    """A checkpoint that is not a ReDO checkpoint, or one that does not fit the options."""


# -- the mapping (numpy only) ---------------------------------------------------------------------
class _Reader:
    """Takes entries of one state dict once each, so missing and unused entries are reported."""

    def __init__(self, state_dict, what):
        self.state_dict = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
        self.what = what
        self.used = set()

    def __call__(self, key):
        if key not in self.state_dict:
            raise ConversionError(f"{self.what}: no entry '{key}' (not a ReDO {self.what}, or another size)")
        self.used.add(key)
        return self.state_dict[key]

    def check_all_used(self):
        unused = sorted(set(self.state_dict) - self.used)
        if unused:
            raise ConversionError(f"{self.what}: entries left unused (another architecture or size?): "
                                  f"{unused[:8]}{' ...' if len(unused) > 8 else ''}")


def _conv(out, take, key, dst, bias=True, spectral=False):
    """A PyTorch Conv2d (optionally spectral-normed) into `dst/kernel` (`/bias`, `/spectral_u|v`)."""
    weight = take(key + (".weight_orig" if spectral else ".weight"))
    out[dst + "/kernel"] = weight.transpose(2, 3, 1, 0)
    if bias:
        out[dst + "/bias"] = take(key + ".bias")
    if spectral:
        c_in, kh, kw = weight.shape[1:]
        out[dst + "/spectral_u"] = take(key + ".weight_u")
        out[dst + "/spectral_v"] = take(key + ".weight_v").reshape(c_in, kh, kw).transpose(1, 2, 0).reshape(-1)


def _norm(out, take, key, dst):
    """An affine InstanceNorm2d into a GroupNormalization's gamma and beta."""
    out[dst + "/gamma"] = take(key + ".weight")
    out[dst + "/beta"] = take(key + ".bias")


def _dense_from(out, take, key, dst):
    """A Linear, or a 1x1 Conv2d applied to the code z ([B, nz, 1, 1]), into a Dense."""
    weight = take(key + ".weight")
    out[dst + "/kernel"] = weight.reshape(weight.shape[0], -1).T
    out[dst + "/bias"] = take(key + ".bias")


def _attention(out, take, key, dst):
    for theirs, ours in (("f", "query"), ("g", "key"), ("h", "value"), ("o", "out")):
        _conv(out, take, f"{key}.{theirs}", f"{dst}/{ours}", bias=False, spectral=True)
    out[dst + "/gamma"] = take(key + ".gamma").reshape(())


def mask_network_weights(state_dict, num_residual_blocks):
    """netEncM (`_netEncM`) -> `{"mask_network/...": array}`."""
    take, out = _Reader(state_dict, "netEncM"), {}
    for index, name in ((1, "stem"), (4, "down1"), (7, "down2")):
        _conv(out, take, f"cnn.0.mods.{index}", f"mask_network/{name}", bias=False)
        _norm(out, take, f"cnn.0.mods.{index + 1}", f"mask_network/{name}_norm")
    for i in range(num_residual_blocks):
        key, dst = f"cnn.{i + 1}", f"mask_network/blocks/{i}"
        _conv(out, take, key + ".blocs.0", dst + "/conv1", bias=False)
        _norm(out, take, key + ".blocs.1", dst + "/norm1")
        _conv(out, take, key + ".blocs.3", dst + "/conv2")
        _norm(out, take, key + ".activationF.0", dst + "/norm2")
    for j in range(4):
        _conv(out, take, f"psp.{j}.1", f"mask_network/ppm/projections/{j}")
    _conv(out, take, "out.mods.1", "mask_network/up1", bias=False)
    _norm(out, take, "out.mods.2", "mask_network/up1_norm")
    _conv(out, take, "out.mods.5", "mask_network/up2", bias=False)
    _norm(out, take, "out.mods.6", "mask_network/up2_norm")
    _conv(out, take, "out.mods.9", "mask_network/head")
    take.check_all_used()
    return out


def generator_weights(state_dict, num_regions, self_attention):
    """netGenX (`_netGenX`, one `_resMaskedGenerator128` per region) -> `{"generators/k/...": array}`."""
    take, out = _Reader(state_dict, "netGenX"), {}
    for k in range(num_regions):
        key, dst = f"net.{k}", f"generators/{k}"
        weight, bias = take(key + ".dense.weight"), take(key + ".dense.bias")
        channels = weight.shape[0] // 16
        # PyTorch views the output as [C, 4, 4]; tfseg reshapes to [4, 4, C].
        out[dst + "/seed/kernel"] = weight.reshape(channels, 4, 4, -1).transpose(1, 2, 0, 3).reshape(
            16 * channels, -1).T
        out[dst + "/seed/bias"] = bias.reshape(channels, 4, 4).transpose(1, 2, 0).reshape(-1)
        for i in range(5):
            block = f"{dst}/blocks/{i}"
            _conv(out, take, f"{key}.convA.{i}.1", block + "/conv1", bias=False, spectral=True)
            _conv(out, take, f"{key}.convB.{i}", block + "/conv2", spectral=True)
            _conv(out, take, f"{key}.sc.{i}.1", block + "/shortcut", spectral=True)
            for theirs, ours in (("A", "norm1"), ("B", "norm2")):
                _dense_from(out, take, f"{key}.gamma{theirs}.{i}", f"{block}/{ours}/gamma")
                _dense_from(out, take, f"{key}.beta{theirs}.{i}", f"{block}/{ours}/beta")
        if self_attention:
            _attention(out, take, key + ".selfAtt", dst + "/attention")
        _dense_from(out, take, key + ".gammaOut", dst + "/out_norm/gamma")
        _dense_from(out, take, key + ".betaOut", dst + "/out_norm/beta")
        _conv(out, take, key + ".convOut", dst + "/out_conv", spectral=True)
    take.check_all_used()
    return out


def _residual_trunk(out, take, prefix, dst):
    """`_resDiscriminator128` / `_resEncoder128`'s six residual blocks into a DiscriminatorTrunk."""
    first = prefix + ("bloc0" if prefix == "" else "blocs.0")
    first_sc = prefix + ("sc0" if prefix == "" else "sc.0")
    _conv(out, take, first + ".0", dst + "/blocks/0/conv1", spectral=True)
    _conv(out, take, first + ".2", dst + "/blocks/0/conv2", spectral=True)
    _conv(out, take, first_sc + ".1", dst + "/blocks/0/shortcut", spectral=True)
    offset = 0 if prefix == "" else 1      # D keeps its first block apart (bloc0), the encoder in blocs
    for i in range(5):
        key, block = f"{prefix}blocs.{i + offset}", f"{dst}/blocks/{i + 1}"
        _conv(out, take, key + ".1", block + "/conv1", spectral=True)
        _conv(out, take, key + ".3", block + "/conv2", spectral=True)
        if i < 4:
            _conv(out, take, f"{prefix}sc.{i + offset}.1", block + "/shortcut", spectral=True)


def discriminator_weights(state_dict, self_attention):
    """netDX (`_resDiscriminator128`) -> `{"discriminator/...": array}`."""
    take, out = _Reader(state_dict, "netDX"), {}
    _residual_trunk(out, take, "", "discriminator/trunk")
    if self_attention:
        _attention(out, take, "selfAtt", "discriminator/trunk/attention")
    _dense_from(out, take, "dense", "discriminator/adversarial_head")
    take.check_all_used()
    return out


def encoder_weights(state_dict):
    """netRecZ (`_netRecZ` around `_resEncoder128`) -> `{"encoder/...": array}`."""
    take, out = _Reader(state_dict, "netRecZ"), {}
    _residual_trunk(out, take, "net.", "encoder/trunk")
    _dense_from(out, take, "net.dense", "encoder/code_head")
    take.check_all_used()
    return out


def options_from_shapes(state_dicts):
    """What the shapes of the state dicts say of the options (for a file without `options`)."""
    found = {}
    m = state_dicts.get("netEncM")
    if m is not None:
        found["nfM"] = int(np.shape(m["cnn.0.mods.7.weight"])[0])
        found["nResM"] = len({k.split(".")[1] for k in m if re.match(r"cnn\.[1-9]\d*\.", k)})
        head = int(np.shape(m["out.mods.9.weight"])[0])
        found["nMasks"] = 2 if head == 1 else head
    g = state_dicts.get("netGenX")
    if g is not None:
        found["nMasks"] = len({k.split(".")[1] for k in g if k.startswith("net.")})
        found["nz"] = int(np.shape(g["net.0.dense.weight"])[1])
        found["nfX"] = int(np.shape(g["net.0.gammaOut.weight"])[0])
        found["useSelfAttG"] = "net.0.selfAtt.gamma" in g
    d = state_dicts.get("netDX")
    if d is not None:
        found["nfD"] = int(np.shape(d["bloc0.0.weight_orig"])[0])
        found["useSelfAttD"] = "selfAtt.gamma" in d
    z = state_dicts.get("netRecZ")
    if z is not None:
        found["nfZ"] = int(np.shape(z["net.blocs.0.0.weight_orig"])[0])
    return found


def check_options(options):
    """Refuses options tfseg cannot build (the authors' networks exist at 128 px only)."""
    if int(options.get("sizex", 128)) != 128:
        raise ConversionError(f"options.sizex = {options['sizex']}: the authors' generator, D and encoder "
                              "exist at 128 px only (their _netGenX raises otherwise)")
    if int(options.get("nx", 3)) != 3:
        raise ConversionError(f"options.nx = {options['nx']}: tfseg's networks take RGB images (nx = 3)")


def redo_settings(options):
    """`{tfseg.methods.redo parameter: value}` for the authors' options (a dict)."""
    nf = options.get("nf", 64)
    widths = {w: options.get(w) or nf for w in ("nfM", "nfX", "nfD", "nfZ")}
    return {
        "num_regions": int(options.get("nMasks", 2)),
        "z_dim": int(options.get("nz", 32)),
        "mask_width": int(widths["nfM"]),
        "mask_residual_blocks": int(options.get("nResM", 3)),
        "mask_temperature": float(options.get("temperature", 1.0)),
        "generator_width": int(widths["nfX"]),
        "generator_self_attention": bool(options.get("useSelfAttG", False)),
        "discriminator_width": int(widths["nfD"]),
        "encoder_width": int(widths["nfZ"]),
        "discriminator_max_width": 16 * int(max(widths["nfD"], widths["nfZ"])),
        "discriminator_self_attention": bool(options.get("useSelfAttD", False)),
        "info_weight": float(options.get("wrecZ", 5.0)),
        "learning_rate": float(options.get("lrG", 1e-4)),
        "mask_learning_rate": float(options.get("lrM", 1e-5)),
        "mask_weight_decay": float(options.get("wdecay", 1e-4)),
        "init_gain": float(options.get("initOrthoGain", 0.8)),
        # The authors' arithmetic (tfseg.methods.redo.ReDOSettings, "authors' mode").
        "redraw_every_region": True,
        "shared_encoder_trunk": False,
        "generator_seed_multiplier": 1,
        "generator_norm_offset": 0.0,
        "spectral_norm": "reference",
        "mask_symmetric_padding": True,
        "adam_epsilon": 1e-8,
        "pytorch_adam_epsilon": True,
        "pytorch_bias_init": True,
    }


def convert_state_dicts(state_dicts, settings):
    """The authors' state dicts -> `{tfseg weight path: array}` (numpy only).

    Args:
        state_dicts: `{"netEncM"|"netGenX"|"netDX"|"netRecZ": {name: array}}`, any subset.
        settings: `redo_settings(options)`.
    Returns:
        `{path: float32 array}`, paths like "mask_network/stem/kernel",
        "generators/0/blocks/2/norm1/gamma/kernel", "discriminator/trunk/blocks/0/conv1/spectral_v".
    Raises:
        ConversionError: a missing or unused entry (another architecture or size).
    """
    out = {}
    if "netEncM" in state_dicts:
        out.update(mask_network_weights(state_dicts["netEncM"], settings["mask_residual_blocks"]))
    if "netGenX" in state_dicts:
        out.update(generator_weights(state_dicts["netGenX"], settings["num_regions"],
                                     settings["generator_self_attention"]))
    if "netDX" in state_dicts:
        out.update(discriminator_weights(state_dicts["netDX"], settings["discriminator_self_attention"]))
    if "netRecZ" in state_dicts:
        out.update(encoder_weights(state_dicts["netRecZ"]))
    return out


# -- into a tfseg method ----------------------------------------------------------------------------
def resolve(method, path):
    """The tfseg variable at a `convert_state_dicts` path of a built `tfseg.methods.redo.ReDO`."""
    obj = method
    parts = path.split("/")
    for part in parts[:-1]:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    name = parts[-1]
    if name == "kernel":
        return obj._kernel  # pylint: disable=protected-access  (the trained W, not W / sigma)
    return getattr(obj, name)


def assign(method, weights):
    """Copies `convert_state_dicts`' output into a built ReDO method; checks every shape."""
    for path, value in weights.items():
        variable = resolve(method, path)
        if tuple(variable.shape) != tuple(value.shape):
            raise ConversionError(f"'{path}' has shape {tuple(value.shape)} after conversion; the tfseg "
                                  f"variable {variable.path} has {tuple(variable.shape)}")
        variable.assign(value)


def config_text(settings, options, batch_size=None):
    """A self-contained config.gin (only tfseg bindings: run folders refuse includes)."""
    lines = ["# Converted by tools/convert_redo.py from the ReDO authors' checkpoint (docs/fidelity.md).",
             "import tfseg.methods.redo", "import tfseg.data.pipeline", "",
             "tfseg.training.TrainConfig.method = @tfseg.methods.redo",
             "tfseg.training.TrainConfig.resolution = 128",
             f"tfseg.training.TrainConfig.batch_size = {int(batch_size or options.get('batchSize', 20))}",
             "tfseg.training.TrainConfig.selection_metric = 'redo_iou'",
             "tfseg.training.TrainConfig.eval_examples = None",
             "tfseg.training.TrainConfig.eval_batch_size = 20"]
    lines += [f"tfseg.methods.redo.{k} = {v!r}" for k, v in settings.items()]
    dataset = str(options.get("dataset", "")).lower()
    if dataset in _DATASETS:
        lines += ["", f"# Data bindings of gin_configs/redo_{dataset}.gin (point them at your copy)."]
        lines += _data_bindings(dataset)
    else:
        lines += ["tfseg.data.make_dataset.image_resize_method = 'nearest'",
                  "tfseg.data.make_dataset.random_crop = False",
                  "tfseg.data.make_dataset.random_flip = False"]
    return "\n".join(lines) + "\n"


def _data_bindings(dataset):
    out = []
    for name in ("redo_base.gin", f"redo_{dataset}.gin"):
        with open(os.path.join(REPO, "gin_configs", name), encoding="utf-8") as f:
            out += [line.rstrip() for line in f if line.startswith("tfseg.data.")]
    return out


def write_run(model_dir, state_dicts, options, foreground_region=0, batch_size=None):
    """Builds the tfseg method, copies the weights, writes config.gin and `best/ckpt-0`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.training import checkpointing, loading, run_dir, train_config  # pylint: disable=import-outside-toplevel

    check_options(options)
    settings = redo_settings(options)
    weights = convert_state_dicts(state_dicts, settings)
    if os.path.exists(model_dir) and os.listdir(model_dir):
        raise ConversionError(f"{model_dir} is not empty; pass a new --model_dir")
    # Written beside it and renamed at the end: a checkpoint that does not fit leaves nothing.
    partial = model_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        with open(os.path.join(partial, run_dir.CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(config_text(settings, options, batch_size))
        registry.import_configurables()
        config.load_run_config(partial)
        train_config = train_config.TrainConfig()
        method = loading.build_method(train_config)
        method.build_for_training(train_config.batch_size)
        assign(method, weights)
        method.foreground_region.assign(int(foreground_region))
        state = checkpointing.RunState()
        _, best = checkpointing.managers(checkpointing.make_checkpoint(method, state), partial)
        saved = best.save(checkpoint_number=0)
        with open(os.path.join(partial, run_dir.FOREGROUND_FILE), "w", encoding="utf-8") as f:
            json.dump({"region": int(foreground_region), "rule": "conversion",
                       "why": f"tools/convert_redo.py --foreground_region={int(foreground_region)} (the authors' "
                              f"mPred[:, {int(foreground_region)}])", "step": 0}, f, indent=2)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if os.path.isdir(model_dir):
        os.rmdir(model_dir)
    os.rename(partial, model_dir)
    del tf, saved
    return checkpointing.latest_checkpoint(model_dir, "best"), sorted({p.split("/")[0] for p in weights})


# -- reading the .pth -------------------------------------------------------------------------------
def load_checkpoint(path):
    """`(state_dicts {network: {name: numpy}}, options dict)` of an authors' .pth, or ConversionError."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise SystemExit('convert_redo: PyTorch is needed to read .pth files; pip install -e ".[convert]"') from e
    try:
        # weights_only=False: the authors pickle an argparse Namespace under "options".
        # Only convert checkpoints you trust (unpickling runs code).
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pylint: disable=broad-except
        raise ConversionError(f"{path}: not a PyTorch file torch.load can read ({type(e).__name__}: {e})") from e
    return parse_checkpoint(checkpoint, path)


def parse_checkpoint(checkpoint, path="checkpoint"):
    """Splits a loaded checkpoint (tensors or arrays) into state dicts and an options dict."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path}: holds a {type(checkpoint).__name__}, not the dict the ReDO authors "
                              "save (netEncM, netGenX, netDX, netRecZ, options)")
    found = [k for k in NETWORKS if k in checkpoint]
    if not found:
        hint = ""
        if any(k in checkpoint for k in ("g_ema", "g", "d", "bg_extractor", "model")):
            hint = " (it looks like a StyleGAN2 / Labels4Free checkpoint: use tools/convert_labels4free.py)"
        raise ConversionError(f"{path}: not a ReDO checkpoint: none of {', '.join(NETWORKS)} among its keys "
                              f"{sorted(map(str, checkpoint))[:8]}{hint}")

    def to_numpy(d):
        return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in d.items()}

    state_dicts = {k: to_numpy(checkpoint[k]) for k in found}
    options = checkpoint.get("options")
    options = dict(vars(options)) if options is not None and hasattr(options, "__dict__") else dict(options or {})
    return state_dicts, options


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Reads <dataset>_nets_state.pth (all four networks), <dataset>_netM_state.pth (mask network "
               "only) or a state_NNNNN.pth / best.pth of the authors' train.py; writes a run folder for "
               "python -m tfseg.evaluate / export / predict. Options the file lacks come from the flags "
               "below or from the weights' shapes.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the authors' .pth file")
    parser.add_argument("--model_dir", required=True, help="new run folder to write (must not hold a run)")
    parser.add_argument("--foreground_region", type=int, default=0, choices=[0, 1],
                        help="which mask is the object (0: the authors' mPred[:, 0])")
    parser.add_argument("--dataset", choices=_DATASETS, default=None,
                        help="data bindings to write into config.gin (default: the checkpoint's options)")
    parser.add_argument("--nf", type=int, default=None, help="the options' nf, when the file has no options")
    parser.add_argument("--temperature", type=float, default=None,
                        help="the mask network's temperature, when the file has no options (default 1)")
    args = parser.parse_args(argv)
    try:
        state_dicts, options = load_checkpoint(args.checkpoint)
        options = {**options_from_shapes(state_dicts), **options}
        for name in ("nf", "temperature", "dataset"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
        saved, networks = write_run(args.model_dir, state_dicts, options, args.foreground_region)
    except ConversionError as e:
        raise SystemExit(f"convert_redo: {args.checkpoint}: {e}" if not str(e).startswith(args.checkpoint)
                         else f"convert_redo: {e}") from e
    print(f"convert_redo: wrote {args.model_dir} ({', '.join(networks)}; checkpoint {saved})")
    print(f"  next: python -m tfseg.export --model_dir={args.model_dir} --export_dir=serving/redo")


if __name__ == "__main__":
    main()

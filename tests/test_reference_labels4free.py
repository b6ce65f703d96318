"""Labels4Free and StyleGAN2 against the authors' code (tests/reference_code.py finds it), at test time only.

Networks are made at random by the authors' classes (Labels4Free's model_new.py, rosinality's
model.py), at small widths, converted with tools/convert_stylegan2.py and tools/convert_labels4free.py,
and run beside tfseg's with the same inputs and the same noise maps:

* forward passes: the split generator (G_fg with truncation, G_bg with the 4x4 activations zeroed,
  the features the alpha network reads), both alpha-network classes, the discriminator, and
  rosinality's StyleGAN2 G and D;
* one and ten iterations of stage 2 as the authors' `train()` (Labels4Free/train.py) runs them:
  their function itself, with only its data loader, its z draws (`mixing_noise`) and the
  generator's noise maps replaced at run time by the draws tfseg makes for the same step, and
  their optimizers as their `__main__` builds them (train.py:481-493);
* end to end: random authors' checkpoints -> tools/convert_labels4free.py -> python -m tfseg.export
  -> the SavedModel's `serve_latent` masks vs their alpha network; python -m tfseg.predict on the
  generated images.

Widths. Their classes hard-code channel tables (512 up to 32 px; the alpha network's input widths
for config-f). The networks are built here with small widths by wrapping the layer constructors of
their module while it builds (the wrappers pass other widths, the layers and every forward pass are
theirs), and the alpha network's twelve input 1x1 convolutions are replaced by narrower
`torch.nn.Conv2d`s after it is built. Their alpha network reads six synthesis blocks, so stage-2
tests run at 256 px (widths 3..152); rosinality's StyleGAN2 alone at 32 px. Their Generator also reads
row 148 of the 4x4 conv's style weights at construction, so its 4x4 width is 152.
"""
import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from reference_code import REPO, authors_modules, relative_error, state_dict_numpy

sys.path.insert(0, os.path.join(REPO, "tools"))

import convert_labels4free as l4f_convert  # noqa: E402
import convert_stylegan2 as sg2_convert  # noqa: E402
from tfseg.methods import labels4free as l4f  # noqa: E402
from tfseg.methods.base import phases_due  # noqa: E402
from tfseg.modeling import stylegan2 as sg2  # noqa: E402
from tfseg.modeling.alpha_network import AlphaNetwork  # noqa: E402
from tfseg.modeling.equalized import channels_at  # noqa: E402

pytestmark = pytest.mark.reference

# Stage-2 size: 256 px (the alpha network's six blocks), G widths min(768 // r, 152), D min(1024 // r, 16).
RES, STYLE_DIM, N_MLP = 256, 16, 2
G_BASE, G_MAX = 768, 152
D_BASE, D_MAX = 1024, 16
FORWARD_TOL, LOSS_TOL, PARAM_TOL, DRIFT_TOL = 1e-4, 1e-4, 1e-3, 1e-2
TRAIN_STUBS = ("torchvision", "torchvision.transforms", "torchvision.utils")


# -- building the authors' networks small ----------------------------------------------------------
@contextlib.contextmanager
def _replaced(module, **names):
    saved = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _block_resolutions(resolution):
    return [2**i for i in range(3, int(np.log2(resolution)) + 1)]


def authors_generator(module, resolution, base, max_channels, style_dim=STYLE_DIM, n_mlp=N_MLP, seed=0):
    """Their `Generator` with widths min(base // r, max_channels): its StyledConv / ToRGB /
    ConstantInput constructors get these widths, in the order their __init__ builds them."""
    import torch
    width = {r: channels_at(r, base, max_channels) for r in [4] + _block_resolutions(resolution)}
    styled = [(width[4], width[4])]
    for r in _block_resolutions(resolution):
        styled += [(width[r // 2], width[r]), (width[r], width[r])]
    rgbs = [width[4]] + [width[r] for r in _block_resolutions(resolution)]
    styled_iter, rgb_iter = iter(styled), iter(rgbs)
    original = module.StyledConv, module.ToRGB, module.ConstantInput

    def styled_conv(_in, _out, *args, **kwargs):
        c_in, c_out = next(styled_iter)
        return original[0](c_in, c_out, *args, **kwargs)

    def to_rgb(_in, *args, **kwargs):
        return original[1](next(rgb_iter), *args, **kwargs)

    def constant(_channels, *args, **kwargs):
        return original[2](width[4], *args, **kwargs)

    torch.manual_seed(seed)
    with _replaced(module, StyledConv=styled_conv, ToRGB=to_rgb, ConstantInput=constant):
        generator = module.Generator(resolution, style_dim, n_mlp)
    assert next(styled_iter, None) is None and next(rgb_iter, None) is None
    with torch.no_grad():   # their noise strengths start at 0: give the noise maps a visible effect
        for name, p in generator.named_parameters():
            if name.endswith("noise.weight"):
                p.normal_(0.0, 0.5)
            if name.endswith("activate.bias") or name.endswith(".bias") and "to_rgb" in name:
                p.normal_(0.0, 0.2)
    return generator.eval()


def authors_discriminator(module, resolution, base, max_channels, seed=1):
    """Their `Discriminator` (channel_multiplier 2) with widths min(base // r, max_channels): the
    widths their table gives are mapped one to one onto these (so the table must be a function of
    the width, which holds for 256 and 32 px)."""
    import torch
    theirs = {r: (512 if r <= 32 else {64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}[r])
              for r in [4] + _block_resolutions(resolution)}
    ours = {r: channels_at(r, base, max_channels) for r in theirs}
    mapping = {}
    for r in theirs:
        assert mapping.setdefault(theirs[r], ours[r]) == ours[r], "their widths do not map one to one"
    mapping[theirs[4] + 1] = ours[4] + 1             # the final conv reads the stddev map too
    mapping[theirs[4] * 16] = ours[4] * 16          # the first dense layer reads the 4x4 map

    def mapped(constructor):
        def build(c_in, c_out, *args, **kwargs):
            return constructor(mapping.get(c_in, c_in), mapping.get(c_out, c_out), *args, **kwargs)
        return build

    torch.manual_seed(seed)
    with _replaced(module, ConvLayer=mapped(module.ConvLayer), ResBlock=mapped(module.ResBlock),
                   EqualLinear=mapped(module.EqualLinear)):
        discriminator = module.Discriminator(resolution)
    with torch.no_grad():
        for name, p in discriminator.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.2)
    return discriminator


def authors_alpha_network(module, repro, resolution=RES, seed=2):
    """Their `bg_extractor_repro` (repro) or `bg_extractor` for a 256 px generator, its input
    projections narrowed to the small generator's widths (fresh torch.nn.Conv2d, their init)."""
    import torch
    torch.manual_seed(seed)
    widths = [channels_at(r, G_BASE, G_MAX) for r in _block_resolutions(resolution)[-6:]]
    if repro:
        network = module.bg_extractor_repro(image_size=resolution, min_res=8)
        for j, c in enumerate(widths):
            setattr(network, f"conv{2 * j + 1}", torch.nn.Conv2d(c, 3, 1))
            setattr(network, f"conv{2 * j + 2}", torch.nn.Conv2d(c, 3, 1))
    else:
        network = module.bg_extractor(image_size=resolution, min_res=8)
        for j, c in enumerate(widths):
            network.conv_fns0[j] = torch.nn.Conv2d(c, 3, 1)
            network.conv_fns1[j] = torch.nn.Conv2d(c, 3, 1)
    return network


# -- tfseg side ------------------------------------------------------------------------------------
def tfseg_method(batch, **settings):
    values = dict(resolution=RES, z_dim=STYLE_DIM, w_dim=STYLE_DIM, mapping_layers=N_MLP, channel_base=G_BASE,
                  max_channels=G_MAX, discriminator_channel_base=D_BASE, discriminator_max_channels=D_MAX,
                  seed=3)
    values.update(settings)
    model = l4f.Labels4FreeSettings(**values).build()
    model.build_for_training(batch)
    return model


def load_authors_weights(model, generator, discriminator, alpha, w_avg):
    g_sd = state_dict_numpy(generator)
    for g in (model.generator, model.generator_ema):
        sg2_convert.convert_generator(g_sd, g, latent_avg=w_avg)
    sg2_convert.convert_discriminator(state_dict_numpy(discriminator), model.alpha_discriminator)
    l4f_convert.convert_alpha_network(l4f_convert.alpha_state_dict(state_dict_numpy(alpha)), model.alpha_network)


def nchw(x):
    import torch
    return torch.from_numpy(np.array(np.asarray(x, np.float32).transpose(0, 3, 1, 2), order="C"))


def nhwc(t):
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def torch_noise(noise):
    return [nchw(n) for n in noise]


# -- forward passes --------------------------------------------------------------------------------
@pytest.mark.parametrize("repro", [True, False], ids=["bg_extractor_repro", "bg_extractor"])
def test_split_generator_alpha_network_and_discriminator_forward_match_the_authors(repro):
    import torch
    with authors_modules("Labels4Free", "model_new") as (model_new,):
        generator = authors_generator(model_new, RES, G_BASE, G_MAX)
        discriminator = authors_discriminator(model_new, RES, D_BASE, D_MAX)
        alpha = authors_alpha_network(model_new, repro)
        model = tfseg_method(4, truncation=0.7)
        w_avg = np.random.default_rng(0).standard_normal(STYLE_DIM).astype(np.float32) * 0.3
        load_authors_weights(model, generator, discriminator, alpha, w_avg)

        rng = np.random.default_rng(1)
        z = rng.standard_normal((4, STYLE_DIM)).astype(np.float32)
        noise = model.make_noise(4, tf.constant([5, 6], tf.int64))
        bg_noise = model.make_noise(4, tf.constant([7, 8], tf.int64))
        with torch.no_grad():
            fg_t, feats_t = generator([torch.from_numpy(z)], truncation=0.7,
                                      truncation_latent=torch.from_numpy(w_avg)[None], noise=torch_noise(noise))
            bg_t, _ = generator([torch.from_numpy(z)], back=True, noise=torch_noise(bg_noise))
            alpha_t = alpha(feats_t)
            images = rng.uniform(-1, 1, (4, RES, RES, 3)).astype(np.float32)
            d_t = discriminator(nchw(images))
        out = model.render_from(tf.constant(z), tf.constant(z), noise, bg_noise)
        _, feats = model.generator_ema(tf.constant(z), truncation_psi=0.7, noise=noise, return_features=True)
        errors = {"G_fg image": relative_error(out["foreground"], nhwc(fg_t)),
                  "G_bg image": relative_error(out["background"], nhwc(bg_t)),
                  "alpha": relative_error(out["alpha"], nhwc(alpha_t)),
                  "D logits": relative_error(model.alpha_discriminator(images), d_t.numpy()[:, 0])}
        flat = [f for pair in feats for f in pair]
        assert len(flat) == len(feats_t) == 12
        errors["G_fg features"] = max(relative_error(f, nhwc(t)) for f, t in zip(flat, feats_t))
    print("forward rel errors:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= FORWARD_TOL, errors


def test_rosinality_stylegan2_generator_and_discriminator_forward_match_convert_stylegan2():
    """rosinality's own StyleGAN2 (stylegan2-pytorch/model.py), 32 px, through tools/convert_stylegan2.py."""
    import torch
    resolution, base, max_c = 32, 6 * 32, 24
    with authors_modules("stylegan2-pytorch", "model") as (model,):
        generator = authors_generator(model, resolution, base, max_c)
        discriminator = authors_discriminator(model, resolution, 8 * 32, 8)
        g_sd, d_sd = state_dict_numpy(generator), state_dict_numpy(discriminator)
        g_config = sg2_convert.generator_config(g_sd)
        assert (g_config["channel_base"], g_config["max_channels"]) == (base, max_c)
        ours = sg2_convert.convert_generator(g_sd, sg2.Generator(**g_config), latent_avg=np.full(STYLE_DIM, 0.1))
        d_ours = sg2_convert.convert_discriminator(d_sd, sg2.Discriminator(**sg2_convert.discriminator_config(d_sd)))
        rng = np.random.default_rng(2)
        z = rng.standard_normal((4, STYLE_DIM)).astype(np.float32)
        noise = ours.make_noise(4, seed=3)
        images = rng.uniform(-1, 1, (4, resolution, resolution, 3)).astype(np.float32)
        with torch.no_grad():
            image_t, _ = generator([torch.from_numpy(z)], truncation=0.6,
                                   truncation_latent=torch.full((1, STYLE_DIM), 0.1), noise=torch_noise(noise))
            stored_t, _ = generator([torch.from_numpy(z)], randomize_noise=False)
            d_t = discriminator(nchw(images))
        errors = {"G": relative_error(ours(tf.constant(z), truncation_psi=0.6, noise=noise), nhwc(image_t)),
                  "G stored noise": relative_error(ours(tf.constant(z), randomize_noise=False), nhwc(stored_t)),
                  "D": relative_error(d_ours(images), d_t.numpy()[:, 0])}
    print("rosinality forward rel errors:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= FORWARD_TOL, errors


# -- stage-2 iterations with their train() --------------------------------------------------------
class _NoiseFeedingGenerator:
    """Wraps their generator: every call takes the next injected noise maps (their train() calls it
    with z only, so the generator would draw its own)."""

    def __new__(cls, generator, noises):
        import torch

        class Feeding(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = generator

            def forward(self, styles, back=False, truncation=1, truncation_latent=None):
                return self.inner(styles, back=back, truncation=truncation, truncation_latent=truncation_latent,
                                  noise=noises.pop(0))

        return Feeding()


# Both coverage hinges active (alpha starts near 0.5): min-fg 0.6, max-fg through bg_coverage_value 0.6.
ARGS = dict(batch=2, latent=STYLE_DIM, mixing=0.0, trunc=0.7, r1=10.0, d_reg_every=4, sat_weight=1.0,
            loss_multiplier=3.0, fg_coverage_value=0.6, bg_coverage_wt=2.0, bg_coverage_value=0.6, lr=0.002,
            augment=False, augment_p=0.0, ada_target=0.6, ada_length=500, ada_every=256, wandb=False,
            model_save_freq=10**9, distributed=False, n_sample=1)


def _tfseg_settings():
    return dict(truncation=ARGS["trunc"], r1_gamma=ARGS["r1"], r1_interval=ARGS["d_reg_every"],
                adversarial_weight=ARGS["sat_weight"], mask_loss_weight=ARGS["loss_multiplier"],
                min_foreground_coverage=ARGS["fg_coverage_value"], background_coverage_weight=ARGS["bg_coverage_wt"],
                min_background_coverage=ARGS["bg_coverage_value"], alpha_learning_rate=ARGS["lr"],
                mbstd_group=ARGS["batch"], alpha_r1_logit_weight=1.0, pytorch_adam_epsilon=True, pretrained_dir=None)


def run_both(iterations):
    """Runs `iterations` stage-2 steps in tfseg and in their train(); returns per-iteration losses of
    both and the two sets of final (and initial) weights, converted to tfseg's layout."""
    import torch
    batch = ARGS["batch"]
    with authors_modules("Labels4Free", "model_new", "train", stub_modules=TRAIN_STUBS) as (model_new, train):
        generator = authors_generator(model_new, RES, G_BASE, G_MAX)
        discriminator = authors_discriminator(model_new, RES, D_BASE, D_MAX)
        alpha = authors_alpha_network(model_new, repro=True)
        model = tfseg_method(batch, **_tfseg_settings())
        w_avg = np.random.default_rng(0).standard_normal(STYLE_DIM).astype(np.float32) * 0.3
        load_authors_weights(model, generator, discriminator, alpha, w_avg)

        # The batches and tfseg's draws for each step, fed to both.
        rng = np.random.default_rng(4)
        reals = [rng.uniform(-1, 1, (batch, RES, RES, 3)).astype(np.float32) for _ in range(iterations)]
        zs, noises = [], []
        for step in range(iterations):
            for stream in (l4f._ALPHA_D, l4f._ALPHA):
                draws = model.render_draws(batch, model.replica_seed(step, stream))
                zs.append(torch.from_numpy(draws["z"].numpy()))
                noises += [torch_noise(draws["noise"]), torch_noise(draws["background_noise"])]

        # Theirs: train() itself (train.py:119-319), its optimizers as __main__ builds them (481-493).
        g_ratio = 4 / 5   # their g_reg_every = 4
        d_ratio = ARGS["d_reg_every"] / (ARGS["d_reg_every"] + 1)
        g_optim = torch.optim.Adam(list(alpha.parameters()), lr=ARGS["lr"] * g_ratio, betas=(0.0**g_ratio, 0.99**g_ratio))
        d_optim = torch.optim.Adam(discriminator.parameters(), lr=ARGS["lr"] * d_ratio, betas=(0.0**d_ratio, 0.99**d_ratio))
        start = ARGS["d_reg_every"] * 4          # i = start + step: R1 where tfseg's step % interval == 0
        args = argparse.Namespace(**ARGS, start_iter=start, iter=start + iterations - 2)
        theirs = [dict() for _ in range(iterations)]
        counter = {"iteration": 0}

        def recording(name, fn):
            def wrapped(*a, **k):
                value = fn(*a, **k)
                theirs[counter["iteration"]][name] = float(value.detach())
                return value
            return wrapped

        def end_of_iteration(loss_dict):
            counter["iteration"] += 1
            return loss_dict

        z_queue = list(zs)
        with _replaced(train, mixing_noise=lambda *a: [z_queue.pop(0)],
                       reduce_loss_dict=end_of_iteration,
                       d_logistic_loss=recording("discriminator", train.d_logistic_loss),
                       d_r1_loss=recording("r1", train.d_r1_loss),
                       g_nonsaturating_loss=recording("alpha_adversarial", train.g_nonsaturating_loss),
                       binarization_loss=recording("alpha_binarization", train.binarization_loss),
                       fg_mask_coverage_loss=recording("alpha_min_foreground", train.fg_mask_coverage_loss),
                       bg_mask_coverage_loss=recording("alpha_max_foreground", train.bg_mask_coverage_loss)):
            loader = [nchw(r) for r in reals]
            train.train(args, loader, _NoiseFeedingGenerator(generator, noises), alpha, discriminator, g_optim,
                        d_optim, copy.deepcopy(alpha), "cpu", torch.from_numpy(w_avg)[None])
        assert counter["iteration"] == iterations and not z_queue and not noises

        # tfseg: the alpha stage's phases, step by step (the trainer's order).
        stage = [s for s in model.stages() if s.name == "alpha"][0]
        ours = []
        for step in range(iterations):
            phases = phases_due(stage.phases, step)
            model.begin_step(phases)
            losses = {}
            for phase in phases:
                metrics, grads = model.phase_gradients(phase, [{"image": tf.constant(reals[step])}], step)
                model.apply_phase(phase, grads)
                losses.update({k: float(tf.reduce_mean(v)) for k, v in metrics.losses.items()})
            ours.append(losses)

        expected_d = sg2_convert.convert_discriminator(
            state_dict_numpy(discriminator), sg2.Discriminator(**dict(sg2_convert.discriminator_config(
                state_dict_numpy(discriminator)), mbstd_group=batch)))
        expected_alpha = AlphaNetwork(6)
        _, feats = model.generator_ema(tf.zeros([1, STYLE_DIM]), return_features=True, noise=model._zero_noise())
        expected_alpha(feats)
        l4f_convert.convert_alpha_network(l4f_convert.alpha_state_dict(state_dict_numpy(alpha)), expected_alpha)
        g_after = state_dict_numpy(generator)
    return ours, theirs, {"discriminator": (model.alpha_discriminator, expected_d),
                          "alpha network": (model.alpha_network, expected_alpha)}, g_after, model


def _parameter_errors(pairs):
    errors = {}
    for name, (ours, theirs) in pairs.items():
        assert len(ours.trainable_variables) == len(theirs.trainable_variables)
        errors[name] = max(relative_error(a.numpy(), b.numpy())
                           for a, b in zip(ours.trainable_variables, theirs.trainable_variables))
    return errors


@pytest.mark.slow   # ~30 s: their alpha network needs a 256 px generator
def test_one_stage_two_iteration_matches_the_authors_train():
    ours, theirs, pairs, g_after, model = run_both(1)
    assert theirs[0]["alpha_min_foreground"] > 0 and theirs[0]["alpha_max_foreground"] > 0
    assert set(theirs[0]) == {"discriminator", "r1", "alpha_adversarial", "alpha_binarization",
                              "alpha_min_foreground", "alpha_max_foreground"}
    loss_errors = {k: abs(ours[0][k] - v) / max(abs(v), 1e-6) for k, v in theirs[0].items()}
    param_errors = _parameter_errors(pairs)
    print("one iteration, loss rel errors:", {k: f"{v:.2e}" for k, v in loss_errors.items()})
    print("one iteration, parameter rel errors:", {k: f"{v:.2e}" for k, v in param_errors.items()})
    assert max(loss_errors.values()) <= LOSS_TOL, (loss_errors, ours, theirs)
    assert max(param_errors.values()) <= PARAM_TOL, param_errors
    # G is frozen in both: ours still equals theirs, which train() left as it was.
    frozen = sg2_convert.convert_generator(g_after, sg2.Generator(**model.generator_ema.get_config()))
    assert max(relative_error(a.numpy(), b.numpy()) for a, b in
               zip(model.generator_ema.trainable_variables, frozen.trainable_variables)) == 0.0


@pytest.mark.slow   # ~60 s
def test_ten_stage_two_iterations_stay_with_the_authors_train():
    ours, theirs, pairs, _, _ = run_both(10)
    loss_errors = max(abs(ours[i][k] - v) / max(abs(v), 1e-6) for i in range(10) for k, v in theirs[i].items())
    r1_steps = [i for i in range(10) if "r1" in theirs[i]]
    assert r1_steps == [0, 4, 8]
    param_errors = _parameter_errors(pairs)
    print(f"ten iterations: largest loss rel error {loss_errors:.2e}; parameters",
          {k: f"{v:.2e}" for k, v in param_errors.items()})
    assert max(param_errors.values()) <= DRIFT_TOL, param_errors


# -- end to end: their checkpoints -> convert -> export -> predict ----------------------------------
def _run(args, cwd):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.slow
def test_converted_authors_checkpoints_export_the_authors_alpha_masks(tmp_path):
    import torch
    from PIL import Image
    psi = 0.7
    with authors_modules("Labels4Free", "model_new") as (model_new,):
        generator = authors_generator(model_new, RES, G_BASE, G_MAX)
        discriminator = authors_discriminator(model_new, RES, D_BASE, D_MAX)
        alpha_d = authors_discriminator(model_new, RES, D_BASE, D_MAX, seed=5)
        alpha = authors_alpha_network(model_new, repro=True)
        latent_avg = torch.randn(1, STYLE_DIM) * 0.3
        torch.save({"g": generator.state_dict(), "g_ema": generator.state_dict(), "d": discriminator.state_dict(),
                    "latent_avg": latent_avg[0]}, tmp_path / "generator.pt")
        torch.save({"g": generator.state_dict(), "d": alpha_d.state_dict(), "bg_extractor": alpha.state_dict(),
                    "bg_extractor_ema": alpha.state_dict(),
                    "args": argparse.Namespace(size=RES, trunc=psi, loss_multiplier=3.0, lr=0.0002)},
                   tmp_path / "alpha.pt")
        z = np.random.default_rng(6).standard_normal((4, STYLE_DIM)).astype(np.float32)
        with torch.no_grad():
            images_t, feats_t = generator([torch.from_numpy(z)], truncation=psi, truncation_latent=latent_avg,
                                          randomize_noise=False)
            expected = nhwc(alpha(feats_t))
            fg = nhwc(images_t)

    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    _run(["tools/convert_labels4free.py", f"--alpha={tmp_path / 'alpha.pt'}",
          f"--generator={tmp_path / 'generator.pt'}", f"--model_dir={run_dir}"], REPO)
    _run(["-m", "tfseg.export", f"--model_dir={run_dir}", f"--export_dir={export_dir}"], REPO)
    version = export_dir / "1"
    loaded = tf.saved_model.load(str(version))
    served = loaded.signatures["serve_latent"](z=tf.constant(z))
    error = relative_error(served["mask"].numpy(), expected)
    agree = float(np.mean((served["mask"].numpy() > 0.5) == (expected > 0.5)))
    agree_09 = float(np.mean((served["mask"].numpy() > 0.9) == (expected > 0.9)))
    image_error = relative_error(served["image"].numpy(), fg)
    print(f"end to end: serve_latent mask rel {error:.2e}, thresholded 0.5 agree {agree:.4%}, 0.9 agree "
          f"{agree_09:.4%}; image rel {image_error:.2e}")
    assert error <= FORWARD_TOL and image_error <= FORWARD_TOL
    assert agree >= 0.999 and agree_09 >= 0.999
    metadata = json.loads((version / "assets" / "tfseg_export.json").read_text())
    assert "serve_latent" in metadata["signatures"]

    # tfseg.predict --latents: the masks of the images the converted generator draws, as their sampler.
    np.save(tmp_path / "z.npy", z)
    latent_dir = tmp_path / "latent_masks"
    _run(["-m", "tfseg.predict", f"--export_dir={version}", f"--latents={tmp_path / 'z.npy'}",
          f"--out={latent_dir}"], REPO)
    soft = np.load(latent_dir / "masks.npy")
    predict_error = relative_error(soft, expected[..., 0])
    written = np.stack([np.asarray(Image.open(latent_dir / f"{i}_mask.png")) for i in range(len(z))]) > 127
    predict_agree = float(np.mean(written == (expected[..., 0] >= 0.5)))
    print(f"end to end: tfseg.predict --latents masks rel {predict_error:.2e}, PNG masks agree {predict_agree:.4%}")
    assert predict_error <= FORWARD_TOL and predict_agree >= 0.999

    # tfseg.predict serves the run's distilled segmenter on photos (untrained in a converted run):
    # it runs on the generated images and writes a mask for each; the alpha masks are checked above.
    images_dir, out_dir = tmp_path / "images", tmp_path / "predicted"
    images_dir.mkdir()
    for i, image in enumerate(fg):
        Image.fromarray(np.clip((image + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)).save(images_dir / f"{i}.png")
    _run(["-m", "tfseg.predict", f"--export_dir={version}", f"--images={images_dir}", f"--out={out_dir}"], REPO)
    assert sorted(p.name for p in out_dir.glob("*_mask.png")) == [f"{i}_mask.png" for i in range(4)]

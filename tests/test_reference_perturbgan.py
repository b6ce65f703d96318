"""tfseg's PerturbGAN against the authors' code (perturbed-seg, found by tests/reference_code.py), issue 29.

The authors' networks are built by their own modules (stylegan.py, model.py) with their own random
initialisation, at small widths: their widths are constants (512 ... 16), so while the test builds
them, their layer constructors in `stylegan` are wrapped to divide every width by `FACTOR`
(513 = 512 + the minibatch-stddev channel becomes 512 / FACTOR + 1) and to give the AdaIN layers
the small style size; nothing else of their code changes. Their weights are converted with
tools/convert_perturbgan.py and tfseg runs in the authors' mode (`perturbgan_paper_base.gin`'s
switches). Biases and noise strengths start at 0 and the AdaIN scales at 1 in their code; the test
adds random values to them so that every path carries signal.

The training iteration repeats the authors' `train()` (train.py lines 109-248) step by step, with
their modules (`BgFgMask`, `Discriminator`, `ModelWrapper`, `CompositePerturber`, `RandomShift`,
`BgContrastJitter`, `LayeredRenderer`, `MaskLoss`) and their optimizers' settings (train.py
425-432), and injects the same random draws into both: z (167-175), the style-mixing decision and
crossovers (166, stylegan.py `random.sample`), the noise maps (stylegan.py `torch.randn` in
`StyledGenerator.forward`), the shifts (`location_noise_fn`, train.py 407), the contrast factors
(perturber_utils `torch.rand`) and the gradient-penalty interpolation (184).
"""
import contextlib
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from reference_code import authors_modules, relative_error, require_torch, state_dict_numpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_perturbgan as conv  # noqa: E402

pytestmark = pytest.mark.reference

FACTOR = 16          # widths 512 / 256 / 128 -> 32 / 16 / 8: tfseg channel_base 1024, max_channels 32
Z_DIM = 8            # code and style size (< 16, so the width wrapper leaves it alone)
N_MLP = 2
SQRT2 = math.sqrt(2.0)
MASK_COVERAGE, MASK_WEIGHT, BIN_WEIGHT = 0.75, 2.0, 2.0  # eta high: the hinge is active
SHIFT_FRACTION, JITTER = 0.125, 0.3
LR, MLP_MULT, EMA = 1e-3, 0.01, 0.999


def _scaled(c):
    if c == 513:
        return 512 // FACTOR + 1
    return c // FACTOR if c >= 16 else c


@contextlib.contextmanager
def small_widths(stylegan):
    """While the authors' networks are built, their width constants are divided by FACTOR."""
    names = ("StyledConvBlock", "ConvBlock", "EqualConv2d", "EqualLinear")
    originals = {name: getattr(stylegan, name) for name in names}
    outermost = [True]

    def wrapped(original, extra):
        def make(*args, **kwargs):
            if not outermost[0]:
                return original(*args, **kwargs)
            args = [_scaled(a) if i < 2 and isinstance(a, int) else a for i, a in enumerate(args)]
            outermost[0] = False
            try:
                return original(*args, **{**kwargs, **extra})
            finally:
                outermost[0] = True
        return make

    for name in names:
        setattr(stylegan, name, wrapped(originals[name], {"style_dim": Z_DIM} if name == "StyledConvBlock" else {}))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(stylegan, name, original)


@pytest.fixture(scope="module")
def authors():
    with authors_modules("perturbed-seg", "stylegan", "model", "perturber", "perturber_utils", "renderer",
                         "loss") as modules:
        yield dict(zip(("stylegan", "model", "perturber", "perturber_utils", "renderer", "loss"), modules))


def _randomise_constants(module, torch, seed):
    """Adds N(0, 0.2) to the parameters the authors initialise to constants (biases, noise strengths)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "noise" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))


def authors_networks(authors, seed=0, layout="BgFgMask"):
    torch = require_torch()
    torch.manual_seed(seed)
    with small_widths(authors["stylegan"]):
        generator = getattr(authors["model"], layout)(Z_DIM, N_MLP)
        discriminator = authors["stylegan"].Discriminator(in_channels=3)
    _randomise_constants(generator, torch, seed + 1)
    _randomise_constants(discriminator, torch, seed + 2)
    return generator, discriminator


def tfseg_method(resolution, batch, grow_from=None, layout="BgFgMask", **overrides):
    from tfseg.methods.perturbgan import PerturbGANSettings
    settings = dict(resolution=resolution, min_mask_coverage=MASK_COVERAGE, z_dim=Z_DIM, w_dim=Z_DIM,
                    mapping_layers=N_MLP, channel_base=512 * 32 // FACTOR, max_channels=512 // FACTOR,
                    single_generator=layout == "SimpleBgFgMask", shared_mapping=layout == "BgFgMaskSharedStyle",
                    shift_fraction=SHIFT_FRACTION, background_contrast_jitter=JITTER,
                    mask_size_weight=MASK_WEIGHT, binarization_weight=BIN_WEIGHT, learning_rate=LR,
                    style_mixing_probability=0.9, ema_decay=EMA, progressive_start=grow_from,
                    style_gain=SQRT2, equalized_noise=True, fused_scale_from=128,
                    discriminator_widen_first_conv=True, discriminator_output_gain=SQRT2,
                    pytorch_adam_epsilon=True, seed=0)
    settings.update(overrides)
    model = PerturbGANSettings(**settings).build()
    model.build_for_training(batch)
    return model


def converted(authors, resolution, batch, seed=0, grow_from=None, layout="BgFgMask", **overrides):
    generator, discriminator = authors_networks(authors, seed, layout)
    model = tfseg_method(resolution, batch, grow_from, layout, **overrides)
    checkpoint = {"generator": state_dict_numpy(generator), "generator_running": state_dict_numpy(generator),
                  "discriminator": state_dict_numpy(discriminator), "step": int(math.log2(resolution)) - 2}
    conv.convert_networks(checkpoint, model)
    return generator, discriminator, model


@contextlib.contextmanager
def fed(torch, name, values):
    """`torch.<name>` returns `values` one by one (the authors' draws, injected), then is restored."""
    original = getattr(torch, name)
    queue = [torch.from_numpy(np.asarray(v, np.float32)) for v in values]

    def draw(*args, **kwargs):
        if not queue:
            raise AssertionError(f"the authors' code drew more torch.{name} values than the test injected")
        return queue.pop(0)
    setattr(torch, name, draw)
    try:
        yield queue
    finally:
        setattr(torch, name, original)


def noise_maps(rng, layout, b, step):
    """Per synthesis network, its per-block noise maps `[b, 1, r, r]`, as the authors draw them: one
    list per StyledGenerator (BgFgMask), one list shared (BgFgMaskSharedStyle, common_noise), one."""
    lists = 2 if layout == "BgFgMask" else 1
    drawn = [[rng.standard_normal((b, 1, 4 * 2 ** i, 4 * 2 ** i)).astype(np.float32) for i in range(step + 1)]
             for _ in range(lists)]
    per_network = drawn * 2 if layout == "BgFgMaskSharedStyle" else drawn
    return [m for maps in drawn for m in maps], [[np.transpose(m, (0, 2, 3, 1)) for m in maps] for maps in per_network]


def nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def nchw(a):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(a, np.float32), (0, 3, 1, 2))))


# -- forward passes --------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution,layout", [(16, "BgFgMask"), (32, "BgFgMaskSharedStyle"),
                                               (32, "SimpleBgFgMask"), (128, "BgFgMask")])
def test_forward_every_network(authors, resolution, layout):
    """bg / fg / mask generator and critic at R (128 px: the fused up/down convs), rel <= 1e-4."""
    torch = require_torch()
    b, step = 2, int(math.log2(resolution)) - 2
    generator, discriminator, model = converted(authors, resolution, b, layout=layout)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((b, Z_DIM)).astype(np.float32)
    drawn, tf_noise = noise_maps(rng, layout, b, step)
    with torch.no_grad(), fed(torch, "randn", drawn):
        bg, (fg, mask) = generator(torch.from_numpy(z), step=step)
    out = model.generator(tf.constant(z), noise=tf_noise)
    errors = {name: relative_error(out[name].numpy(), nhwc(ref)) for name, ref in
              (("background", bg), ("foreground", fg), ("mask", mask))}
    images = rng.uniform(-1, 1, (b, resolution, resolution, 3)).astype(np.float32)
    with torch.no_grad():
        scores = discriminator(nchw(images), step=step)[:, 0].numpy()
    errors["discriminator"] = relative_error(model.discriminator(tf.constant(images)).numpy(), scores)
    print(f"forward {layout} {resolution} px:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= 1e-4, errors


def test_forward_fading_in(authors):
    """Progressive growing: G and D at 16 px of a 32 px run, the new block faded in at alpha 0.3."""
    torch = require_torch()
    b, step, alpha = 2, 2, 0.3
    generator, discriminator, model = converted(authors, 32, b, grow_from=8)
    rng = np.random.default_rng(4)
    z = rng.standard_normal((b, Z_DIM)).astype(np.float32)
    drawn, tf_noise = noise_maps(rng, "BgFgMask", b, step)
    with torch.no_grad(), fed(torch, "randn", drawn):
        bg, (fg, mask) = generator(torch.from_numpy(z), step=step, alpha=alpha)
    out = model.generator(tf.constant(z), noise=tf_noise, resolution=16, alpha=alpha)
    errors = {name: relative_error(out[name].numpy(), nhwc(ref)) for name, ref in
              (("background", bg), ("foreground", fg), ("mask", mask))}
    images = rng.uniform(-1, 1, (b, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        scores = discriminator(nchw(images), step=step, alpha=alpha)[:, 0].numpy()
    errors["discriminator"] = relative_error(model.discriminator(tf.constant(images), alpha=alpha).numpy(), scores)
    print("forward fading in:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= 1e-4, errors


# -- training iterations ---------------------------------------------------------------------------
class _Draws:
    """One iteration's random draws, made once and given to both implementations."""

    def __init__(self, rng, b, step, mix):
        size = 4 * 2 ** step
        self.mix = mix
        self.phases = {}
        for phase in ("discriminator", "generator"):
            z = rng.standard_normal((b, Z_DIM)).astype(np.float32)
            z2 = rng.standard_normal((b, Z_DIM)).astype(np.float32)
            crossovers = [int(rng.integers(0, step)) for _ in range(2)]      # random.sample(range(step), 1)
            drawn, tf_noise = noise_maps(rng, "BgFgMask", b, step)
            limit = SHIFT_FRACTION * size
            shifts = np.round(rng.uniform(-limit, limit, (b, 2))).astype(np.float32)  # [x, y], whole pixels
            u_jitter = rng.uniform(size=(b, 1, 1, 1)).astype(np.float32)
            self.phases[phase] = dict(z=z, z2=z2, crossovers=crossovers, noise=drawn, tf_noise=tf_noise,
                                      shifts=shifts, u_jitter=u_jitter)
        self.eps = rng.uniform(size=(b, 1, 1, 1)).astype(np.float32)

    def tfseg(self):
        out = {}
        for phase, d in self.phases.items():
            out[(phase, "z")] = tf.constant(d["z"])
            out[(phase, "mixing")] = (tf.constant(d["z2"]), tf.constant(d["crossovers"], tf.int32)) if self.mix else None
            out[(phase, "noise")] = [[tf.constant(m) for m in maps] for maps in d["tf_noise"]]
            out[(phase, "shifts")] = tf.constant(d["shifts"][:, ::-1].astype(np.int32))   # (dy, dx)
            out[(phase, "jitter")] = tf.constant(1.0 + (2 * JITTER * d["u_jitter"][:, 0, 0, 0] - JITTER))
        out[("discriminator", "interpolation")] = tf.constant(self.eps[:, 0, 0, 0])
        return out


class AuthorsLoop:
    """The authors' train() (train.py 109-248), one iteration at a time, their modules and optimizers."""

    def __init__(self, authors, generator, discriminator, step):
        import copy
        torch = require_torch()
        self.torch, self.step = torch, step
        self.shift_queue = []
        shift = authors["perturber"].RandomShift(lambda *size, resolution, device=None: self.shift_queue.pop(0))
        perturber = authors["perturber"].CompositePerturber(shift, authors["perturber"].BgContrastJitter(JITTER))
        renderer = authors["renderer"].LayeredRenderer()
        self.generator = authors["renderer"].ModelWrapper(generator, perturber, renderer)          # train.py 419
        self.running = authors["renderer"].ModelWrapper(copy.deepcopy(generator), None, renderer)  # 396, 420
        self.discriminator = discriminator
        groups = generator.parameter_groups()                                                     # 425-432
        self.g_optimizer = torch.optim.Adam(groups["generator"], lr=LR, betas=(0.0, 0.99))
        self.g_optimizer.add_param_group({"params": groups["style"], "lr": LR * MLP_MULT, "mult": MLP_MULT})
        self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=(0.0, 0.99))
        self.mask_loss = authors["loss"].MaskLoss(MASK_COVERAGE, MASK_WEIGHT, BIN_WEIGHT)         # 480
        self._requires_grad(self.generator, False)                                                # 91-92
        self._requires_grad(self.discriminator, True)

    @staticmethod
    def _requires_grad(module, flag):
        for p in module.parameters():
            p.requires_grad = flag

    @contextlib.contextmanager
    def _draws_of(self, d):
        import random as python_random
        torch = self.torch
        self.shift_queue[:] = [torch.from_numpy(d["shifts"])]
        crossovers = list(d["crossovers"])
        sample = python_random.sample
        python_random.sample = lambda population, k: [crossovers.pop(0)]
        try:
            with fed(torch, "randn", d["noise"]), fed(torch, "rand", [d["u_jitter"]]):
                yield
        finally:
            python_random.sample = sample

    def _inputs(self, d, mix):
        z = self.torch.from_numpy(d["z"])
        return [z, self.torch.from_numpy(d["z2"])] if mix else z

    def iteration(self, real, draws, alpha=1.0):
        torch, step = self.torch, self.step   # alpha: 1 at the initial resolution, else fading in (112)
        D, losses = self.discriminator, {}
        self.d_optimizer.zero_grad()                                                  # 110
        real_predict = D(real, step=step, alpha=alpha)                                # 150-157
        real_mean = real_predict.mean()
        loss = -(real_mean - 0.001 * (real_predict ** 2).mean())
        loss.backward()
        d = draws.phases["discriminator"]
        with self._draws_of(d):                                                       # 165-177
            fake_image = self.generator(self._inputs(d, draws.mix), step=step, alpha=alpha)[0]
        fake_mean = D(fake_image, step=step, alpha=alpha).mean()                      # 179-183
        fake_mean.backward()
        eps = torch.from_numpy(draws.eps)                                             # 184-195
        x_hat = (eps * real.data + (1 - eps) * fake_image.data).requires_grad_(True)
        hat = D(x_hat, step=step, alpha=alpha)
        grad_x_hat = torch.autograd.grad(outputs=hat.sum(), inputs=x_hat, create_graph=True)[0]
        penalty = 10 * ((grad_x_hat.view(grad_x_hat.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()
        penalty.backward()
        self.d_optimizer.step()                                                       # 207-208
        self.d_optimizer.zero_grad()
        losses.update(real=real_mean.item(), fake=fake_mean.item(), gradient_penalty=penalty.item())

        self.g_optimizer.zero_grad()                                                  # 211-216
        self._requires_grad(self.generator, True)
        self._requires_grad(D, False)
        d = draws.phases["generator"]
        with self._draws_of(d):                                                       # 218
            rendered, perturbed, _ = self.generator(self._inputs(d, draws.mix), step=step, alpha=alpha)
        predict_mean = D(rendered, step=step, alpha=alpha).mean()                     # 221-226
        loss = -predict_mean
        mask_loss, parts = self.mask_loss(perturbed[1][1])                            # 231-235
        loss = loss + mask_loss
        loss.backward()                                                               # 243-245
        self.g_optimizer.step()
        with torch.no_grad():                                                         # accumulate, 35-40
            trained = dict(self.generator.named_parameters())
            for name, p in self.running.named_parameters():
                p.mul_(EMA).add_(trained[name], alpha=1 - EMA)
        self._requires_grad(self.generator, False)                                    # 247-248
        self._requires_grad(D, True)
        losses.update(generator_adversarial=-predict_mean.item(), min_mask_loss=parts["min_mask_loss"].item(),
                      bin_loss=parts["bin_loss"].item())
        return losses

    def checkpoint(self):
        return {"generator": state_dict_numpy(self.generator.generator),
                "generator_running": state_dict_numpy(self.running.generator),
                "discriminator": state_dict_numpy(self.discriminator), "step": self.step}


def tfseg_iteration(model, real, draws, step):
    model.injected_draws = draws.tfseg()
    batch = [{"image": tf.constant(real)}]
    d_metrics, grads = model.phase_gradients("discriminator", batch, tf.constant(step, tf.int64))
    model.apply_phase("discriminator", grads)
    g_metrics, grads = model.phase_gradients("generator", batch, tf.constant(step, tf.int64))
    model.apply_phase("generator", grads)
    model.injected_draws = None
    mean = lambda t: float(np.mean(t.numpy()))  # noqa: E731
    return dict(real=mean(d_metrics.diagnostics["discriminator/real"]),
                fake=mean(d_metrics.diagnostics["discriminator/fake"]),
                gradient_penalty=10 * mean(d_metrics.losses["gradient_penalty"]),
                generator_adversarial=mean(g_metrics.losses["generator_adversarial"]),
                min_mask_loss=mean(g_metrics.losses["mask_size"]),
                bin_loss=mean(g_metrics.losses["mask_binarization"]))


def parameter_errors(model, authors_checkpoint, resolution, batch, **settings):
    """Per tfseg variable of G, G's EMA and D: rel error against the authors' weights, converted."""
    expected = tfseg_method(resolution, batch, **settings)
    conv.convert_networks(authors_checkpoint, expected)
    errors = {}
    for name in ("generator", "generator_ema", "discriminator"):
        for got, want in zip(getattr(model, name).weights, getattr(expected, name).weights):
            assert got.path == want.path
            errors[got.path] = relative_error(got.numpy(), want.numpy())
    return errors


# Growing: a 32 px run in its 16 px stage, fading in (phase 40 images, batch 4: the 8 px stage is
# steps 0-19, the 16 px one fades in over steps 20-29, alpha 0.1 ... 1).
GROWING = dict(grow_from=8, progressive_phase_images=40)
FIRST_16PX_STEP = 20


def _run_iterations(authors, iterations, seed, growing=False):
    torch = require_torch()
    b, step = 4, 2
    resolution, settings, first = (32, GROWING, FIRST_16PX_STEP) if growing else (16, {}, 0)
    generator, discriminator, model = converted(authors, resolution, b, seed=seed, **settings)
    if growing:
        model.begin_stage("generator_16")
    loop = AuthorsLoop(authors, generator, discriminator, step)
    rng = np.random.default_rng(seed)
    loss_errors = {}
    for i in range(first, first + iterations):
        real = rng.uniform(-1, 1, (b, resolution, resolution, 3)).astype(np.float32)
        draws = _Draws(rng, b, step, mix=rng.uniform() < 0.9)                  # train.py 166
        alpha = float(model.growth_args(i)["alpha"]) if growing else 1.0
        # Their loader reads 16 px images; tfseg area-averages its 32 px batch: the same images.
        real_16 = torch.nn.functional.avg_pool2d(nchw(real), resolution // 16)
        theirs = loop.iteration(real_16, draws, alpha)
        if i == first:
            print(f"the authors' loss terms, first iteration (alpha {alpha:.2f}):", {k: f"{v:.4g}" for k, v in theirs.items()})
        ours = tfseg_iteration(model, real, draws, i)
        for k in theirs:
            loss_errors[k] = max(loss_errors.get(k, 0.0), abs(ours[k] - theirs[k]) / max(abs(theirs[k]), 1e-12))
    del torch
    return loss_errors, parameter_errors(model, loop.checkpoint(), resolution, b, **settings)


def _worst(errors, n=3):
    return ", ".join(f"{k} {v:.1e}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1])[:n])


@pytest.mark.slow
def test_one_training_iteration(authors):
    """One iteration as train.py: every loss term rel <= 1e-4, every parameter after it rel <= 1e-3."""
    loss_errors, param_errors = _run_iterations(authors, 1, seed=5)
    print("one iteration, losses:", {k: f"{v:.1e}" for k, v in loss_errors.items()})
    print("one iteration, parameters (worst):", _worst(param_errors))
    assert max(loss_errors.values()) <= 1e-4, loss_errors
    assert max(param_errors.values()) <= 1e-3, _worst(param_errors, 10)


@pytest.mark.slow
def test_ten_training_iterations(authors):
    """Ten iterations in a row (drift): parameters rel <= 1e-2."""
    loss_errors, param_errors = _run_iterations(authors, 10, seed=6)
    print("ten iterations, losses (worst over the ten):", {k: f"{v:.1e}" for k, v in loss_errors.items()})
    print("ten iterations, parameters (worst):", _worst(param_errors))
    assert max(param_errors.values()) <= 1e-2, _worst(param_errors, 10)


# -- end to end: the authors' checkpoint -> convert -> export -> predict ------------------------------
def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.slow
def test_converted_checkpoint_export_predict(authors, tmp_path):
    """A random checkpoint saved as train.py saves it (save(), lines 61-72), converted, exported and
    run by tfseg.predict: the served masks are the authors' moving-average generator's masks (G_running,
    no noise) at the latent the run's encoder gives each photo."""
    torch = require_torch()
    from PIL import Image
    resolution, step, b = 32, 3, 3
    generator, discriminator = authors_networks(authors, seed=11)
    running, _ = authors_networks(authors, seed=12)   # a moving average that differs from G
    checkpoint = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                  "g_optimizer": {}, "d_optimizer": {}, "generator_running": running.state_dict(),
                  "alpha": 1.0, "step": step}
    path = str(tmp_path / "train_step-3.model")
    torch.save(checkpoint, path)
    run_dir, export_dir, images_dir, out_dir = (str(tmp_path / n) for n in ("run", "export", "images", "out"))
    _run([os.path.join(REPO, "tools", "convert_perturbgan.py"), f"--checkpoint={path}", f"--model_dir={run_dir}"], REPO)
    _run(["-m", "tfseg.export", f"--model_dir={run_dir}", f"--export_dir={export_dir}", "--checkpoint=latest"], REPO)
    os.makedirs(images_dir)
    rng = np.random.default_rng(13)
    photos = rng.integers(0, 256, (b, resolution, resolution, 3), dtype=np.uint8)
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(os.path.join(images_dir, f"photo{i}.png"))
    _run(["-m", "tfseg.predict", f"--export_dir={export_dir}/1", f"--images={images_dir}", f"--out={out_dir}"], REPO)

    # The authors' side: G_running's mask, no noise, at z = the converted run's encoder output.
    from tfseg.data import augment
    from tfseg.serving import inference
    from tfseg.training import loading
    import gin
    model, _, _ = loading.load_trained(run_dir, "latest")
    gin.clear_config()
    images = np.stack([augment.preprocess({"image": tf.constant(p)}, resolution, training=False,
                                          image_resize_method="bilinear")["image"].numpy() for p in photos])
    z = model.latent_of(tf.constant(images)).numpy()
    zeros = [torch.zeros(b, 1, 4 * 2 ** i, 4 * 2 ** i) for i in range(step + 1)]
    with torch.no_grad():
        _, (_, expected) = running(torch.from_numpy(z), noise=zeros, step=step)
    expected = nhwc(expected)

    segment, _ = inference.load_exported(os.path.join(export_dir, "1"))
    served = segment([open(os.path.join(images_dir, f"photo{i}.png"), "rb").read() for i in range(b)])["mask"]
    pre = relative_error(served, expected)
    predicted = np.stack([np.asarray(Image.open(os.path.join(out_dir, f"photo{i}_mask.png")).convert("L"))
                          for i in range(b)])[..., None] >= 128
    agree = float(np.mean(predicted == (expected >= 0.5)))
    print(f"end to end: served mask rel {pre:.1e}; predict's PNG masks equal the authors' thresholded mask "
          f"on {100 * agree:.3f} % of pixels")
    assert pre <= 1e-4
    assert agree >= 0.999


@pytest.mark.slow
def test_training_iterations_fading_in(authors):
    """Progressive growing: ten iterations at 16 px of a 32 px run while its new block fades in
    (alpha 0.1 ... 1, as train.py's fade; Adam's step counts per weight, as torch.optim.Adam's):
    losses rel <= 1e-4 at the first, parameters rel <= 1e-3 after the ten."""
    loss_errors, param_errors = _run_iterations(authors, 10, seed=7, growing=True)
    print("fading in, losses (worst over the ten):", {k: f"{v:.1e}" for k, v in loss_errors.items()})
    print("fading in, parameters (worst):", _worst(param_errors))
    assert max(param_errors.values()) <= 1e-3, _worst(param_errors, 10)

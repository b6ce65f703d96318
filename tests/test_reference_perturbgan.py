"""tfseg's PerturbGAN against the authors' code (../shared/reference/perturbed-seg), issue 29.

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

from tests.reference_code import authors_modules, relative_error, require_torch, state_dict_numpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_perturbgan as conv  # noqa: E402

pytestmark = pytest.mark.reference

FACTOR = 16          # widths 512 / 256 / 128 -> 32 / 16 / 8: tfseg channel_base 1024, max_channels 32
Z_DIM = 8            # code and style size (< 16, so the width wrapper leaves it alone)
N_MLP = 2
SQRT2 = math.sqrt(2.0)
MASK_COVERAGE, MASK_WEIGHT, BIN_WEIGHT = 0.25, 2.0, 2.0
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
                    discriminator_widen_first_conv=True, discriminator_output_gain=SQRT2, seed=0)
    settings.update(overrides)
    model = PerturbGANSettings(**settings).build()
    model.build_for_training(batch)
    return model


def converted(authors, resolution, batch, seed=0, grow_from=None, layout="BgFgMask"):
    generator, discriminator = authors_networks(authors, seed, layout)
    model = tfseg_method(resolution, batch, grow_from, layout)
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

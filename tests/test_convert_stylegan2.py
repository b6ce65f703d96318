"""rosinality StyleGAN2 state dict -> tfseg networks, checked against a numpy forward pass.

The reference below re-implements rosinality's forward pass in NCHW numpy (float64) straight from
the state dict: grouped per-sample modulated weights (its `fused=True` path), explicit scatter for
the transposed conv, upfirdn2d by zero insertion + padding + correlation with the flipped kernel.
No torch needed.
"""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import convert_stylegan2 as conv  # noqa: E402
from tfseg.modeling import stylegan2 as sg2  # noqa: E402

SQRT2 = np.sqrt(2.0)
FIR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0

# Tiny configuration: 16 px, widths 8 / 8 / 4, two mapping layers, z_dim != w_dim.
RES, Z_DIM, W_DIM, N_MLP, BASE, MAXC = 16, 6, 8, 2, 64, 8
LR_MUL = 0.01


def ch(r):
    return sg2.channels_at(r, BASE, MAXC)


# -- a state dict in the rosinality layout --------------------------------------------------------
def _styled(sd, rng, prefix, cin, cout, k=3):
    sd[f"{prefix}.conv.weight"] = rng.standard_normal((1, cout, cin, k, k))
    sd[f"{prefix}.conv.modulation.weight"] = rng.standard_normal((cin, W_DIM))
    sd[f"{prefix}.conv.modulation.bias"] = 1.0 + 0.1 * rng.standard_normal(cin)


def generator_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(N_MLP):
        sd[f"style.{i + 1}.weight"] = rng.standard_normal((W_DIM, Z_DIM if i == 0 else W_DIM)) / LR_MUL
        sd[f"style.{i + 1}.bias"] = rng.standard_normal(W_DIM)
    c4 = ch(4)
    sd["input.input"] = rng.standard_normal((1, c4, 4, 4))

    def styled_conv(prefix, cin, cout):
        _styled(sd, rng, prefix, cin, cout)
        sd[f"{prefix}.noise.weight"] = 0.3 * rng.standard_normal(1)
        sd[f"{prefix}.activate.bias"] = 0.2 * rng.standard_normal(cout)
        if "convs" in prefix:    # the upsampling convs carry their FIR as a buffer
            sd[f"{prefix}.conv.blur.kernel"] = FIR * 4

    def to_rgb(prefix, cin):
        _styled(sd, rng, prefix, cin, 3, k=1)
        sd[f"{prefix}.bias"] = 0.2 * rng.standard_normal((1, 3, 1, 1))

    styled_conv("conv1", c4, c4)
    to_rgb("to_rgb1", c4)
    cin = c4
    log = int(np.log2(RES))
    for j, r in enumerate(2**i for i in range(3, log + 1)):
        styled_conv(f"convs.{2 * j}", cin, ch(r))
        styled_conv(f"convs.{2 * j + 1}", ch(r), ch(r))
        to_rgb(f"to_rgbs.{j}", ch(r))
        sd[f"to_rgbs.{j}.upsample.kernel"] = FIR * 4
        cin = ch(r)
    for i, r in enumerate([4] + [2**i for i in range(3, log + 1) for _ in range(2)]):
        sd[f"noises.noise_{i}"] = rng.standard_normal((1, 1, r, r))
    return {k: v.astype(np.float32) for k, v in sd.items()}


def discriminator_state_dict(seed=1):
    rng = np.random.default_rng(seed)
    sd = {"convs.0.0.weight": rng.standard_normal((ch(RES), 3, 1, 1)),
          "convs.0.1.bias": 0.2 * rng.standard_normal(ch(RES))}
    log = int(np.log2(RES))
    cin = ch(RES)
    for k, i in enumerate(range(log, 2, -1), start=1):
        cout = ch(2 ** (i - 1))
        sd[f"convs.{k}.conv1.0.weight"] = rng.standard_normal((cin, cin, 3, 3))
        sd[f"convs.{k}.conv1.1.bias"] = 0.2 * rng.standard_normal(cin)
        sd[f"convs.{k}.conv2.0.kernel"] = FIR
        sd[f"convs.{k}.conv2.1.weight"] = rng.standard_normal((cout, cin, 3, 3))
        sd[f"convs.{k}.conv2.2.bias"] = 0.2 * rng.standard_normal(cout)
        sd[f"convs.{k}.skip.0.kernel"] = FIR
        sd[f"convs.{k}.skip.1.weight"] = rng.standard_normal((cout, cin, 1, 1))
        cin = cout
    c4 = ch(4)
    sd["final_conv.0.weight"] = rng.standard_normal((c4, cin + 1, 3, 3))
    sd["final_conv.1.bias"] = 0.2 * rng.standard_normal(c4)
    sd["final_linear.0.weight"] = rng.standard_normal((c4, c4 * 16))
    sd["final_linear.0.bias"] = 0.2 * rng.standard_normal(c4)
    sd["final_linear.1.weight"] = rng.standard_normal((1, c4))
    sd["final_linear.1.bias"] = 0.2 * rng.standard_normal(1)
    return {k: v.astype(np.float32) for k, v in sd.items()}


# -- numpy reference (NCHW, float64) --------------------------------------------------------------
def fused_lrelu(x, bias):
    y = x + bias.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(y >= 0, y, 0.2 * y) * SQRT2


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    b, c, h, w = x.shape
    if up > 1:
        y = np.zeros((b, c, h * up, w * up))
        y[:, :, ::up, ::up] = x
        x = y
    x = np.pad(x, ((0, 0), (0, 0), pad, pad))
    k = kernel[::-1, ::-1]
    kh, kw = k.shape
    ho, wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((b, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * x[:, :, i:i + ho, j:j + wo]
    return out[:, :, ::down, ::down]


def conv2d(x, w, stride=1, pad=0):
    """x [b, I, H, W], w [O, I, k, k] (cross-correlation, like torch)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    ho = (x.shape[2] - k) // stride + 1
    wo = (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("oi,bihw->bohw", w[:, :, i, j], patch)
    return out


def conv_transpose2d_stride2(x, w):
    """x [I, H, W], w [I, O, k, k], stride 2, no padding, by explicit scatter."""
    cin, h, wd = x.shape
    k = w.shape[-1]
    out = np.zeros((w.shape[1], (h - 1) * 2 + k, (wd - 1) * 2 + k))
    for y in range(h):
        for xx in range(wd):
            out[:, 2 * y:2 * y + k, 2 * xx:2 * xx + k] += np.einsum("i,iokl->okl", x[:, y, xx], w)
    return out


def equal_linear(x, sd, prefix, lr_mul=1.0, activate=False):
    w = sd[prefix + ".weight"].astype(np.float64)
    out = x @ (w * lr_mul / np.sqrt(w.shape[1])).T
    bias = sd[prefix + ".bias"].astype(np.float64) * lr_mul
    return fused_lrelu(out, bias) if activate else out + bias


def modulated_conv(x, style, sd, prefix, demodulate=True, upsample=False):
    weight = sd[prefix + ".weight"][0].astype(np.float64)                 # [O, I, k, k]
    cout, cin, k, _ = weight.shape
    s = equal_linear(style, sd, prefix + ".modulation")                   # [b, I]
    outs = []
    for b in range(x.shape[0]):
        wb = weight / np.sqrt(cin * k * k) * s[b][None, :, None, None]
        if demodulate:
            wb = wb / np.sqrt((wb**2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        if upsample:
            y = conv_transpose2d_stride2(x[b], wb.transpose(1, 0, 2, 3))[None]
            outs.append(upfirdn2d(y, FIR * 4, pad=(1, 1))[0])
        else:
            outs.append(conv2d(x[b:b + 1], wb, pad=k // 2)[0])
    return np.stack(outs)


def styled_conv(x, style, sd, prefix, noise, upsample=False):
    out = modulated_conv(x, style, sd, prefix + ".conv", upsample=upsample)
    out = out + sd[prefix + ".noise.weight"][0] * noise
    return fused_lrelu(out, sd[prefix + ".activate.bias"].astype(np.float64))


def to_rgb(x, style, sd, prefix, skip=None):
    out = modulated_conv(x, style, sd, prefix + ".conv", demodulate=False)
    out = out + sd[prefix + ".bias"].astype(np.float64)
    if skip is not None:
        out = out + upfirdn2d(skip, FIR * 4, up=2, pad=(2, 1))
    return out


def reference_generator(sd, z, noises, psi=1.0, latent_avg=None, zero_4x4=False):
    """Returns (image NCHW, [post-activation outputs of convs.0, convs.1, ...])."""
    w = z / np.sqrt(np.mean(z**2, axis=1, keepdims=True) + 1e-8)
    for i in range(N_MLP):
        w = equal_linear(w, sd, f"style.{i + 1}", LR_MUL, activate=True)
    if psi != 1:
        w = latent_avg + psi * (w - latent_avg)
    x = np.repeat(sd["input.input"].astype(np.float64), z.shape[0], axis=0)
    if zero_4x4 == "input":
        x = x * 0
    x = styled_conv(x, w, sd, "conv1", noises[0])
    if zero_4x4 == "output":
        x = x * 0
    skip = to_rgb(x, w, sd, "to_rgb1")
    features = []
    for j in range(int(np.log2(RES)) - 2):
        x = styled_conv(x, w, sd, f"convs.{2 * j}", noises[2 * j + 1], upsample=True)
        features.append(x)
        x = styled_conv(x, w, sd, f"convs.{2 * j + 1}", noises[2 * j + 2])
        features.append(x)
        skip = to_rgb(x, w, sd, f"to_rgbs.{j}", skip)
    return skip, features


def reference_discriminator(sd, images, group_size=4):
    def conv_layer(x, prefix, downsample=False, activate=True):
        i = 1 if downsample else 0
        w = sd[f"{prefix}.{i}.weight"].astype(np.float64)
        k = w.shape[-1]
        w = w / np.sqrt(w.shape[1] * k * k)
        if downsample:
            p = 2 + k - 1
            x = upfirdn2d(x, FIR, pad=((p + 1) // 2, p // 2))
            x = conv2d(x, w, stride=2)
        else:
            x = conv2d(x, w, pad=k // 2)
        return fused_lrelu(x, sd[f"{prefix}.{i + 1}.bias"].astype(np.float64)) if activate else x

    x = conv_layer(images, "convs.0")
    for k in range(1, int(np.log2(RES)) - 1):
        out = conv_layer(conv_layer(x, f"convs.{k}.conv1"), f"convs.{k}.conv2", downsample=True)
        skip = conv_layer(x, f"convs.{k}.skip", downsample=True, activate=False)
        x = (out + skip) / SQRT2
    b, c, h, w = x.shape
    group = min(b, group_size)
    s = x.reshape(group, -1, 1, c, h, w)
    s = np.sqrt(s.var(axis=0) + 1e-8).mean(axis=(2, 3, 4), keepdims=True)[:, :, 0]   # [b/g, 1, 1, 1]
    s = np.tile(s, (group, 1, h, w))
    x = conv_layer(np.concatenate([x, s], axis=1), "final_conv")
    x = x.reshape(b, -1)
    x = equal_linear(x, sd, "final_linear.0", activate=True)
    return equal_linear(x, sd, "final_linear.1")[:, 0]


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def tiny_generator():
    return sg2.Generator(RES, Z_DIM, W_DIM, N_MLP, channel_base=BASE, max_channels=MAXC,
                         mapping_lr_mul=LR_MUL)


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("psi,zero_4x4", [(1.0, False), (0.6, "output"), (0.6, "input")])
def test_converted_generator_matches_numpy_reference(psi, zero_4x4):
    sd = generator_state_dict()
    rng = np.random.default_rng(3)
    latent_avg = rng.standard_normal(W_DIM)
    gen = conv.convert_generator(sd, tiny_generator(), latent_avg=latent_avg)
    z = rng.standard_normal((2, Z_DIM))
    noises = [rng.standard_normal((2, 1, r, r)) for r in gen.noise_resolutions]

    expected, expected_features = reference_generator(sd, z, noises, psi, latent_avg, zero_4x4)
    image, features = gen(tf.constant(z, tf.float32), truncation_psi=psi,
                          noise=[tf.constant(nhwc(n), tf.float32) for n in noises],
                          zero_4x4=zero_4x4, return_features=True)
    np.testing.assert_allclose(image.numpy(), nhwc(expected), rtol=1e-4, atol=1e-4)
    flat = [f for pair in features for f in pair]
    assert len(flat) == len(expected_features)
    for got, want in zip(flat, expected_features):
        np.testing.assert_allclose(got.numpy(), nhwc(want), rtol=1e-4, atol=1e-4)


def test_converted_generator_uses_the_stored_noise_buffers_when_noise_is_not_random():
    sd = generator_state_dict()
    gen = conv.convert_generator(sd, tiny_generator())
    z = np.random.default_rng(4).standard_normal((2, Z_DIM))
    noises = [sd[f"noises.noise_{i}"].astype(np.float64) for i in range(gen.num_noise)]
    expected, _ = reference_generator(sd, z, noises)
    image = gen(tf.constant(z, tf.float32), randomize_noise=False)
    np.testing.assert_allclose(image.numpy(), nhwc(expected), rtol=1e-4, atol=1e-4)


def test_converted_discriminator_matches_numpy_reference():
    sd = discriminator_state_dict()
    d = sg2.Discriminator(RES, channel_base=BASE, max_channels=MAXC, mbstd_group=2)
    conv.convert_discriminator(sd, d)
    images = np.random.default_rng(5).uniform(-1, 1, (4, 3, RES, RES))
    expected = reference_discriminator(sd, images, group_size=2)
    got = d(tf.constant(nhwc(images), tf.float32)).numpy()
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_conversion_reports_unused_and_misshapen_entries():
    sd = generator_state_dict()
    sd["convs.99.conv.weight"] = np.zeros((1, 2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="not used"):
        conv.convert_generator(sd, tiny_generator())
    sd = generator_state_dict()
    sd["input.input"] = np.zeros((1, 5, 4, 4), np.float32)
    with pytest.raises(ValueError, match="input.input"):
        conv.convert_generator(sd, tiny_generator())
    with pytest.raises(KeyError, match="final_conv"):
        sd = discriminator_state_dict()
        del sd["final_conv.0.weight"]
        conv.convert_discriminator(sd, sg2.Discriminator(RES, channel_base=BASE, max_channels=MAXC))


def test_sizes_are_inferred_from_the_state_dicts():
    assert conv.generator_config(generator_state_dict()) == {
        "resolution": RES, "z_dim": Z_DIM, "w_dim": W_DIM, "mapping_layers": N_MLP,
        "channel_base": ch(RES) * RES, "max_channels": MAXC}
    d_config = conv.discriminator_config(discriminator_state_dict(), mbstd_group=2)
    assert d_config == {"resolution": RES, "channel_base": ch(RES) * RES, "max_channels": MAXC,
                        "mbstd_group": 2}


def test_converted_checkpoint_round_trips_through_labels4free_pretrained_dir(tmp_path):
    from tfseg.methods import labels4free  # pylint: disable=import-outside-toplevel
    g_sd, d_sd = generator_state_dict(), discriminator_state_dict()
    latent_avg = np.linspace(-1, 1, W_DIM).astype(np.float32)
    config = conv.convert_checkpoint({"g_ema": g_sd, "d": d_sd, "latent_avg": latent_avg[None]},
                                     str(tmp_path), resolution=RES, mbstd_group=2)
    assert config["discriminator"]["mbstd_group"] == 2
    # What reads the folder: Labels4Free's pretrained_dir (its mbstd_group setting wins over the config's).
    model = labels4free.Labels4FreeSettings(RES, pretrained_dir=str(tmp_path), mbstd_group=2, segmenter_width=8,
                                            segmenter_residual_blocks=1).build()
    model.build_for_training(2)
    gen, d = model.generator_ema, model.discriminator
    np.testing.assert_allclose(gen.w_avg.numpy(), latent_avg)

    rng = np.random.default_rng(6)
    z = rng.standard_normal((2, Z_DIM))
    noises = [rng.standard_normal((2, 1, r, r)) for r in gen.noise_resolutions]
    expected, _ = reference_generator(g_sd, z, noises)
    image = gen(tf.constant(z, tf.float32), noise=[tf.constant(nhwc(n), tf.float32) for n in noises])
    np.testing.assert_allclose(image.numpy(), nhwc(expected), rtol=1e-4, atol=1e-4)
    images = rng.uniform(-1, 1, (2, 3, RES, RES))
    np.testing.assert_allclose(d(tf.constant(nhwc(images), tf.float32)).numpy(),
                               reference_discriminator(d_sd, images, group_size=2),
                               rtol=1e-4, atol=1e-4)


def test_cli_without_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)     # makes `import torch` raise ImportError
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[convert\]"'):
        conv.main(["--checkpoint=missing.pt", "--out=unused"])

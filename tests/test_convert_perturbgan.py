"""tools/convert_perturbgan.py without torch: the numpy mapping, the sizes it reads, its errors.

The state dicts here are made in numpy with the key names and shapes of the authors' modules
(perturbed-seg's `BgFgMask` / `Discriminator` state dicts); tests/test_reference_perturbgan.py
checks the same mapping against their code itself.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_perturbgan as conv  # noqa: E402

SQRT2 = math.sqrt(2.0)
Z, N_MLP = 6, 2


def authors_width(r, base=1024, cap=32):
    return min(cap, base // r)


def generator_state(rng, step, prefix_style="generator_bg.style.", prefix="generator_bg.generator.", head="to_rgb",
                    out=3):
    """The keys and shapes of one authors' StyledGenerator (nine blocks, as their Generator always has)."""
    sd = {}
    for k in range(N_MLP):
        sd[f"{prefix_style}{2 * k + 1}.linear.weight_orig"] = rng.standard_normal((Z, Z))
        sd[f"{prefix_style}{2 * k + 1}.linear.bias"] = rng.standard_normal(Z)
    previous = None
    for i in range(9):
        r = 4 * 2 ** i
        c = max(1, authors_width(r))
        q = f"{prefix}progression.{i}."
        if i == 0:
            sd[q + "conv1.input"] = rng.standard_normal((1, c, 4, 4))
        elif r >= 128:
            sd[q + "conv1.0.weight"] = rng.standard_normal((previous, c, 3, 3))
            sd[q + "conv1.0.bias"] = rng.standard_normal(c)
            sd[q + "conv1.1.weight"] = np.ones((c, 1, 3, 3))
        else:
            sd[q + "conv1.1.conv.weight_orig"] = rng.standard_normal((c, previous, 3, 3))
            sd[q + "conv1.1.conv.bias"] = rng.standard_normal(c)
            sd[q + "conv1.2.weight"] = np.ones((c, 1, 3, 3))
        sd[q + "conv2.conv.weight_orig"] = rng.standard_normal((c, c, 3, 3))
        sd[q + "conv2.conv.bias"] = rng.standard_normal(c)
        for n in ("1", "2"):
            sd[q + f"noise{n}.weight_orig"] = rng.standard_normal((1, c, 1, 1))
            sd[q + f"adain{n}.style.linear.weight_orig"] = rng.standard_normal((2 * c, Z))
            sd[q + f"adain{n}.style.linear.bias"] = np.concatenate([np.ones(c), np.zeros(c)]) + rng.standard_normal(2 * c)
        sd[f"{prefix}{head}.{i}.conv.weight_orig"] = rng.standard_normal((out, c, 1, 1))
        sd[f"{prefix}{head}.{i}.conv.bias"] = rng.standard_normal(out)
        previous = c
    return sd


def checkpoint(step=2, seed=0):
    rng = np.random.default_rng(seed)
    g = generator_state(rng, step)
    g.update(generator_state(rng, step, "generator_objects.style.", "generator_objects.generator.", "to_out", 4))
    d = {}
    for k in range(9):
        r = 4 * 2 ** (8 - k)    # D block k reads r px
        c_in = authors_width(r)
        c_out = authors_width(max(4, r // 2))
        d[f"from_rgb.{k}.0.conv.weight_orig"] = rng.standard_normal((c_in, 3, 1, 1))
        d[f"from_rgb.{k}.0.conv.bias"] = rng.standard_normal(c_in)
        q = f"progression.{k}."
        if k == 8:
            d[q + "conv1.0.conv.weight_orig"] = rng.standard_normal((c_in, c_in + 1, 3, 3))
            d[q + "conv1.0.conv.bias"] = rng.standard_normal(c_in)
            d[q + "conv2.0.conv.weight_orig"] = rng.standard_normal((c_in, c_in, 4, 4))
            d[q + "conv2.0.conv.bias"] = rng.standard_normal(c_in)
            continue
        d[q + "conv1.0.conv.weight_orig"] = rng.standard_normal((c_out, c_in, 3, 3))
        d[q + "conv1.0.conv.bias"] = rng.standard_normal(c_out)
        if r >= 128:
            d[q + "conv2.1.weight"] = rng.standard_normal((c_out, c_out, 3, 3))
            d[q + "conv2.1.bias"] = rng.standard_normal(c_out)
        else:
            d[q + "conv2.1.conv.weight_orig"] = rng.standard_normal((c_out, c_out, 3, 3))
            d[q + "conv2.1.conv.bias"] = rng.standard_normal(c_out)
    d["linear.linear.weight_orig"] = rng.standard_normal((1, authors_width(4)))
    d["linear.linear.bias"] = rng.standard_normal(1)
    as32 = lambda sd: {k: np.asarray(v, np.float32) for k, v in sd.items()}  # noqa: E731
    return {"generator": as32(g), "generator_running": as32(g), "discriminator": as32(d), "step": step,
            "alpha": 1.0}


def test_sizes_read_from_the_weights():
    sizes = conv.networks_config(checkpoint(step=5))
    assert sizes["resolution"] == 128 and sizes["layout"] == "BgFgMask"
    assert (sizes["z_dim"], sizes["w_dim"], sizes["mapping_layers"]) == (Z, Z, N_MLP)
    assert (sizes["channel_base"], sizes["max_channels"]) == (1024, 32)
    # Below 64 px every width is the cap: the base follows the port's halving from 64 px.
    assert conv.networks_config(checkpoint(step=2))["channel_base"] == 1024


def _model(resolution, ema=True):
    from tfseg.methods.perturbgan import PerturbGANSettings
    model = PerturbGANSettings(resolution=resolution, min_mask_coverage=0.2, z_dim=Z, w_dim=Z, mapping_layers=N_MLP,
                               channel_base=1024, max_channels=32, style_gain=SQRT2, equalized_noise=True,
                               fused_scale_from=128, discriminator_widen_first_conv=True,
                               discriminator_output_gain=SQRT2, ema_decay=0.999 if ema else None).build()
    model.build_for_training(2)
    return model


def test_mapping_of_each_kind_of_weight():
    """Transposes, gains, the AdaIN bias 1, the mapping lr_mul, the fused kernels, D's 4x4 conv."""
    ckpt = checkpoint(step=5)
    g, d = ckpt["generator"], ckpt["discriminator"]
    model = _model(128)
    conv.convert_networks(ckpt, model)
    gen = model.generator
    first = gen.mappings[0].dense[0]
    np.testing.assert_allclose(first.kernel.numpy() * first.lr_mul, g["generator_bg.style.1.linear.weight_orig"].T,
                               rtol=1e-6)
    block4 = gen.synthesis[0].blocks[0]
    np.testing.assert_allclose(block4.constant.numpy(),
                               g["generator_bg.generator.progression.0.conv1.input"].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(block4.noise_a.numpy(),  # equalized on both sides: stored as is
                               g["generator_bg.generator.progression.0.noise1.weight_orig"].reshape(-1), rtol=1e-6)
    c = block4.channels
    np.testing.assert_allclose(block4.adain_a.style.bias.numpy()[:c],
                               g["generator_bg.generator.progression.0.adain1.style.linear.bias"][:c] - 1, rtol=1e-5,
                               atol=1e-6)
    block128 = gen.synthesis[1].blocks[5]
    assert block128.fused
    np.testing.assert_allclose(block128.conv_a.kernel.numpy(),
                               g["generator_objects.generator.progression.5.conv1.0.weight"].transpose(2, 3, 0, 1))
    head = gen.synthesis[1].head
    np.testing.assert_allclose(head.kernel.numpy()[0, 0],
                               g["generator_objects.generator.to_out.5.conv.weight_orig"][:, :, 0, 0].T)
    disc = model.discriminator
    np.testing.assert_allclose(disc.down[0][1].kernel.numpy(), d["progression.3.conv2.1.weight"].transpose(2, 3, 1, 0))
    w = d["progression.8.conv2.0.conv.weight_orig"]
    np.testing.assert_allclose(disc.final_dense.kernel.numpy()[(1 * 4 + 2) * w.shape[1] + 3], w[:, 3, 1, 2])
    np.testing.assert_allclose(disc.output_dense.kernel.numpy()[:, 0], d["linear.linear.weight_orig"][0])


def test_tfseg_mode_weights_are_rescaled():
    """Converted into tfseg's own layers (gain 1 AdaIN, plain noise), the stored values absorb the gains."""
    from tfseg.methods.perturbgan import PerturbGANSettings
    ckpt = checkpoint(step=2)
    model = PerturbGANSettings(resolution=16, min_mask_coverage=0.2, z_dim=Z, w_dim=Z, mapping_layers=N_MLP,
                               channel_base=1024, max_channels=32, discriminator_widen_first_conv=True).build()
    model.build_for_training(2)
    conv.convert_networks(ckpt, model)
    block = model.generator.synthesis[0].blocks[1]
    key = "generator_bg.generator.progression.1."
    np.testing.assert_allclose(block.noise_a.numpy(),
                               ckpt["generator"][key + "noise1.weight_orig"].reshape(-1) * SQRT2 / math.sqrt(32),
                               rtol=1e-6)
    np.testing.assert_allclose(block.adain_a.style.kernel.numpy(),
                               ckpt["generator"][key + "adain1.style.linear.weight_orig"].T * SQRT2, rtol=1e-6)


def test_wrong_kind_of_checkpoint_is_named():
    with pytest.raises(conv.ConversionError, match=r"model\.pth.*has no 'discriminator'"):
        conv.networks_config({"generator": {}, "step": 2}, what="model.pth")
    redo_like = {"generator": {"netEncM.conv1.weight": np.zeros((1,))}, "discriminator": {}, "step": 2}
    with pytest.raises(conv.ConversionError, match=r"netM\.pth 'generator'.*not a state dict of the authors'"):
        conv.networks_config(redo_like, what="netM.pth")
    with pytest.raises(conv.ConversionError, match="step 12"):
        conv.networks_config(dict(checkpoint(), step=12), what="x.model")


def test_wrong_size_is_named():
    ckpt = checkpoint(step=2)
    model = _model(16)
    ckpt["discriminator"]["linear.linear.weight_orig"] = np.zeros((1, 7), np.float32)   # D 7 wide at 4 px
    with pytest.raises(conv.ConversionError, match=r"linear\.linear\.weight_orig.*shape"):
        conv.convert_networks(ckpt, model, what="big.model")
    missing = checkpoint(step=2)
    del missing["generator"]["generator_objects.generator.progression.2.conv2.conv.bias"]
    with pytest.raises(conv.ConversionError, match=r"small\.model 'generator'.*progression\.2\.conv2\.conv\.bias"):
        conv.convert_networks(missing, _model(16), what="small.model")


def test_help_explains():
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_perturbgan.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--checkpoint" in done.stdout and "--model_dir" in done.stdout and "encoder" in done.stdout


def test_a_checkpoint_that_does_not_fit_leaves_no_run(tmp_path):
    ckpt = checkpoint(step=2)
    ckpt["discriminator"]["linear.linear.weight_orig"] = np.zeros((1, 7), np.float32)
    run = tmp_path / "run"
    with pytest.raises(conv.ConversionError, match="odd.model"):
        conv.convert_checkpoint(ckpt, str(run), what="odd.model")
    assert not run.exists()

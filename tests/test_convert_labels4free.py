"""tools/convert_labels4free.py without torch: the alpha network's mapping, the checks of what a
checkpoint holds, and the run folder it writes (read by tfseg's own loader).

The state dicts are numpy dicts in the authors' layouts (`bg_extractor`, `bg_extractor_repro`, a
rosinality generator from tests/test_convert_stylegan2.py's builder, scaled up to 256 px). The
numbers of their forward passes are checked against their code in tests/test_reference_labels4free.py.
"""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import convert_labels4free as conv  # noqa: E402
from tfseg.modeling.alpha_network import AlphaNetwork, upsample_bicubic  # noqa: E402
from tfseg.modeling.equalized import channels_at  # noqa: E402

RES, BASE, MAXC, W_DIM = 256, 512, 16, 8
BLOCKS = [8, 16, 32, 64, 128, 256]


def _widths(base=BASE, max_channels=MAXC):
    return [channels_at(r, base, max_channels) for r in BLOCKS]


def alpha_sd(repro=False, seed=0, widths=None):
    """A random alpha network in their layout: 12 projections (C -> 3), 4 merges (12 -> 6), head (6 -> 1)."""
    rng = np.random.default_rng(seed)
    widths = widths or _widths()

    def conv1x1(c_in, c_out):
        return rng.standard_normal((c_out, c_in, 1, 1)).astype(np.float32), rng.standard_normal(c_out).astype(np.float32)

    sd = {}
    for j, c in enumerate(widths):
        for branch in (0, 1):
            w, b = conv1x1(c, 3)
            name = f"conv{2 * j + 1 + branch}" if repro else f"conv_fns{branch}.{j}"
            sd[name + ".weight"], sd[name + ".bias"] = w, b
    for k in range(4):
        w, b = conv1x1(12, 6)
        name = ("conv_next", "conv_next2", "conv_next3", "conv_next4")[k] if repro else f"conv_merge_fns.{k}"
        sd[name + ".weight"], sd[name + ".bias"] = w, b
    sd["conv_n.weight"], sd["conv_n.bias"] = conv1x1(6, 1)
    return sd


def generator_sd(resolution=RES, base=BASE, max_channels=MAXC):
    """The keys and shapes of a rosinality generator state dict (values random)."""
    rng = np.random.default_rng(1)
    ch = lambda r: channels_at(r, base, max_channels)  # noqa: E731
    sd = {"style.1.weight": rng.standard_normal((W_DIM, W_DIM)), "style.1.bias": np.zeros(W_DIM),
          "input.input": rng.standard_normal((1, ch(4), 4, 4))}

    def styled(prefix, c_in, c_out, k=3, rgb=False):
        sd[f"{prefix}.conv.weight"] = rng.standard_normal((1, c_out, c_in, k, k))
        sd[f"{prefix}.conv.modulation.weight"] = rng.standard_normal((c_in, W_DIM))
        sd[f"{prefix}.conv.modulation.bias"] = np.ones(c_in)
        if rgb:
            sd[f"{prefix}.bias"] = np.zeros((1, 3, 1, 1))
        else:
            sd[f"{prefix}.noise.weight"] = np.zeros(1)
            sd[f"{prefix}.activate.bias"] = np.zeros(c_out)

    styled("conv1", ch(4), ch(4))
    styled("to_rgb1", ch(4), 3, k=1, rgb=True)
    c_in = ch(4)
    for j, r in enumerate(2**i for i in range(3, int(np.log2(resolution)) + 1)):
        styled(f"convs.{2 * j}", c_in, ch(r))
        styled(f"convs.{2 * j + 1}", ch(r), ch(r))
        styled(f"to_rgbs.{j}", ch(r), 3, k=1, rgb=True)
        c_in = ch(r)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def _features(widths, batch=2, seed=3):
    rng = np.random.default_rng(seed)
    return [tuple(tf.constant(rng.standard_normal((batch, r, r, c)).astype(np.float32)) for _ in range(2))
            for r, c in zip(BLOCKS, widths)]


def _numpy_alpha(sd, features):
    """Their alpha network's computation, in numpy on NHWC features (tfseg's bicubic upsampling)."""
    def conv(name, x):
        w, b = sd[name + ".weight"][:, :, 0, 0], sd[name + ".bias"]
        return np.einsum("bhwi,oi->bhwo", x, w) + b

    def block(j):
        f0, f1 = (np.asarray(f) for f in features[j])
        return np.concatenate([conv(f"conv_fns0.{j}", f0), conv(f"conv_fns1.{j}", f1)], axis=-1)

    running = np.asarray(upsample_bicubic(tf.constant(block(0))))
    for j in range(1, 5):
        merged = conv(f"conv_merge_fns.{j - 1}", np.concatenate([block(j), running], axis=-1))
        running = np.asarray(upsample_bicubic(tf.constant(np.where(merged > 0, merged, 0.2 * merged))))
    return 1.0 / (1.0 + np.exp(-conv("conv_n", block(5) + running)))


def _built_alpha(widths):
    network = AlphaNetwork(6)
    network(_features(widths))
    return network


def test_both_of_their_layouts_map_to_the_same_network_and_compute_their_function():
    widths = _widths()
    features = _features(widths)
    plain, repro = alpha_sd(repro=False), alpha_sd(repro=True)
    out = {}
    for name, sd in (("bg_extractor", plain), ("bg_extractor_repro", repro)):
        network = conv.convert_alpha_network(conv.alpha_state_dict(sd), _built_alpha(widths))
        out[name] = network(features).numpy()
    # The same random draws in the same order: conv{2j+1} is conv_fns0.j, conv{2j+2} conv_fns1.j.
    np.testing.assert_allclose(out["bg_extractor"], out["bg_extractor_repro"], rtol=0, atol=0)
    expected = _numpy_alpha(conv.alpha_state_dict(plain), features)
    np.testing.assert_allclose(out["bg_extractor"], expected, rtol=0, atol=1e-4)   # float32 1x1 convs of N(0, 1) weights


def test_repro_names_are_renamed_one_to_one():
    renamed = conv.alpha_state_dict(alpha_sd(repro=True))
    repro = alpha_sd(repro=True)
    np.testing.assert_array_equal(renamed["conv_fns0.2.weight"], repro["conv5.weight"])
    np.testing.assert_array_equal(renamed["conv_fns1.5.bias"], repro["conv12.bias"])
    np.testing.assert_array_equal(renamed["conv_merge_fns.0.weight"], repro["conv_next.weight"])
    np.testing.assert_array_equal(renamed["conv_merge_fns.3.weight"], repro["conv_next4.weight"])
    assert len(renamed) == 2 * (12 + 4 + 1)


def test_a_generator_given_as_the_alpha_network_says_they_were_swapped():
    with pytest.raises(conv.CheckpointKindError, match="swapped"):
        conv.split_alpha_checkpoint({"g_ema": generator_sd(), "d": {}}, "--alpha=x.pt")
    with pytest.raises(conv.CheckpointKindError, match="swapped"):
        conv.split_generator_checkpoint({"bg_extractor_ema": alpha_sd()}, "--generator=y.pt")


def test_another_methods_checkpoint_is_refused_naming_the_file():
    redo = {"netEncM": {"conv1.weight": np.zeros((4, 3, 3, 3))}, "options": {}}
    with pytest.raises(conv.CheckpointKindError, match="--alpha=redo.pth.*not a Labels4Free"):
        conv.split_alpha_checkpoint(redo, "--alpha=redo.pth")
    with pytest.raises(conv.CheckpointKindError, match="--generator=redo.pth.*no rosinality"):
        conv.split_generator_checkpoint(redo, "--generator=redo.pth")
    with pytest.raises(conv.CheckpointKindError, match="not a Labels4Free alpha network"):
        conv.alpha_state_dict({"encoder.weight": np.zeros(3)}, "bare.pt")


def test_an_alpha_network_of_another_generator_size_is_refused():
    g_config = conv.sg2_convert.generator_config(generator_sd())
    conv.check_alpha_fits_generator(conv.alpha_state_dict(alpha_sd()), g_config)       # fits
    wider = conv.alpha_state_dict(alpha_sd(widths=_widths(base=1024, max_channels=32)))
    with pytest.raises(conv.CheckpointKindError, match="--alpha reads features of widths"):
        conv.check_alpha_fits_generator(wider, g_config)
    small = conv.sg2_convert.generator_config(generator_sd(resolution=32, base=64))
    with pytest.raises(conv.CheckpointKindError, match="32 px"):
        conv.check_alpha_fits_generator(conv.alpha_state_dict(alpha_sd()), small)
    with pytest.raises(conv.CheckpointKindError, match="--size 512"):
        conv.convert({"bg_extractor": alpha_sd(), "args": {"size": 512}}, {"g_ema": generator_sd()}, "unused")


def test_their_args_become_tfseg_settings():
    settings = conv.settings_from_args({"trunc": 0.5, "loss_multiplier": 3, "sat_weight": 0.1, "bg_coverage_wt": 4,
                                        "bg_coverage_value": 0.35, "lr": 0.0008, "d_reg_every": 16, "iter": 900})
    assert settings == {"truncation": 0.5, "mask_loss_weight": 3.0, "adversarial_weight": 0.1,
                        "background_coverage_weight": 4.0, "min_background_coverage": 0.35,
                        "alpha_learning_rate": 0.0008, "r1_interval": 16}


@pytest.mark.slow
def test_the_run_folder_loads_with_tfseg_and_holds_the_converted_alpha_network(tmp_path):
    import gin
    try:
        _check_run_folder(tmp_path)
    finally:
        gin.clear_config()


def _check_run_folder(tmp_path):
    from tfseg.training import loading
    alpha = alpha_sd(repro=True)
    path = conv.convert({"bg_extractor_ema": alpha, "args": {"size": RES, "trunc": 0.6}},
                        {"g_ema": generator_sd(), "latent_avg": np.full(W_DIM, 0.25, np.float32)},
                        str(tmp_path / "run"), batch_size=2)
    assert os.path.basename(path) == "ckpt-0"
    model, config, checkpoint = loading.load_trained(str(tmp_path / "run"))
    assert (config.resolution, model.settings.truncation, model.settings.mbstd_group) == (RES, 0.6, 2)
    assert model.serves_latents and model.settings.alpha_r1_logit_weight == 1.0
    np.testing.assert_allclose(model.generator_ema.w_avg.numpy(), 0.25)
    np.testing.assert_array_equal(model.alpha_network.projections[0][0].kernel.numpy(),
                                  alpha["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.alpha_network.head.bias.numpy(), alpha["conv_n.bias"])
    with pytest.raises(FileExistsError):
        conv.convert({"bg_extractor_ema": alpha}, {"g_ema": generator_sd()}, str(tmp_path / "run"))

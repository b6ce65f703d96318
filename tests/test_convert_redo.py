"""tools/convert_redo.py without torch: the numpy mapping, the run folder it writes, its errors, --help.

The authors' state dicts are written out here as `{name: array}` with the names and shapes their
`models.py` gives (read from the paper's architecture, not imported); tests/test_reference_redo.py
checks the same mapping against their real modules.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_redo as conv  # noqa: E402  pylint: disable=wrong-import-position

OPTIONS = dict(sizex=128, nx=3, nz=3, nMasks=2, nResM=2, nf=4, nfM=8, nfX=2, nfD=4, nfZ=2,
               useSelfAttG=True, useSelfAttD=True, temperature=0.5, batchSize=4)


class _Fake:
    """Builds a state dict with the authors' entry names and PyTorch shapes, random values."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.sd = {}

    def put(self, key, *shape):
        self.sd[key] = self.rng.standard_normal(shape).astype(np.float32)

    def conv(self, key, cin, cout, k, bias=True, spectral=False):
        self.put(key + (".weight_orig" if spectral else ".weight"), cout, cin, k, k)
        if bias:
            self.put(key + ".bias", cout)
        if spectral:
            self.put(key + ".weight_u", cout)
            self.put(key + ".weight_v", cin * k * k)

    def norm(self, key, c):
        self.put(key + ".weight", c)
        self.put(key + ".bias", c)

    def attention(self, key, c):
        nh = max(c // 8, 1)
        for name, cin, cout in (("f", c, nh), ("g", c, nh), ("h", c, c // 2), ("o", c // 2, c)):
            self.conv(f"{key}.{name}", cin, cout, 1, bias=False, spectral=True)
        self.put(key + ".gamma", 1)


def fake_netEncM(nf, n_res, seed=0):
    f = _Fake(seed)
    for index, cin, cout, k in ((1, 3, nf // 4, 7), (4, nf // 4, nf // 2, 3), (7, nf // 2, nf, 3)):
        f.conv(f"cnn.0.mods.{index}", cin, cout, k, bias=False)
        f.norm(f"cnn.0.mods.{index + 1}", cout)
    for i in range(1, n_res + 1):
        f.conv(f"cnn.{i}.blocs.0", nf, nf, 3, bias=False)
        f.norm(f"cnn.{i}.blocs.1", nf)
        f.conv(f"cnn.{i}.blocs.3", nf, nf, 3)
        f.norm(f"cnn.{i}.activationF.0", nf)
    for j in range(4):
        f.conv(f"psp.{j}.1", nf, 1, 1)
    c = nf + 4
    f.conv("out.mods.1", c, c // 2, 3, bias=False)
    f.norm("out.mods.2", c // 2)
    f.conv("out.mods.5", c // 2, c // 4, 3, bias=False)
    f.norm("out.mods.6", c // 4)
    f.conv("out.mods.9", c // 4, 1, 7)
    return f.sd


def fake_netGenX(nf, nz, n_masks=2, self_attention=True, seed=1):
    f = _Fake(seed)
    for k in range(n_masks):
        key = f"net.{k}"
        f.put(key + ".dense.weight", 16 * nf * 16, nz)
        f.put(key + ".dense.bias", 16 * nf * 16)
        prev = nxt = nf * 16
        for i in range(5):
            f.conv(f"{key}.convA.{i}.1", prev + 1, nxt, 3, bias=False, spectral=True)
            f.conv(f"{key}.convB.{i}", nxt, nxt, 3, spectral=True)
            f.conv(f"{key}.sc.{i}.1", prev, nxt, 1, spectral=True)
            for name, c in (("gammaA", prev), ("betaA", prev), ("gammaB", nxt), ("betaB", nxt)):
                f.conv(f"{key}.{name}.{i}", nz, c, 1)
            prev, nxt = nxt, nxt // 2
        if self_attention:
            f.attention(key + ".selfAtt", nf * 2)
        f.conv(key + ".gammaOut", nz, nf, 1)
        f.conv(key + ".betaOut", nz, nf, 1)
        f.conv(key + ".convOut", nf + 1, 3, 3, spectral=True)
    return f.sd


def _fake_trunk(f, prefix, nf):
    first, first_sc = (("bloc0", "sc0") if prefix == "" else (prefix + "blocs.0", prefix + "sc.0"))
    f.conv(first + ".0", 3, nf, 3, spectral=True)
    f.conv(first + ".2", nf, nf, 3, spectral=True)
    f.conv(first_sc + ".1", 3, nf, 1, spectral=True)
    offset = 0 if prefix == "" else 1
    for i in range(4):
        f.conv(f"{prefix}blocs.{i + offset}.1", nf, 2 * nf, 3, spectral=True)
        f.conv(f"{prefix}blocs.{i + offset}.3", 2 * nf, 2 * nf, 3, spectral=True)
        f.conv(f"{prefix}sc.{i + offset}.1", nf, 2 * nf, 1, spectral=True)
        nf *= 2
    f.conv(f"{prefix}blocs.{4 + offset}.1", nf, nf, 3, spectral=True)
    f.conv(f"{prefix}blocs.{4 + offset}.3", nf, nf, 3, spectral=True)
    return nf


def fake_netDX(nf, self_attention=True, seed=2):
    f = _Fake(seed)
    top = _fake_trunk(f, "", nf)
    if self_attention:
        f.attention("selfAtt", nf)
    f.put("dense.weight", 1, top)
    f.put("dense.bias", 1)
    return f.sd


def fake_netRecZ(nf, nz, n_masks=2, seed=3):
    f = _Fake(seed)
    top = _fake_trunk(f, "net.", nf)
    f.put("net.dense.weight", nz * n_masks, top)
    f.put("net.dense.bias", nz * n_masks)
    return f.sd


def fake_checkpoint(options=OPTIONS):
    o = options
    return {"netEncM": fake_netEncM(o["nfM"], o["nResM"]), "netGenX": fake_netGenX(o["nfX"], o["nz"]),
            "netDX": fake_netDX(o["nfD"]), "netRecZ": fake_netRecZ(o["nfZ"], o["nz"])}


@pytest.fixture(scope="module")
def converted_method():
    from tfseg.methods.redo import ReDOSettings
    settings = conv.redo_settings(OPTIONS)
    method = ReDOSettings(resolution=128, seed=0, **settings).build()
    method.build_for_training(2)
    state_dicts = fake_checkpoint()
    weights = conv.convert_state_dicts(state_dicts, settings)
    conv.assign(method, weights)
    return method, state_dicts, weights


def test_every_weight_of_every_network_is_converted_once(converted_method):
    method, _, weights = converted_method
    assigned = [id(conv.resolve(method, path)) for path in weights]
    assert len(assigned) == len(set(assigned))
    networks = [method.mask_network, *method.generators, method.discriminator, method.encoder]
    expected = {id(v) for net in networks for v in net.variables}
    assert set(assigned) == expected


def test_conv_weights_are_transposed_to_hwio_and_z_convs_become_dense(converted_method):
    method, sd, _ = converted_method
    theirs = sd["netEncM"]["cnn.0.mods.1.weight"]                       # [O, I, kh, kw]
    ours = method.mask_network.stem._kernel.numpy()                     # [kh, kw, I, O]
    assert ours[2, 5, 1, 0] == theirs[0, 1, 2, 5]
    gamma = sd["netGenX"]["net.1.gammaA.2.weight"][:, :, 0, 0]          # [C, nz]
    np.testing.assert_array_equal(method.generators[1].blocks[2].norm1.gamma._kernel.numpy(), gamma.T)
    np.testing.assert_array_equal(method.generators[0].attention.gamma.numpy(),
                                  sd["netGenX"]["net.0.selfAtt.gamma"][0])


def test_spectral_norm_gives_the_same_sigma_from_the_converted_u_and_v(converted_method):
    method, sd, _ = converted_method
    layer = method.discriminator.trunk.blocks[2].conv1
    w = sd["netDX"]["blocs.1.1.weight_orig"]
    u, v = sd["netDX"]["blocs.1.1.weight_u"], sd["netDX"]["blocs.1.1.weight_v"]
    theirs = u @ w.reshape(w.shape[0], -1) @ v                          # PyTorch: u^T W v
    matrix = layer._kernel.numpy().reshape(-1, w.shape[0])              # tfseg: [kh kw I, O]
    ours = layer.spectral_u.numpy() @ matrix.T @ layer.spectral_v.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_generator_seed_is_permuted_from_nchw_to_nhwc(converted_method):
    method, sd, _ = converted_method
    z = np.random.default_rng(5).standard_normal((1, OPTIONS["nz"])).astype(np.float32)
    weight, bias = sd["netGenX"]["net.0.dense.weight"], sd["netGenX"]["net.0.dense.bias"]
    theirs = (z @ weight.T + bias).reshape(1, -1, 4, 4).transpose(0, 2, 3, 1)
    seed = method.generators[0].seed
    ours = (z @ seed._kernel.numpy() + seed.bias.numpy()).reshape(1, 4, 4, -1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_options_become_the_redo_settings_and_are_inferred_from_shapes():
    settings = conv.redo_settings(OPTIONS)
    assert (settings["mask_width"], settings["generator_width"], settings["discriminator_width"],
            settings["encoder_width"], settings["z_dim"], settings["mask_temperature"]) == (8, 2, 4, 2, 3, 0.5)
    assert settings["redraw_every_region"] and settings["pytorch_adam_epsilon"] and settings["mask_symmetric_padding"]
    found = conv.options_from_shapes(fake_checkpoint())
    assert found == {"nfM": 8, "nResM": 2, "nMasks": 2, "nz": 3, "nfX": 2, "useSelfAttG": True,
                     "nfD": 4, "useSelfAttD": True, "nfZ": 2}
    assert conv.options_from_shapes({"netEncM": fake_netEncM(16, 3)}) == {"nfM": 16, "nResM": 3, "nMasks": 2}


def test_missing_and_unused_entries_are_refused_naming_them():
    sd = fake_netEncM(8, 2)
    del sd["psp.2.1.bias"]
    with pytest.raises(conv.ConversionError, match=r"netEncM: no entry 'psp.2.1.bias'"):
        conv.mask_network_weights(sd, 2)
    sd = fake_netEncM(8, 3)  # one residual block more than the options say
    with pytest.raises(conv.ConversionError, match=r"netEncM: entries left unused.*cnn\.3\."):
        conv.mask_network_weights(sd, 2)


def test_wrong_kind_or_size_of_checkpoint_is_refused_naming_the_file():
    with pytest.raises(conv.ConversionError, match=r"alpha\.pt: not a ReDO checkpoint.*convert_labels4free"):
        conv.parse_checkpoint({"g_ema": {}, "bg_extractor": {}}, "alpha.pt")
    with pytest.raises(conv.ConversionError, match=r"x\.pth: holds a list"):
        conv.parse_checkpoint([1, 2], "x.pth")
    with pytest.raises(conv.ConversionError, match=r"sizex = 64.*128 px only"):
        conv.check_options({**OPTIONS, "sizex": 64})
    state_dicts, options = conv.parse_checkpoint({"netEncM": fake_netEncM(8, 2), "options": {"nf": 8}}, "m.pth")
    assert list(state_dicts) == ["netEncM"] and options == {"nf": 8}


def test_a_misshapen_weight_is_refused_naming_the_tfseg_variable(converted_method):
    method, _, weights = converted_method
    path = "mask_network/stem/kernel"
    with pytest.raises(conv.ConversionError, match="mask_network/stem/kernel.*has shape"):
        conv.assign(method, {path: np.zeros((7, 7, 3, 5), np.float32)})


def test_mask_only_checkpoint_becomes_a_run_folder_tfseg_loads(tmp_path):
    from tfseg.training import loading
    sd = fake_netEncM(8, 2)
    # nf: the widths of the networks the file lacks (built, initial weights), small here.
    options = {**conv.options_from_shapes({"netEncM": sd}), "nf": 2, "nz": 2, "temperature": 2.0,
               "dataset": "flowers"}
    saved, networks = conv.write_run(str(tmp_path / "run"), {"netEncM": sd}, options)
    assert networks == ["mask_network"] and os.path.basename(os.path.dirname(saved)) == "best"
    text = (tmp_path / "run" / "config.gin").read_text()
    assert "tfseg.methods.redo.mask_temperature = 2.0" in text
    assert "tfseg.data.image_folder_source.mask_format = 'flowers'" in text
    assert '"rule": "conversion"' in (tmp_path / "run" / "foreground.json").read_text()
    model, _, _ = loading.load_trained(str(tmp_path / "run"))
    np.testing.assert_array_equal(model.mask_network.stem._kernel.numpy(),
                                  sd["cnn.0.mods.1.weight"].transpose(2, 3, 1, 0))
    assert model.mask_network.temperature == 2.0 and model.mask_network.symmetric_padding
    with pytest.raises(conv.ConversionError, match="is not empty"):
        conv.write_run(str(tmp_path / "run"), {"netEncM": sd}, options)
    # Weights of another width than the options say: refused, naming the variable; nothing written.
    with pytest.raises(conv.ConversionError, match="mask_network/stem/kernel.*has shape"):
        conv.write_run(str(tmp_path / "wide"), {"netEncM": fake_netEncM(16, 2)}, {**options, "nfM": 8})
    assert not os.path.exists(tmp_path / "wide") and not os.path.exists(tmp_path / "wide.partial")


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_redo.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_help_explains_the_tool():
    result = _cli("--help")
    assert result.returncode == 0
    for word in ("--checkpoint", "--model_dir", "nets_state.pth", "netM_state.pth", "tfseg.export"):
        assert word in result.stdout


def test_cli_names_a_missing_file(tmp_path):
    missing = tmp_path / "nope_nets_state.pth"
    result = _cli(f"--checkpoint={missing}", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert f"{missing}: no such file" in result.stderr


@pytest.mark.slow
def test_cli_refuses_a_labels4free_file_and_a_wrong_size_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch", reason="writing a .pth needs torch (pip install -e '.[reference]')")
    alpha = tmp_path / "alpha.pt"
    torch.save({"bg_extractor": {"w": torch.zeros(2)}, "g_ema": {}}, str(alpha))
    result = _cli(f"--checkpoint={alpha}", f"--model_dir={tmp_path / 'a'}")
    assert result.returncode != 0
    assert f"convert_redo: {alpha}: not a ReDO checkpoint" in result.stderr
    assert "convert_labels4free" in result.stderr
    small = tmp_path / "small_nets_state.pth"
    torch.save({"netEncM": {k: torch.from_numpy(v) for k, v in fake_netEncM(8, 2).items()},
                "options": {"sizex": 64, "nfM": 8, "nResM": 2}}, str(small))
    result = _cli(f"--checkpoint={small}", f"--model_dir={tmp_path / 'b'}")
    assert result.returncode != 0
    assert f"convert_redo: {small}: options.sizex = 64" in result.stderr
    assert not (tmp_path / "b").exists()

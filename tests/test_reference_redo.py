"""tfseg's ReDO against the authors' code (reference folder ReDO/, tests/reference_code.py).

Their code is imported at test time only.

Networks are built by the authors' `models.py` at small widths (their generator, D and encoder
exist at 128 px only, so the images are 128 px; the widths keep each test to seconds), initialised
at random as their `train.py` does (orthogonal, gain 0.8), converted by `tools/convert_redo.py`,
and run beside tfseg's. Spectral norm keeps power-iteration vectors (u, v): the converter copies
them, so an inference forward pass (theirs in eval mode, tfseg's with training=False) divides by the
same sigma, and a training pass performs the same power-iteration step on both sides.

The training iteration is the authors' loop (train.py:296-345) written out here with their
modules, their losses and their optimizers (train.py:196-203); tfseg runs its own `phase_gradients`
/ `apply_phase` in the authors' mode (`tools.convert_redo.redo_settings`: every region redrawn,
separate encoder, symmetric stride-2 padding, PyTorch's Adam epsilon). The only random draw of the
authors' iteration, z (train.py:299), is drawn once and given to both.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from reference_code import authors_modules, relative_error, require_torch, state_dict_numpy

pytestmark = pytest.mark.reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_redo  # noqa: E402  pylint: disable=wrong-import-position

SIZE = 128
BATCH = 2
# The authors' option names (train.py:31-68) at small widths.
OPTIONS = dict(sizex=SIZE, nx=3, nz=4, nMasks=2, nResM=2, nf=4, nfM=8, nfX=2, nfD=4, nfZ=4,
               useSelfAttG=True, useSelfAttD=True, temperature=1.0, lrG=1e-4, lrM=1e-5, lrD=1e-4,
               lrZ=1e-4, wdecay=1e-4, wrecZ=5.0, initOrthoGain=0.8, batchSize=BATCH, dataset="flowers")


def _authors_networks(torch, models, seed=0):
    """netEncM, netGenX, netDX, netRecZ as train.py:186-202 builds and initialises them. Biases,
    instance-norm affines and the self-attention gammas (0 at init) are also drawn at random, so
    that every weight takes part in the comparison."""
    torch.manual_seed(seed)
    o = OPTIONS
    nets = {
        "netEncM": models._netEncM(sizex=o["sizex"], nIn=o["nx"], nMasks=o["nMasks"], nRes=o["nResM"],
                                   nf=o["nfM"], temperature=o["temperature"]),
        "netGenX": models._netGenX(sizex=o["sizex"], nOut=o["nx"], nc=o["nz"], nf=o["nfX"],
                                   nMasks=o["nMasks"], selfAtt=o["useSelfAttG"]),
        "netDX": models._resDiscriminator128(nIn=o["nx"], nf=o["nfD"], selfAtt=o["useSelfAttD"]),
        "netRecZ": models._netRecZ(sizex=o["sizex"], nIn=o["nx"], nc=o["nz"], nf=o["nfZ"], nMasks=o["nMasks"]),
    }
    nn = torch.nn

    def init(module):  # train.py:181-183 (weights_init_ortho)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = module.weight_orig if hasattr(module, "weight_orig") else module.weight
            nn.init.orthogonal_(weight, o["initOrthoGain"])

    with torch.no_grad():
        for net in nets.values():
            net.apply(init)
            for name, p in net.named_parameters():
                if name.endswith("gamma") or (p.dim() == 1 and not name.endswith("weight_orig")):
                    p.copy_(0.2 * torch.randn_like(p) + (1.0 if name.endswith(".weight") else 0.0))
            _converge_power_iterations(torch, net)
    return nets


def _converge_power_iterations(torch, net, steps=50):
    """Runs spectral norm's power iteration to convergence on every (u, v) of `net`, as a trained
    checkpoint has them. With the fresh random u, v, sigma = u^T W v is a random small number and
    the generator's activations reach 1e5, where float32 rounding alone exceeds the tolerance."""
    normalize = torch.nn.functional.normalize
    for module in net.modules():
        if hasattr(module, "weight_u"):
            matrix = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
            u, v = module.weight_u, module.weight_v
            for _ in range(steps):
                v.copy_(normalize(matrix.t() @ u, dim=0, eps=1e-12))
                u.copy_(normalize(matrix @ v, dim=0, eps=1e-12))


def _tfseg_method(weights):
    """tfseg's ReDO in the authors' mode, holding `weights` (convert_redo's output)."""
    from tfseg.methods.redo import ReDOSettings
    settings = convert_redo.redo_settings(OPTIONS)
    method = ReDOSettings(resolution=SIZE, seed=0, **settings).build()
    method.build_for_training(BATCH)
    convert_redo.assign(method, weights)
    return method


def _convert(nets):
    settings = convert_redo.redo_settings(OPTIONS)
    return convert_redo.convert_state_dicts({k: state_dict_numpy(v) for k, v in nets.items()}, settings)


@pytest.fixture(scope="module")
def authors():
    torch = require_torch()
    with authors_modules("ReDO", "models") as (models,):
        yield torch, models


def _nchw(x):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _inputs(seed, batch=BATCH):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)
    z = rng.standard_normal((batch, OPTIONS["nMasks"], OPTIONS["nz"])).astype(np.float32)
    return images, z


def test_forward_of_every_network_matches_the_authors(authors):
    torch, models = authors
    nets = _authors_networks(torch, models)
    method = _tfseg_method(_convert(nets))
    for net in nets.values():
        net.eval()  # spectral norm reads the stored u, v (tfseg: training=False)
    images, z = _inputs(1)
    x = torch.from_numpy(_nchw(images))
    errors = {}
    with torch.no_grad():
        masks = nets["netEncM"](x)                                        # [B, 2, H, W]
        errors["netEncM"] = relative_error(method.mask_network(images).numpy(), _nhwc(masks.numpy()))
        drawn = nets["netGenX"](masks, torch.from_numpy(z)[..., None, None])  # [B, n, 3, H, W]
        masks_tf = _nhwc(masks.numpy())
        ours = np.stack([method.generators[k](masks_tf[..., k:k + 1], z[:, k]).numpy() for k in range(2)], 1)
        errors["netGenX"] = relative_error(ours, np.transpose(drawn.numpy(), (0, 1, 3, 4, 2)))
        errors["netDX"] = relative_error(method.discriminator(images)[0].numpy(), nets["netDX"](x).numpy()[:, 0])
        errors["netRecZ"] = relative_error(method.encoder(images)[1].numpy(), nets["netRecZ"](x).numpy()[..., 0, 0])
    print("forward relative errors:", {k: f"{v:.2e}" for k, v in errors.items()})
    for name, error in errors.items():
        assert error <= 1e-4, f"{name}: rel {error:.2e}"


# -- one training iteration ----------------------------------------------------------------------
def _authors_optimizers(torch, nets):
    # train.py:196-203; betas (0.0, 0.9): torch 2.13 refuses the authors' int 0 beside a float.
    o = OPTIONS
    return {
        "netEncM": torch.optim.Adam(nets["netEncM"].parameters(), lr=o["lrM"], betas=(0.0, 0.9),
                                    weight_decay=o["wdecay"], amsgrad=False),
        "netGenX": torch.optim.Adam(nets["netGenX"].parameters(), lr=o["lrG"], betas=(0.0, 0.9), amsgrad=False),
        "netDX": torch.optim.Adam(nets["netDX"].parameters(), lr=o["lrD"], betas=(0.0, 0.9), amsgrad=False),
        "netRecZ": torch.optim.Adam(nets["netRecZ"].parameters(), lr=o["lrZ"], betas=(0.0, 0.9), amsgrad=False),
    }


def _authors_iteration(torch, nets, optimizers, x_gen, x_real, z):
    """One iteration in the order and with the losses of the authors' loop (train.py:296-345, with
    gStep and dStep true: gStepFreq = dStepFreq = 1), written here in tfseg's words; returns the loss
    terms."""
    mask_net, generators, critic, z_encoder = (nets[k] for k in convert_redo.NETWORKS)
    photos, reals = torch.from_numpy(x_gen), torch.from_numpy(x_real)
    codes = torch.from_numpy(z)[..., None, None]
    for net in nets.values():  # every network in training mode, no gradient left over
        net.zero_grad()
        net.train()

    def redrawn(masks, layers):
        """Every region k of every photo redrawn by G_k; the n composites of a photo follow it."""
        return (layers + (1 - masks[:, :, None]) * photos[:, None]).flatten(0, 1)

    # F, the G_k and the encoder: one loss, one backward pass, then their three Adam steps.
    masks = mask_net(photos)
    layers = generators(masks, codes)
    adversarial = -critic(redrawn(masks, layers)).mean()
    information = torch.mean((codes - z_encoder(layers.sum(dim=1))) ** 2)
    (adversarial + information * OPTIONS["wrecZ"]).backward()
    for name in ("netEncM", "netGenX", "netRecZ"):
        optimizers[name].step()
    # D: the hinge on real photos and on composites redrawn by the updated F and G_k, same codes.
    critic.zero_grad()
    with torch.no_grad():
        masks = mask_net(photos)
        fakes = redrawn(masks, generators(masks, codes))
    real_hinge = torch.clamp(1 - critic(reals), min=0).mean()
    fake_hinge = torch.clamp(1 + critic(fakes), min=0).mean()
    (real_hinge + fake_hinge).backward()
    optimizers["netDX"].step()
    return {"generator_adversarial": adversarial.item(), "information": information.item(),
            "discriminator_real": real_hinge.item(), "discriminator_fake": fake_hinge.item()}


def _tfseg_iteration(method, x_gen, x_real, z):
    """tfseg's two phases, in the trainer's order, with the authors' z injected."""
    import tensorflow as tf
    b, n, nz = z.shape
    codes = tf.constant(np.transpose(z, (1, 0, 2)).reshape(n * b, nz))  # block k: region k
    method._codes = lambda batch, step, stream: codes  # pylint: disable=protected-access
    batches = ({"image": tf.constant(x_gen)}, {"image": tf.constant(x_real)})
    step = tf.constant(0, tf.int64)
    g_metrics, grads = method.phase_gradients("generator", batches, step)
    method.apply_phase("generator", grads)
    d_metrics, grads = method.phase_gradients("discriminator", batches, step)
    method.apply_phase("discriminator", grads)
    real = d_metrics.diagnostics["discriminator/real"].numpy()
    fake = d_metrics.diagnostics["discriminator/fake"].numpy()
    return {"generator_adversarial": float(np.mean(g_metrics.losses["generator_adversarial"])),
            "information": float(np.mean(g_metrics.losses["information"])),
            "discriminator_real": float(np.mean(np.maximum(0, 1 - real))),
            "discriminator_fake": float(np.mean(np.maximum(0, 1 + fake))),
            "discriminator_total": float(np.mean(d_metrics.losses["discriminator"]))}


#: Weights whose gradient is zero in exact arithmetic: the last generator block's output biases,
#: which the output instance norm removes (models.py:192-194). Both sides see rounding noise
#: (~1e-9) as their gradient, and Adam's first steps turn any gradient into about +-lr, so these
#: weights move by noise. They are held to |difference| <= 2 lr per iteration instead.
NOISE_ONLY = re.compile(r"generators/\d+/blocks/4/(conv2|shortcut)/bias$")
#: An element whose gradient is below float32 rounding of its tensor (|g| <= 1e-6 max |g|) has no
#: defined sign, and Adam's first step moves it by lr * sign(g): such elements (a handful per
#: million) are held to |difference| <= 2 lr after one iteration instead of the relative bound.
UNDETERMINED = 1e-6
LEARNING_RATES = {"mask_network": OPTIONS["lrM"], "generators": OPTIONS["lrG"],
                  "discriminator": OPTIONS["lrD"], "encoder": OPTIONS["lrZ"]}


def _authors_gradients(nets):
    """The gradients the authors' last iteration left (.grad), in tfseg's layout."""
    grads = {}
    for name, net in nets.items():
        params = dict(net.named_parameters())
        grads[name] = {k: (params[k].grad.numpy() if k in params else np.zeros_like(v))
                       for k, v in state_dict_numpy(net).items()}
    return convert_redo.convert_state_dicts(grads, convert_redo.redo_settings(OPTIONS))


def _parameter_errors(method, nets, iterations=1):
    """Largest relative error per network over every weight (spectral-norm u, v included), and the
    number of elements held to the undetermined-sign bound (one iteration only)."""
    theirs = _convert(nets)
    grads = _authors_gradients(nets) if iterations == 1 else {}
    worst, undetermined = {}, {}
    for path, expected in theirs.items():
        actual = convert_redo.resolve(method, path).numpy()
        network = path.split("/")[0]
        if NOISE_ONLY.search(path):
            assert np.max(np.abs(actual - expected)) <= 2 * OPTIONS["lrG"] * iterations, path
            continue
        if path in grads and not path.endswith(("spectral_u", "spectral_v")):
            g = np.abs(grads[path])
            loose = (g > 0) & (g <= UNDETERMINED * g.max())
            assert np.all(np.abs(actual - expected)[loose] <= 2.0001 * LEARNING_RATES[network]), path
            counts = undetermined.setdefault(network, [0, 0])
            counts[0] += int(loose.sum())
            counts[1] += loose.size
            actual = np.where(loose, expected, actual)
        error = relative_error(actual, expected)
        if error > worst.get(network, (0, ""))[0]:
            worst[network] = (error, path)
    return worst, undetermined


def _train_both(authors, iterations):
    torch, models = authors
    nets = _authors_networks(torch, models, seed=2)
    method = _tfseg_method(_convert(nets))
    optimizers = _authors_optimizers(torch, nets)
    loss_errors = {}
    for i in range(iterations):
        x_gen, z = _inputs(100 + i)
        x_real, _ = _inputs(200 + i)
        ours = _tfseg_iteration(method, x_gen, x_real, z)
        theirs = _authors_iteration(torch, nets, optimizers, _nchw(x_gen), _nchw(x_real), z)
        ours_d = ours.pop("discriminator_total")
        assert abs(ours_d - (theirs["discriminator_real"] + theirs["discriminator_fake"])) <= \
            1e-4 * max(1.0, abs(ours_d))
        for name, value in theirs.items():
            loss_errors[name] = max(loss_errors.get(name, 0.0), abs(ours[name] - value) / max(abs(value), 1e-12))
    return loss_errors, _parameter_errors(method, nets, iterations)


@pytest.mark.slow
def test_one_training_iteration_matches_the_authors(authors):
    loss_errors, (parameter_errors, undetermined) = _train_both(authors, 1)
    print("one iteration: elements with a gradient below rounding (sign undetermined), of all:", undetermined)
    print("one iteration, loss rel errors:", {k: f"{v:.2e}" for k, v in loss_errors.items()})
    print("one iteration, parameter rel errors:", {k: f"{v[0]:.2e} ({v[1]})" for k, v in parameter_errors.items()})
    for name, error in loss_errors.items():
        assert error <= 1e-4, f"loss {name}: rel {error:.2e}"
    for network, (error, path) in parameter_errors.items():
        assert error <= 1e-3, f"{path}: rel {error:.2e}"


@pytest.mark.slow  # about a minute: ten iterations of both at 128 px (5 s each on a 2-core CPU)
def test_ten_training_iterations_stay_with_the_authors(authors):
    loss_errors, (parameter_errors, _) = _train_both(authors, 10)
    print("ten iterations, loss rel errors:", {k: f"{v:.2e}" for k, v in loss_errors.items()})
    print("ten iterations, parameter rel errors:", {k: f"{v[0]:.2e} ({v[1]})" for k, v in parameter_errors.items()})
    for network, (error, path) in parameter_errors.items():
        assert error <= 1e-2, f"{path}: rel {error:.2e}"


# -- end to end: the authors' checkpoint -> convert -> export -> predict ------------------------------
def _run(args, cwd):
    result = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_authors_checkpoint_served_by_tfseg_gives_their_masks(authors, tmp_path):
    import argparse
    import tensorflow as tf
    from PIL import Image
    torch, models = authors
    nets = _authors_networks(torch, models, seed=3)
    optimizers = _authors_optimizers(torch, nets)
    # The dict train.py:410-421 saves (and the released *_nets_state.pth holds).
    state = {name: net.state_dict() for name, net in nets.items()}
    state.update({"optimizer" + name[3:]: opt.state_dict() for name, opt in optimizers.items()})
    state["options"] = argparse.Namespace(**OPTIONS)
    checkpoint = tmp_path / "flowers_nets_state.pth"
    torch.save(state, str(checkpoint))

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(image_dir / f"photo_{i}.png")
    run, serving, out = tmp_path / "run", tmp_path / "serving", tmp_path / "masks"
    _run([os.path.join(REPO, "tools", "convert_redo.py"), f"--checkpoint={checkpoint}", f"--model_dir={run}"], REPO)
    _run(["-m", "tfseg.export", f"--model_dir={run}", f"--export_dir={serving}"], REPO)
    _run(["-m", "tfseg.predict", f"--export_dir={serving / '1'}", f"--images={image_dir}", f"--out={out}"], REPO)

    nets["netEncM"].eval()
    with torch.no_grad():
        x = torch.from_numpy(_nchw(images.astype(np.float32) / 127.5 - 1.0))
        theirs = nets["netEncM"](x).numpy()[:, 0]                     # mPred[:, 0], before the threshold
    served = tf.saved_model.load(str(serving / "1")).signatures["serve_image_tensor"](images=tf.constant(images))
    ours = served["mask"].numpy()[..., 0]
    error = relative_error(ours, theirs)
    written = np.stack([np.asarray(Image.open(out / f"photo_{i}_mask.png"))[..., 0] if np.asarray(
        Image.open(out / f"photo_{i}_mask.png")).ndim == 3 else np.asarray(Image.open(out / f"photo_{i}_mask.png"))
        for i in range(len(images))])
    agreement = float(np.mean((written >= 128) == (theirs >= 0.5)))
    print(f"end to end: SavedModel mask rel {error:.2e}; predict's written masks agree on {100 * agreement:.3f} % "
          f"of pixels after the threshold")
    assert error <= 1e-4
    assert agreement >= 0.999

    # tfseg.evaluate on the converted run, over labelled data (the embedded procedural set), scores
    # what the authors' netEncM scores on the same images.
    bindings = ["tfseg.data.make_dataset.source = @tfseg.data.procedural_source",
                "tfseg.data.procedural_source.test_size = 40"]
    _run(["-m", "tfseg.evaluate", f"--model_dir={run}", "--split=test"]
         + [f"--gin_bindings={b}" for b in bindings], REPO)
    with open(run / "eval_test.json") as f:
        evaluated = json.load(f)
    from tfseg import config, registry
    from tfseg.data import pipeline
    from tfseg.evaluation.metrics import MaskMetrics
    registry.import_configurables()
    config.load_run_config(str(run), bindings)
    scores = MaskMetrics()
    for batch in pipeline.make_dataset("test", 20, resolution=SIZE):
        with torch.no_grad():
            masks = nets["netEncM"](torch.from_numpy(_nchw(batch["image"].numpy()))).numpy()
        scores.update(_nhwc(masks[:, :1]), batch["mask"].numpy())
    theirs = scores.result()
    print("end to end: tfseg.evaluate fg IoU {:.5f} / redo IoU {:.5f}; the authors' netEncM {:.5f} / {:.5f}".format(
        evaluated["fg_iou"], evaluated["redo_iou"], theirs["fg_iou"], theirs["redo_iou"]))
    assert evaluated["num_images"] == 40
    assert abs(evaluated["fg_iou"] - theirs["fg_iou"]) <= 1e-3
    assert abs(evaluated["redo_iou"] - theirs["redo_iou"]) <= 1e-3

"""Export for TF Serving, local prediction and the REST client, tested the way TF Serving uses them.

The TF Serving binary cannot be installed here, so `saved_model_cli` checks the signatures and
`tests/tf_serving_fixture.py` decodes the REST bodies as TF Serving does and serves the SavedModel on
127.0.0.1. One tiny run (the demo config in smoke mode, R = 16) is made and exported once per test session.
"""
import base64
import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from tfseg import config, export, predict, registry
from tfseg.data import augment, procedural
from tfseg.evaluation import evaluator, metrics, split_evaluation
from tfseg.serving import export_module, inference
from tfseg.training import loading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import methods as methods_under_test  # noqa: E402  tests/methods.py: the one list of methods
import run_fixture  # noqa: E402  pylint: disable=wrong-import-position
import tf_serving_fixture  # noqa: E402  pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One worker runs this module (pytest.ini: --dist loadgroup) and its run is a session fixture, so it is
# made once even when that worker runs other modules' tests in between (a module fixture was made twice).
pytestmark = pytest.mark.xdist_group("serving_run")
registry.import_configurables()  # these tests parse configs, as the entry points do
SIZES = [(16, 16), (40, 24), (23, 57)]


def _load_client():
    spec = importlib.util.spec_from_file_location("serving_client", os.path.join(REPO, "tools", "serving_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serving_client = _load_client()


def _run_entry(module, *args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS([module.__name__, *args])
    return module.main([])


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run"))
    run_fixture.write_untrained_run(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def exported(run_dir, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serving") / "tfseg")
    path, _, _ = export_module.export_run(run_dir, base)
    return path


@pytest.fixture(scope="session")
def loaded(exported):
    return tf.saved_model.load(exported)


@pytest.fixture(scope="session")
def model(run_dir):
    model, _, _ = loading.load_trained(run_dir)
    return model


def _random_image(h, w, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    image[h // 4:h // 2, w // 3:w // 2] = 255  # some structure besides noise
    return image


def _encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def _in_process_masks(model, files, resolution=16, image_resize_method="nearest", square_resize=False):
    """model.segment after the evaluation pre-processing of each decoded file."""
    views = [augment.preprocess({"image": tf.io.decode_image(data, channels=3, expand_animations=False)},
                                resolution, training=False, image_resize_method=image_resize_method,
                                square_resize=square_resize)["image"]
             for data in files]
    return model.segment(tf.stack(views)).numpy()


# -- the SavedModel ---------------------------------------------------------------------------------


def test_saved_model_cli_lists_both_signatures_as_predict_methods(exported):
    out = subprocess.run(["saved_model_cli", "show", "--all", "--dir", exported], capture_output=True, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    blocks = {name: out.split(f"signature_def['{name}']")[1].split("signature_def[")[0]
              for name in ("serving_default", "serve_image_tensor")}
    for block in blocks.values():
        assert "Method name is: tensorflow/serving/predict" in block
        for output in ("mask", "mask_png_bytes", "foreground_fraction"):
            assert f"outputs['{output}']" in block
    assert "inputs['image_bytes']" in blocks["serving_default"] and "DT_STRING" in blocks["serving_default"]
    assert "inputs['images']" in blocks["serve_image_tensor"] and "DT_UINT8" in blocks["serve_image_tensor"]
    assert "shape: (-1, 16, 16, 1)" in blocks["serving_default"]


def test_export_records_the_config_and_the_method_in_assets(exported, run_dir):
    assets = os.path.join(exported, "assets")
    with open(os.path.join(assets, "config.gin")) as a, open(os.path.join(run_dir, "config.gin")) as b:
        assert a.read() == b.read()
    meta = export_module.read_metadata(exported)
    assert meta["method"] == "ReDO" and meta["method_factory"] == "@tfseg.methods.redo"
    assert meta["resolution"] == 16 and meta["image_resize_method"] == "nearest"
    assert meta["foreground_region"] == 1 and meta["checkpoint"].endswith("ckpt-2")


@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_client_json_decoded_like_tf_serving_gives_the_in_process_masks(fmt, loaded, model):
    files = [_encode(_random_image(h, w, i), "PNG") for i, (h, w) in enumerate(SIZES)]
    files.append(_encode(_random_image(31, 20, 9), "JPEG"))
    body = json.loads(json.dumps(serving_client.build_request(files, fmt=fmt)))  # exactly what goes on the wire
    if fmt == "row":
        assert body == {"instances": [{"b64": base64.b64encode(f).decode()} for f in files]}
    name, inputs, row = tf_serving_fixture.decode_request(body, loaded.signatures)
    assert (name, row) == ("serving_default", fmt == "row")
    out = loaded.signatures[name](**inputs)

    expected = _in_process_masks(model, files)
    assert out["mask"].shape == (len(files), 16, 16, 1)
    np.testing.assert_allclose(out["mask"].numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["foreground_fraction"].numpy(), (expected >= 0.5).mean(axis=(1, 2, 3)))
    for png, (h, w) in zip(out["mask_png_bytes"].numpy(), SIZES + [(31, 20)]):
        assert tf.io.decode_png(png).shape == (h, w, 1)

    # ... and the JSON answer carries the PNGs base64-encoded, which the client decodes.
    answer = json.loads(json.dumps(tf_serving_fixture.encode_response(out, row)))
    rows = serving_client.parse_response(answer, len(files))
    assert [r["mask_png_bytes"] for r in rows] == list(out["mask_png_bytes"].numpy())


def test_tensor_signature_gives_the_in_process_masks(loaded, model):
    images = np.stack([_random_image(40, 24, seed) for seed in range(3)])
    out = loaded.signatures["serve_image_tensor"](images=tf.constant(images))
    expected = _in_process_masks(model, [_encode(image, "PNG") for image in images])
    np.testing.assert_allclose(out["mask"].numpy(), expected, atol=1e-5, rtol=0)
    assert [tf.io.decode_png(p).shape for p in out["mask_png_bytes"].numpy()] == [(40, 24, 1)] * 3


@pytest.mark.slow
@pytest.mark.parametrize("gin_name", [m.demo_config for m in methods_under_test.METHODS if m.name != "redo"])
def test_the_other_methods_export_serve_and_predict_their_in_process_masks(gin_name, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    run_fixture.write_untrained_run(model_dir, gin_name)
    path, _, meta = export_module.export_run(model_dir, str(tmp_path / "serving"))
    model, train_config, _ = loading.load_trained(model_dir)
    assert meta["method"] == type(model).__name__ != "ReDO"
    loaded = tf.saved_model.load(path)
    files = [_encode(_random_image(h, w, i), "PNG") for i, (h, w) in enumerate(SIZES)]
    out = loaded.signatures[export_module.SIGNATURE_BYTES](**{export_module.INPUT_BYTES: tf.constant(files)})
    serving = export_module.serving_functions_from_run(model, train_config)  # the run's pre-processing
    expected = _in_process_masks(model, files, train_config.resolution, serving.image_resize_method,
                                 serving.square_resize)
    np.testing.assert_allclose(out["mask"].numpy(), expected, atol=1e-5, rtol=0)
    images = _image_folder(str(tmp_path / "images"))
    assert _run_entry(predict, f"--export_dir={path}", f"--images={images}", f"--out={tmp_path / 'masks'}") == 0
    for i, (h, w) in enumerate(SIZES):
        assert Image.open(tmp_path / "masks" / f"img{i}_mask.png").size == (w, h)


def test_mask_png_puts_the_crop_back_where_it_was_taken():
    # A 40 x 24 image: shorter side 24 -> 16, so the resized image is 27 x 16 and the crop starts at row 5.
    mask = tf.ones([16, 16, 1])
    back = export_module.mask_to_original_size(mask, 40, 24, 16).numpy()[..., 0]
    assert back.shape == (40, 24)
    rows = back.mean(axis=1)
    assert rows[0] == 0.0 and rows[-1] == 0.0  # outside the crop: background
    assert np.all(rows[9:30] == 1.0)  # inside: the mask (rows 7.4 to 31.1 of the original)
    assert 0.0 < rows[7] < 1.0 and 0.0 < rows[31] < 1.0
    square = export_module.mask_to_original_size(mask, 40, 24, 16, square_resize=True).numpy()
    assert np.all(square == 1.0)


GOOD = _encode(_random_image(20, 20, 1), "PNG")
_JPEG = _encode(_random_image(20, 20, 2), "JPEG")


@pytest.mark.parametrize("data, problem", [
    (b"", "image_bytes[1] is empty"),
    (b"just some text, no image", "image_bytes[1] is not a JPEG or PNG image"),
    (GOOD[:len(GOOD) // 2], "image_bytes[1] is a truncated PNG"),
    (_JPEG[:len(_JPEG) // 2], "JPEG data"),
    (base64.b64encode(GOOD), "image_bytes[1] is base64 text of an image"),
], ids=["empty", "text", "truncated-png", "truncated-jpeg", "base64-twice"])
def test_bad_bytes_fail_with_invalid_argument_naming_the_problem(data, problem, loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        loaded.signatures["serving_default"](image_bytes=tf.constant([GOOD, data]))
    # The process is fine and the next good request is served.
    assert loaded.signatures["serving_default"](image_bytes=tf.constant([GOOD]))["mask"].shape[0] == 1


def test_images_over_the_pixel_limit_are_refused_before_decoding(model):
    serving = export_module.ServingFunctions(model, 16, max_pixels=300)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\] has 20 x 20 pixels"):
        serving.from_bytes(tf.constant([GOOD]))


# -- the REST client against the stand-in server ----------------------------------------------------


def _image_folder(root, bad=()):
    os.makedirs(root, exist_ok=True)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(_random_image(h, w, i)).save(os.path.join(root, f"img{i}.png"))
    for name in bad:
        with open(os.path.join(root, name), "wb") as f:
            f.write(GOOD[:40])  # cut off: the server refuses it
    return root


def test_client_writes_masks_and_reports_a_bad_image_then_carries_on(exported, tmp_path):
    images = _image_folder(str(tmp_path / "images"), bad=["img1_cut.png"])
    with tf_serving_fixture.serving({"tfseg": {1: exported}}) as server:
        client = serving_client.ServingClient(server.url, "tfseg", timeout=20, retries=0)
        log = io.StringIO()
        summary = serving_client.segment_folder(client, images, str(tmp_path / "out"), batch_size=4, stream=log)
    assert sorted(summary["written"]) == ["img0.png", "img1.png", "img2.png"]
    assert list(summary["errors"]) == ["img1_cut.png"]
    assert "truncated PNG" in summary["errors"]["img1_cut.png"]
    assert "img1_cut.png" in log.getvalue()
    for i, (h, w) in enumerate(SIZES):
        assert Image.open(tmp_path / "out" / f"img{i}_mask.png").size == (w, h)
    # The batch of four failed as a whole, then each image was sent alone.
    assert [len(r["instances"]) for r in server.requests] == [4, 1, 1, 1, 1]


def test_client_retries_a_busy_server_and_gives_up_on_a_dead_one(exported):
    with tf_serving_fixture.serving({"tfseg": {1: exported}}) as server:
        server.fail_next = [503, 503]
        client = serving_client.ServingClient(server.url, "tfseg", fmt="columnar", retries=2, backoff=0.01)
        rows = client.predict([GOOD])
        assert tf.io.decode_png(rows[0]["mask_png_bytes"]).shape == (20, 20, 1)
        with pytest.raises(serving_client.ServerError, match="Servable not found"):
            serving_client.ServingClient(server.url, "nope", retries=0).predict([GOOD])
        url = server.url
    dead = serving_client.ServingClient(url, "tfseg", timeout=2, retries=1, backoff=0.01)
    with pytest.raises(serving_client.Unreachable, match="2 attempts"):
        dead.predict([GOOD])


# -- the entry points -------------------------------------------------------------------------------


def test_export_refuses_a_run_without_checkpoint(tmp_path, capsys):
    config.parse([os.path.join(REPO, "gin_configs", "demo.gin"), config.SMOKE_CONFIG])
    config.save_config(str(tmp_path))
    code = _run_entry(export, f"--model_dir={tmp_path}", f"--export_dir={tmp_path}/serving")
    assert code == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "tfseg.train" in err
    assert not os.path.exists(tmp_path / "serving" / "1")


def test_versions_are_numbered_one_then_two_and_never_overwritten(exported, run_dir, capsys):
    base = os.path.dirname(exported)
    assert os.path.basename(exported) == "1"
    assert _run_entry(export, f"--model_dir={run_dir}", f"--export_dir={base}") == 0
    assert tf.saved_model.contains_saved_model(os.path.join(base, "2"))
    assert _run_entry(export, f"--model_dir={run_dir}", f"--export_dir={base}", "--version=1") == 2
    assert "exists already" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary folder left behind


def test_predict_writes_mask_cutout_overlay_and_sheet_and_skips_unreadable_files(exported, tmp_path, capsys):
    images = _image_folder(str(tmp_path / "images"), bad=["broken.png"])
    with open(tmp_path / "images" / "notes.jpg", "w") as f:
        f.write("not an image")
    out = tmp_path / "out"
    assert _run_entry(predict, f"--export_dir={exported}", f"--images={images}", f"--out={out}",
                      "--batch_size=2") == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.png" in captured.err and "notes.jpg" in captured.err
    assert "3/5 images" in captured.err or "5/5 images" in captured.err  # the progress bar
    for i, (h, w) in enumerate(SIZES):
        assert Image.open(out / f"img{i}_mask.png").size == (w, h)
        cutout = Image.open(out / f"img{i}_cutout.png")
        assert cutout.mode == "RGBA" and cutout.size == (w, h)
        assert Image.open(out / f"img{i}_overlay.png").size == (w, h)
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    header = 14  # the titles' band above len(SIZES) rows of 96 px cells
    assert sheet.shape == (header + len(SIZES) * (96 + 2) + 2, 4 * (96 + 2) + 2, 3)
    assert (sheet[:header] < 128).any()  # the column titles are written
    with open(out / "predictions.json") as f:
        summary = json.load(f)
    assert sorted(summary["skipped"]) == ["broken.png", "notes.jpg"]
    assert "truncated PNG" in summary["skipped"]["broken.png"]
    assert not os.path.exists(out / "broken_mask.png")


def test_predict_masks_score_the_same_fg_iou_as_the_evaluation(exported, run_dir, tmp_path):
    # PNGs of the embedded data set's test split, the same images tfseg.evaluate scores.
    names = procedural.write_png_folder(str(tmp_path / "data"), "test", 12, 16)
    segment, _ = inference.load_exported(exported)
    summary = inference.predict_folder(segment, str(tmp_path / "data" / "images"), str(tmp_path / "out"),
                                       batch_size=5, stream=io.StringIO())
    assert len(summary["written"]) == len(names)
    pred = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{n}_mask.png")) for n in names])[..., None]
    truth = np.stack([np.asarray(Image.open(tmp_path / "data" / "masks" / f"{n}.png")) for n in names])[..., None]
    served = metrics.MaskMetrics()
    served.update(pred / 255.0, truth > 127)

    model, cfg, _ = loading.load_trained(run_dir, extra_bindings=[
        "tfseg.data.make_dataset.source = @tfseg.data.procedural_source"])
    evaluated, _ = evaluator.evaluate(model, split_evaluation.eval_dataset(cfg, "test"),
                                      max_examples=len(names))
    assert evaluated["num_images"] == len(names)
    assert abs(served.result()["fg_iou"] - evaluated["fg_iou"]) <= 0.01


def test_predict_from_a_run_directory_matches_the_export(exported, run_dir, tmp_path):
    images = _image_folder(str(tmp_path / "images"))
    from_export, meta = inference.load_exported(os.path.dirname(exported))  # the latest version
    assert os.path.basename(meta["version_dir"]).isdigit()
    from_run, meta = inference.load_from_run(run_dir)
    assert meta["method"] == "ReDO"
    files = [inference.read_image_bytes(os.path.join(images, f)) for f in sorted(os.listdir(images))]
    a, b = from_export(files), from_run(files)
    np.testing.assert_allclose(a["mask"], b["mask"], atol=1e-5, rtol=0)
    assert list(a["mask_png_bytes"]) == list(b["mask_png_bytes"])


def test_predict_from_a_run_applies_gin_bindings_over_its_config(run_dir, tmp_path, capsys):
    images = _image_folder(str(tmp_path / "images"))
    # A binding that changes the networks' layout reaches the rebuild: the checkpoint no longer fits.
    assert _run_entry(predict, f"--model_dir={run_dir}", f"--images={images}", f"--out={tmp_path / 'a'}",
                      "--gin_bindings=tfseg.methods.redo.spectral_norm='keras'") == 2
    err = capsys.readouterr().err
    assert "does not fit the networks this config builds" in err and "Traceback" not in err
    assert _run_entry(predict, f"--model_dir={run_dir}", f"--images={images}", f"--out={tmp_path / 'b'}",
                      "--gin_bindings=tfseg.methods.redo.spectral_norm='reference'") == 0
    assert os.path.exists(tmp_path / "b" / "predictions.json")
    assert _run_entry(predict, f"--export_dir={tmp_path}", f"--images={images}", f"--out={tmp_path / 'c'}",
                      "--gin_bindings=tfseg.methods.redo.z_dim=3") == 2
    assert "an export carries its own" in capsys.readouterr().err


def test_benchmark_reports_images_per_second_of_both_signatures(exported):
    from tfseg.serving import benchmark  # pylint: disable=import-outside-toplevel
    rates = benchmark.savedmodel_rates(os.path.dirname(exported), 16, batch_sizes=(1, 4), repeats=1,
                                       min_seconds=0.01)
    assert sorted(rates) == ["savedmodel_bytes_b1", "savedmodel_bytes_b4", "savedmodel_tensor_b1",
                             "savedmodel_tensor_b4"]
    assert all(rate > 0 for rate in rates.values())


def test_client_and_predict_keep_outputs_of_same_named_files_apart():
    files = ["a.jpg", "a.png", "b.png", "sub/a.jpg"]
    assert serving_client.output_stems(files) == ["a_jpg", "a_png", "b", "sub/a"]
    assert inference.output_names(files) == ["a_jpg", "a_png", "b", "sub/a"]


def test_client_lists_photos_as_predict_and_the_folder_source_do():
    from tfseg import image_files  # pylint: disable=import-outside-toplevel
    assert serving_client.list_images is image_files.list_images


def test_error_text_of_an_in_process_graph_error_is_the_decoder_message_not_the_stack():
    message = ("Graph execution error:\n\nDetected at node DecodeImage defined at (most recent call last):\n"
               '  File "<frozen runpy>", line 198, in _run_module_as_main\n\n  File "x.py", line 3, in f\n\n'
               "Invalid JPEG data or crop window.\n\t [[{{node DecodeImage}}]] [Op:__inference_fn_123]")
    assert inference.error_text(tf.errors.InvalidArgumentError(None, None, message)) == \
        "Invalid JPEG data or crop window."


def test_a_photo_over_the_pixel_limit_is_read_at_reduced_scale_and_reported(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 5000), (30, 120, 60)).save(big, quality=80)
    reduced = {}
    data = inference.read_image_bytes(str(big), reduced=reduced)
    shrunk = Image.open(io.BytesIO(data))
    assert shrunk.size == (4096, 2560) and shrunk.size[0] * shrunk.size[1] <= export_module.MAX_PIXELS
    assert "shrunk to 4096 x 2560 px" in reduced[str(big)]
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    assert inference.read_image_bytes(str(small)) == small.read_bytes()  # sent as it is
    data = inference.read_image_bytes(str(small), max_pixels=300, reduced=reduced)
    assert Image.open(io.BytesIO(data)).size == (20, 15)


def test_a_model_with_non_finite_weights_is_never_exported(run_dir, tmp_path):
    model, train_config, _ = loading.load_trained(run_dir)
    variable = model.mask_network.trainable_variables[0]
    variable.assign(tf.fill(variable.shape, float("nan")))
    serving = export_module.serving_functions_from_run(model, train_config)
    with pytest.raises(ValueError, match="non-finite weights"):
        export_module.export(serving, str(tmp_path / "serving"))
    assert not os.path.exists(tmp_path / "serving" / "1")


# -- masks of latent codes (a model that draws its own images) --------------------------------------


def test_predict_latents_is_refused_for_an_export_that_segments_photos_only(exported, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.zeros((2, 4), np.float32))
    assert _run_entry(predict, f"--export_dir={exported}", f"--latents={tmp_path / 'z.npy'}",
                      f"--out={tmp_path / 'out'}") == 2
    err = capsys.readouterr().err
    assert "has no 'serve_latent' signature" in err and "--images" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_latents_writes_the_drawn_images_their_masks_and_the_soft_masks(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_fixture.write_untrained_run(str(run_dir), "demo_labels4free.gin",
                                    bindings=["tfseg.methods.labels4free.export_latent_signature = True"])
    version, _, _ = export_module.export_run(str(run_dir), str(tmp_path / "serving"))
    served = tf.saved_model.load(version).signatures[export_module.SIGNATURE_LATENT]
    z_dim = served.structured_input_signature[1][export_module.INPUT_LATENT].shape[-1]
    z = np.random.default_rng(0).standard_normal((3, z_dim)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "out"
    assert _run_entry(predict, f"--export_dir={version}", f"--latents={tmp_path / 'z.npy'}", f"--out={out}",
                      "--batch_size=2") == 0
    assert "latent codes" in capsys.readouterr().out
    expected = served(z=tf.constant(z))["mask"].numpy()[..., 0]
    np.testing.assert_allclose(np.load(out / "masks.npy"), expected, rtol=1e-6, atol=1e-6)
    for i in range(3):
        mask = np.asarray(Image.open(out / f"{i}_mask.png"))
        np.testing.assert_array_equal(mask, np.where(expected[i] >= 0.5, 255, 0))
        assert Image.open(out / f"{i}_image.png").size == mask.shape[::-1]
        assert (out / f"{i}_overlay.png").exists()
    # A code of another size is refused, naming the shape the model takes.
    np.save(tmp_path / "bad.npy", np.zeros((2, z_dim + 1), np.float32))
    assert _run_entry(predict, f"--export_dir={version}", f"--latents={tmp_path / 'bad.npy'}",
                      f"--out={tmp_path / 'bad'}") == 2
    assert f"the model takes finite codes of shape [n, {z_dim}]" in capsys.readouterr().err

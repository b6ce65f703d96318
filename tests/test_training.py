"""The trainer end to end at tiny sizes: every shipped config, resume, restart, bad input."""
import gc
import glob
import json
import os
import re
import subprocess
import sys
import weakref

import gin
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfseg import config, registry, train
# After train, as a test worker may import them: export's --gin_bindings must not orphan train's
# --gin_param alias (test_unknown_configurable_fails_with_a_suggestion then trained the whole demo).
from tfseg import export  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-order
from tfseg.evaluation import curves, evaluator
from tfseg.training import checkpointing, duties, loading, run_dir, schedule, signals, train_config, trainer

import methods as methods_under_test  # tests/methods.py: the one list of methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
registry.import_configurables()  # these tests parse configs, as the entry points do
SHIPPED = sorted(p for p in glob.glob(os.path.join(REPO, "gin_configs", "*.gin"))
                 if os.path.basename(p) not in ("smoke.gin",) and not p.endswith("_base.gin"))


def run_module(module, *args):
    """Runs `python -m module args` in a subprocess (entry points define clashing absl flags)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def run_train(*args):
    """Runs `python -m tfseg.train` in-process; returns its exit code."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["tfseg.train", *args])
    return train.main([])


#: One config per method trains for real (two smoke steps per stage); every config resolves. The ReDO
#: demo trains in `test_a_finished_run_reruns_without_training_and_evaluate_rescores_it`, the PerturbGAN
#: demo in test_perturbgan's resume across stages (tests/methods.py: DEMO_TRAINED_ELSEWHERE).
TRAINED = [os.path.join(REPO, "gin_configs", name)
           for name in methods_under_test.demo_configs_trained_by_test_training()]


def _assert_trained_two_steps_per_stage_and_scored_test(model_dir, out):
    total = 2 * len(schedule.stage_schedule(loading.build_method(train_config.TrainConfig()),
                                           train_config.TrainConfig()))  # ReDO has one stage, PerturbGAN three
    assert f"step {total}/{total}" in out
    assert checkpointing.latest_checkpoint(model_dir, "latest").endswith(f"ckpt-{total}")
    with open(os.path.join(model_dir, "eval_test.json")) as f:
        results = json.load(f)
    assert results["num_images"] == 8 and "test split, checkpoint" in out
    with open(os.path.join(model_dir, "config.gin")) as f:
        bound = f.read()
    with open(os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE)) as f:
        operative = f.read()
    # A default nobody bound is in the operative record only; a bound value is in both.
    assert "TrainConfig.keep_checkpoints = 3" in operative and "keep_checkpoints" not in bound
    assert "TrainConfig.batch_size = " in operative and "TrainConfig.batch_size = " in bound
    assert os.path.exists(os.path.join(model_dir, "eval_test.png"))
    return results


@pytest.mark.parametrize("gin_file", SHIPPED, ids=os.path.basename)
def test_every_shipped_config_resolves_and_builds_its_networks(gin_file, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    assert run_train(f"--gin_file={gin_file}", "--smoke", "--dry_run", f"--model_dir={model_dir}") == 0
    out = capsys.readouterr().out
    assert "# dry run: config resolved, data found; not training." in out
    cfg = train_config.TrainConfig()
    stages = [stage.name for stage, _, _ in schedule.stage_schedule(loading.build_method(cfg), cfg)]
    listed = re.findall(r"^#   (\S+): steps \d+-\d+, (?:batch \d+|\d+ images a step \(\d+ batches of \d+\))", out, re.M)
    assert listed == stages
    model = loading.build_method(cfg)
    model.build_for_training(cfg.batch_size)  # every variable, at the smoke sizes the config resolves to
    masks = model.region_masks(tf.zeros([2, cfg.resolution, cfg.resolution, 3]))
    assert masks.shape[:3] == (2, cfg.resolution, cfg.resolution)
    assert not os.path.exists(model_dir)  # a dry run writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("gin_file", TRAINED, ids=os.path.basename)
def test_one_config_per_method_trains_two_steps_per_stage_and_scores_test(gin_file, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    assert run_train(f"--gin_file={gin_file}", "--smoke", f"--model_dir={model_dir}") == 0
    _assert_trained_two_steps_per_stage_and_scored_test(model_dir, capsys.readouterr().out)


def _smoke_config(tmp_path, *bindings):
    config.parse([os.path.join(REPO, "gin_configs", "demo.gin"), config.SMOKE_CONFIG], bindings)
    return train_config.TrainConfig()


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


@pytest.mark.slow
def test_a_finished_run_reruns_without_training_and_evaluate_rescores_it(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    args = [f"--gin_file={REPO}/gin_configs/demo.gin", "--smoke", f"--model_dir={model_dir}"]
    assert run_train(*args) == 0
    trained = _assert_trained_two_steps_per_stage_and_scored_test(model_dir, capsys.readouterr().out)
    assert run_train(*args) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "at step 2 of 2" in out
    assert "step 1/2" not in out

    curve = curves.read_curve(model_dir)
    assert [step for step, _, _ in curve] == [2]  # smoke: one validation, at the last step
    assert 0.0 <= curve[0][2]["fg_iou"] <= 1.0 and curve[0][1] >= 0.0
    curves.draw(curve + [(4, curve[0][1] + 1.0, {"fg_iou": 0.9})], str(tmp_path / "curve.png"))
    from PIL import Image
    assert Image.open(tmp_path / "curve.png").size == (480, 320)

    os.remove(os.path.join(model_dir, "eval_test.json"))
    result = run_module("tfseg.evaluate", f"--model_dir={model_dir}", "--split=test")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fixed polarity" in result.stdout
    with open(os.path.join(model_dir, "eval_test.json")) as f:
        rescored = json.load(f)
    assert rescored["fg_iou"] == pytest.approx(trained["fg_iou"])
    assert rescored["foreground_region"] == trained["foreground_region"]


@pytest.mark.slow
def test_the_test_split_is_scored_on_the_best_validation_checkpoint_not_the_latest(tmp_path, monkeypatch, capsys):
    # Selected by ReDO's reference criterion, on which step 2 is best; fixed-polarity fg IoU, which
    # would pick step 4, must not decide.
    cfg = _smoke_config(tmp_path, "tfseg.training.TrainConfig.num_steps = 4",
                        "tfseg.training.TrainConfig.eval_every = 1",
                        "tfseg.training.TrainConfig.selection_metric = 'redo_iou'")
    real_evaluate, validated, scored, grappler_off = evaluator.evaluate, {}, [], []

    def evaluate(model, dataset, max_examples=None, choose_region=False):
        results, sample = real_evaluate(model, dataset, max_examples=max_examples, choose_region=choose_region)
        grappler_off.append(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer"))
        if max_examples is not None:  # validation: scores that only get worse, so step 2 stays the best
            step = len(validated) + 1
            validated[step] = _weights(model)
            results = {**results, "redo_iou": 0.5 if step == 2 else 0.1 / step, "fg_iou": 0.1 * step}
        else:                         # the test split
            scored.append(_weights(model))
        return results, sample

    monkeypatch.setattr(evaluator, "evaluate", evaluate)
    assert cfg.optimize_graphs is False  # smoke.gin: Grappler off while the run lasts, restored after
    trainer.Trainer(str(tmp_path), cfg).train()
    assert grappler_off == [True] * 5
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    assert sorted(validated) == [1, 2, 3, 4] and len(scored) == 1
    assert "redo_iou 0.500" in capsys.readouterr().out  # the console shows the score that chose
    assert all(np.array_equal(a, b) for a, b in zip(scored[0], validated[2]))
    assert not all(np.array_equal(a, b) for a, b in zip(scored[0], validated[4]))


@pytest.mark.slow
def test_the_trainer_releases_its_prefetching_stream_however_the_run_ends(tmp_path, monkeypatch):
    # A tf.data iterator still prefetching through tf.numpy_function (the procedural and folder
    # sources) when the interpreter finalizes hangs the exit: the trainer must drop its own stream
    # when its loop ends, normally and by an exception (here a signal's Stopped).
    streams = []

    def tracked(*args, **kwargs):
        stream = make_stream(*args, **kwargs)
        streams.append(weakref.ref(stream))
        return stream

    make_stream = trainer._training_dataset
    monkeypatch.setattr(trainer, "_training_dataset", tracked)
    run = trainer.Trainer(str(tmp_path / "whole"), _smoke_config(tmp_path))
    run.train()
    gc.collect()
    assert len(streams) == 1 and streams[0]() is None

    stopping = trainer.Trainer(str(tmp_path / "stopped"), _smoke_config(tmp_path), duties=[_StopAfterFirstStep()])
    with pytest.raises(signals.Stopped):
        stopping.train()
    gc.collect()
    assert len(streams) == 2 and streams[1]() is None


class _StopAfterFirstStep(duties.Duty):
    """A duty that ends the run by an exception after the first step, as a signal would."""

    def due(self, trainer_, step, stage_end):
        return True

    def run(self, trainer_, step):
        raise signals.Stopped(15, "stopped by the test")


@pytest.mark.slow
def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = run_module("tfseg.evaluate", f"--model_dir={tmp_path}")
    assert result.returncode == 2
    assert "not a tfseg training run" in result.stderr


@pytest.mark.slow
def test_collapsed_masks_restart_the_run_with_a_new_seed(tmp_path, capsys):
    # Any mask's smaller region is <= 0.5 < 0.6, so the first evaluation counts as a collapse.
    cfg = _smoke_config(tmp_path, "tfseg.training.TrainConfig.collapse_threshold = 0.6",
                        "tfseg.training.TrainConfig.max_restarts = 1",
                        "tfseg.training.TrainConfig.eval_every = 1")
    run = trainer.Trainer(str(tmp_path), cfg)
    run.train()
    out = capsys.readouterr().out
    assert "restarting from scratch, restart 1" in out
    assert "already made" in out  # the second collapse is not restarted again
    reader = tf.train.load_checkpoint(checkpointing.latest_checkpoint(str(tmp_path), "latest"))
    assert reader.get_tensor("restarts/.ATTRIBUTES/VARIABLE_VALUE") == 1
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 2


def test_misspelled_binding_fails_before_training_with_a_suggestion(tmp_path, capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={tmp_path}/run",
                     "--gin_bindings=tfseg.training.TrainConfig.num_step = 3")
    assert code == 2
    err = capsys.readouterr().err
    assert "num_step" in err and "Did you mean num_steps" in err
    assert not os.path.exists(f"{tmp_path}/run")


def test_unknown_configurable_fails_with_a_suggestion(tmp_path, capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={tmp_path}/run",
                     "--gin_param=tfseg.methods.redoo.z_dim = 3")
    assert code == 2
    err = capsys.readouterr().err
    assert "tfseg.methods.redoo" in err and "tfseg.methods.redo" in err


@pytest.mark.parametrize("name,expected", [("tpu", "no TPU 'local' could be used"),
                                             ("gpu_cluster", "unknown strategy 'gpu_cluster'")])
def test_a_strategy_that_cannot_run_here_fails_before_any_network_naming_the_binding(name, expected, tmp_path,
                                                                                     capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={tmp_path}/run",
                     f"--gin_bindings=tfseg.training.make_strategy.name='{name}'")
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "tfseg.training.make_strategy" in err and "mirrored" in err
    assert "Traceback" not in err and not os.path.exists(f"{tmp_path}/run/checkpoints")


def test_missing_gin_file_lists_the_shipped_ones(tmp_path, capsys):
    assert run_train("--gin_file=gin_configs/nope.gin", f"--model_dir={tmp_path}") == 2
    err = capsys.readouterr().err
    assert "nope.gin" in err and "demo.gin" in err


def test_missing_data_directory_fails_before_training(tmp_path, capsys):
    missing = tmp_path / "no_such_photos"
    code = run_train(f"--gin_file={REPO}/gin_configs/redo_folder.gin", f"--model_dir={tmp_path}/run",
                     f"--gin_bindings=tfseg.data.image_folder_source.image_dir = '{missing}'")
    assert code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "image_dir" in err
    assert not os.path.exists(f"{tmp_path}/run/checkpoints")


def test_unwritable_model_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = run_train(f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={blocker}/run")
    assert code == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "--model_dir" in err


def test_workers_checking_one_model_dir_at_once_all_pass_and_leave_no_probe(tmp_path):
    # The workers of a multi-worker run check the same model_dir at the same time (CI once failed
    # when two of them shared one probe file and one deleted it under the other).
    import threading
    from tfseg.config import prepare_model_dir
    errors = []

    def check():
        try:
            for _ in range(200):
                prepare_model_dir(str(tmp_path / "run"))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert os.listdir(tmp_path / "run") == []


def test_dry_run_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={tmp_path}/run", "--dry_run")
    assert code == 0
    out = capsys.readouterr().out
    assert "TrainConfig.num_steps = 1800" in out and "dry run" in out
    # ReDO's step reads one batch per phase: the batch size is the config's, not twice it.
    assert "#   train: steps 1-1800, 64 images a step (2 batches of 32)" in out
    assert not os.path.exists(f"{tmp_path}/run/checkpoints")


def test_bad_jit_compile_value_is_rejected():
    from tfseg.training.strategy import resolve_jit_compile
    assert resolve_jit_compile("false") is False and resolve_jit_compile("TRUE") is True
    accelerator = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    assert resolve_jit_compile("auto") is accelerator  # XLA exactly where there is a GPU or TPU
    with pytest.raises(ValueError, match="auto, true or false"):
        resolve_jit_compile("maybe")
    with pytest.raises(config.ConfigError, match=r"TrainConfig.optimize_graphs = 'no': must be True or False"):
        _smoke_config(None, "tfseg.training.TrainConfig.optimize_graphs = 'no'")
    with pytest.raises(config.ConfigError, match=r"TrainConfig.selection_metric = 'iou': must be one of 'fg_iou'"):
        _smoke_config(None, "tfseg.training.TrainConfig.selection_metric = 'iou'")
    default = [d for d in duties.default_duties(_smoke_config(None)) if isinstance(d, duties.Validate)]
    assert [d.metric for d in default] == ["fg_iou"]  # tfseg's own criterion unless a config asks


def test_dry_run_of_lsun_horse_resolves_the_paper_config_and_reports_the_missing_data(tmp_path, capsys):
    code = run_train(f"--gin_file={REPO}/gin_configs/lsun_horse.gin", f"--model_dir={tmp_path}/run", "--dry_run")
    assert code == 0
    out = capsys.readouterr().out
    assert "perturbgan.min_mask_coverage = 0.2" in out and "TrainConfig.resolution = 128" in out
    # The reference's progressive schedule, one stage per resolution (docs/methods.md).
    assert "#   generator_8: steps 1-4688, 256 images a step (8 batches of 32), 8 px, lr 0.001, no fade-in" in out
    assert "#   generator_128: steps 70314-107813, batch 32, 128 px, lr 0.0015, fade-in over 600000 images" in out
    assert "#   encoder: steps 107814-127813, batch 32" in out
    assert "data NOT ready" in out and "tfseg.data.lsun_source.lmdb_dir" in out and "horse.zip" in out
    assert not os.path.exists(f"{tmp_path}/run")


@pytest.mark.parametrize("line", ["from __gin__ import dynamic_registration", "import subprocess",
                                  "include '/tmp/other.gin'"])
@pytest.mark.slow
def test_a_run_folder_config_that_could_run_code_is_refused(tmp_path, line):
    config.parse([os.path.join(REPO, "gin_configs", "demo.gin"), config.SMOKE_CONFIG])
    path = config.save_config(str(tmp_path))
    config.load_run_config(str(tmp_path))  # what tfseg.train writes is accepted
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(line + "\n" + text)
    with pytest.raises(config.ConfigError, match="not allowed in a run folder"):
        config.load_run_config(str(tmp_path))
    result = run_module("tfseg.evaluate", f"--model_dir={tmp_path}")
    assert result.returncode == 2 and "not allowed in a run folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script, flag", [("tfseg-train", "--gin_file"), ("tfseg-evaluate", "--split"),
                                          ("tfseg-export", "--export_dir"), ("tfseg-predict", "--images")])
def test_installed_console_scripts_explain_themselves(script, flag):
    import shutil  # pylint: disable=import-outside-toplevel
    path = shutil.which(script) or os.path.join(os.path.dirname(sys.executable), script)
    if not os.path.exists(path):
        pytest.skip(f"{script} is not installed (pip install -e . installs it)")
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert flag in text and "python -m tfseg." in text, text[:2000]


FLOWERS = os.path.join(REPO, "..", "shared", "data", "flowers17")


@pytest.mark.slow
@pytest.mark.parametrize("gin_file", [m.folder_config for m in methods_under_test.METHODS])
def test_folder_configs_train_two_steps_on_real_flowers(gin_file, tmp_path, capsys):
    if not os.path.isdir(os.path.join(FLOWERS, "images")):
        pytest.skip(f"Flowers-17 is not at {FLOWERS} (it lives beside the repository, never inside it)")
    assert run_train(f"--gin_file={REPO}/gin_configs/{gin_file}", "--smoke", f"--model_dir={tmp_path / 'run'}",
                     "--gin_bindings=tfseg.data.make_dataset.source=@tfseg.data.image_folder_source",
                     f"--gin_bindings=tfseg.data.image_folder_source.image_dir='{FLOWERS}/images'",
                     f"--gin_bindings=tfseg.data.image_folder_source.mask_dir='{FLOWERS}/masks'") == 0
    out = capsys.readouterr().out
    assert "train       1,360 images, no masks" in out and "with masks" in out
    with open(tmp_path / "run" / "eval_test.json") as f:
        results = json.load(f)
    assert results["num_images"] > 300  # scored on the labelled test photos
    # The folder configs refine masks by colour, so the disc through the same refinement is a baseline.
    assert set(results["baselines"]) == {"full-image mask", "centred disc, 50 % of the image",
                                         evaluator.REFINED_DISC}


@pytest.mark.parametrize("gin_name, method", [("lsun_horse.gin", "bilinear"), ("perturbgan_paper_base.gin", "bilinear"),
                                              ("redo_flowers.gin", "nearest"), ("perturbgan_folder.gin", "nearest")])
def test_photos_are_resized_as_each_reference_resizes_them(gin_name, method):
    # PerturbGAN's reference resizes with torchvision's bilinear, ReDO's nearest; the PerturbGAN
    # folder config keeps nearest, with which its Flowers-17 figures were measured.
    import inspect  # noqa: PLC0415
    from tfseg.data import pipeline  # noqa: PLC0415
    config.parse([os.path.join(REPO, "gin_configs", gin_name)], [])
    try:
        bound = gin.query_parameter("tfseg.data.make_dataset.image_resize_method")
    except ValueError:  # not bound: the code's default (shipped configs do not restate defaults)
        bound = inspect.signature(pipeline.make_dataset).parameters["image_resize_method"].default
    assert bound == method

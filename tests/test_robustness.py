"""Nothing lost, nothing silent: signals, exact resume, the run lock, non-finite steps, corrupt
checkpoints, a config that does not fit its model_dir, and bad numbers in bindings."""
import json
import os
import signal
import socket
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tfseg.training import nonfinite, run_dir
import methods as methods_under_test  # tests/methods.py: the one list of methods
import run_fixture
from test_training import REPO, run_train

SMOKE = [f"--gin_file={REPO}/gin_configs/demo.gin", "--smoke",
         "--gin_bindings=tfseg.training.TrainConfig.log_every=1",
         "--gin_bindings=tfseg.training.TrainConfig.eval_every=1000",
         "--gin_bindings=tfseg.training.TrainConfig.checkpoint_every=1000"]


def _checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith("model/") and "OPTIMIZER_SLOT" not in key}


# One intra-op thread and TensorFlow's own kernels: reductions then add in one order, so two runs of the same
# steps agree bit for bit even when another process competes for the cores (multi-threaded oneDNN
# reductions do not: under CI load they drifted by 1e-4 in 12 steps, as much as a stream off by one batch).
REPRODUCIBLE_ENV = run_fixture.REPRODUCIBLE_ENV


def _train_and_signal(model_dir, steps, signum, after_step, env=None):
    """Runs the smoke config for `steps` in a subprocess and sends `signum` once `after_step` is logged
    (never, when `signum` is None: the run goes to its end)."""
    args = [sys.executable, "-m", "tfseg.train", *SMOKE, f"--model_dir={model_dir}",
            f"--gin_bindings=tfseg.training.TrainConfig.num_steps={steps}"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if signum is not None and line.startswith(f"step {after_step}/"):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=300)
    return process.returncode, "".join(lines) + out, err


def _assert_stopped_at_a_whole_step(code, out, err, signum, model_dir, steps):
    """The run exited with 128 + signum, said so in one line, and its last checkpoint is that step's."""
    assert code == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    stopped = [line for line in out.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0]
    step = int(stopped[0].split("at step ")[1].split(":")[0])
    assert 3 <= step < steps
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert path.endswith(f"ckpt-{step}")
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == step
    iterations = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.endswith("_iterations/"
                                                                                                  ".ATTRIBUTES/VARIABLE_VALUE")]
    assert iterations and all(i == step for i in iterations)  # every optimizer agrees with the step


@pytest.mark.slow
def test_sigterm_writes_a_consistent_checkpoint_and_the_console_holds_tfseg_lines_only(tmp_path):
    model_dir = str(tmp_path / "run")
    loud = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    code, out, err = _train_and_signal(model_dir, 200, signal.SIGTERM, after_step=3, env=loud)
    _assert_stopped_at_a_whole_step(code, out, err, signal.SIGTERM, model_dir, 200)
    lines = (out + err).splitlines()
    noise = [line for line in lines if line.startswith(("I0000", "W0000", "E0000", "I1", "W1", "E1", "WARNING:"))
             or "AutoGraph" in line or "Sharding callback" in line or "oneDNN" in line]
    assert not noise, noise[:5]
    assert lines[0].startswith("training in ") and lines[1].startswith("data: ")
    assert any(line.startswith("building the networks and tracing") for line in lines[:9])
    assert any(line.startswith("stage 1/1 'train'") for line in lines[:10])


@pytest.mark.slow
def test_a_run_stopped_by_ctrl_c_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    straight = str(tmp_path / "straight")
    code, _, err = _train_and_signal(straight, 12, None, None, env=REPRODUCIBLE_ENV)
    assert code == 0, err[-2000:]
    resumed = str(tmp_path / "resumed")
    code, out, err = _train_and_signal(resumed, 12, signal.SIGINT, after_step=4, env=REPRODUCIBLE_ENV)
    _assert_stopped_at_a_whole_step(code, out, err, signal.SIGINT, resumed, 12)
    code, _, err = _train_and_signal(resumed, 12, None, None, env=REPRODUCIBLE_ENV)
    assert code == 0, err[-2000:]
    a = _checkpoint_values(tf.train.latest_checkpoint(os.path.join(straight, "checkpoints")))
    b = _checkpoint_values(tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints")))
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:  # a stream off by even one batch moves weights by ~1e-4
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.slow
def test_a_busy_model_dir_is_refused_a_stale_lock_taken_over_and_another_config_never_overwrites(tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    lock = model_dir / run_dir.LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "earlier"}))
        assert run_train(*SMOKE, f"--model_dir={model_dir}") == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and "Traceback" not in err
        assert not (model_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_train(*SMOKE, f"--model_dir={model_dir}") == 0  # the holder is gone: stale
    assert f"taking over the lock of {model_dir}: process {holder.pid}" in capsys.readouterr().out
    assert not lock.exists()  # released at the end

    # The smoke run now there is never overwritten by a run of another config; a dry run reports it.
    saved = (model_dir / "config.gin").read_text()
    real = [f"--gin_file={REPO}/gin_configs/demo.gin", f"--model_dir={model_dir}"]
    assert run_train(*real) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config" in err and "TrainConfig.resolution: 16 -> 32" in err
    assert (model_dir / "config.gin").read_text() == saved
    assert run_train(*real, "--dry_run") == 0
    assert "model_dir clash (a real run stops here)" in capsys.readouterr().out


def test_guard_reverts_every_variable_after_a_non_finite_step():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable(3.0)
    guard = nonfinite.Guard([a, b])
    a.assign([5.0, np.nan])
    b.assign(4.0)
    guard.keep_or_revert(False)
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    assert b.numpy() == 3.0
    b.assign(7.0)
    guard.keep_or_revert(True)
    assert b.numpy() == 7.0 and guard.shadows[1].numpy() == 7.0
    assert nonfinite.all_finite({"loss": tf.constant([1.0, np.inf])}, []).numpy() == False  # noqa: E712
    assert nonfinite.all_finite({"loss": tf.constant([1.0])}, [tf.constant([np.nan])]).numpy() == False  # noqa: E712


@pytest.mark.slow
def test_non_finite_losses_are_undone_restored_then_stop_the_run_with_finite_checkpoints(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    code = run_train(*SMOKE, f"--model_dir={model_dir}", "--gin_bindings=tfseg.training.TrainConfig.num_steps=40",
                     "--gin_bindings=tfseg.training.TrainConfig.checkpoint_every=1",
                     "--gin_bindings=tfseg.methods.redo.learning_rate=1e30",
                     "--gin_bindings=tfseg.methods.redo.mask_learning_rate=1e30",
                     "--gin_bindings=tfseg.training.TrainConfig.max_nonfinite_steps=3",
                     "--gin_bindings=tfseg.training.TrainConfig.max_nonfinite_restores=1")
    captured = capsys.readouterr()
    assert code == 1
    assert "non-finite steps in a row: restored" in captured.out
    assert "losses stayed non-finite" in captured.err and "Lower the learning rates" in captured.err
    for path in tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints")).all_model_checkpoint_paths:
        for key, value in _checkpoint_values(path).items():
            if np.issubdtype(value.dtype, np.floating):
                assert np.all(np.isfinite(value)), (path, key)
    assert not os.path.exists(os.path.join(model_dir, "best"))  # a non-finite model is never selected


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    run_fixture.write_untrained_run(str(model_dir), steps=(1, 2, 3))  # as a 3-step smoke run leaves it
    data = next((model_dir / "checkpoints").glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[:100])  # truncated, as by a full disk
    temp = model_dir / "checkpoints" / "ckpt-4_temp"
    temp.mkdir()
    capsys.readouterr()
    assert run_train(*SMOKE, f"--model_dir={model_dir}", "--gin_bindings=tfseg.training.TrainConfig.num_steps=5",
                     "--gin_bindings=tfseg.training.TrainConfig.checkpoint_every=1") == 0
    out = capsys.readouterr().out
    assert f"removed a half-written checkpoint: {temp}" in out and not temp.exists()
    assert "ckpt-3 is unreadable" in out and "falling back to" in out and "ckpt-2" in out
    assert "resumed from" in out and "at step 2" in out and "step 5/5" in out


def _run_export(*args):
    from tfseg import export  # pylint: disable=import-outside-toplevel
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["tfseg.export", *args])
    return export.main([])


@pytest.mark.slow
def test_a_checkpoint_of_another_layout_stops_the_run_untouched_and_its_bindings_resume_and_export_it(tmp_path, capsys):
    # A ReDO run as tfseg made them before spectral_norm existed: Keras' layers, no such line in config.gin.
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    run_fixture.write_untrained_run(str(model_dir), bindings=["tfseg.methods.redo.spectral_norm = 'keras'"])
    saved = (model_dir / "config.gin").read_text()
    (model_dir / "config.gin").write_text("\n".join(line for line in saved.splitlines() if "spectral_norm" not in line))
    files = {path.name: path.read_bytes() for path in (model_dir / "checkpoints").iterdir()}
    capsys.readouterr()
    assert run_train(*SMOKE, f"--model_dir={model_dir}") == 2  # the default layout does not fit
    err = capsys.readouterr().err
    assert "ckpt-2 does not fit the networks this config builds" in err
    assert "--gin_bindings=\"tfseg.methods.redo.spectral_norm='keras'\"" in err and "Traceback" not in err
    assert {path.name: path.read_bytes() for path in (model_dir / "checkpoints").iterdir()} == files  # nothing lost
    export_args = [f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'serving'}"]
    assert _run_export(*export_args) == 2  # export reads config.gin too: the same message, no traceback
    assert "spectral_norm='keras'" in capsys.readouterr().err
    assert _run_export(*export_args, "--gin_bindings=tfseg.methods.redo.spectral_norm='keras'") == 0
    assert (tmp_path / "serving" / "1" / "saved_model.pb").exists()
    assert run_train(*SMOKE, f"--model_dir={model_dir}", "--gin_bindings=tfseg.methods.redo.spectral_norm='keras'") == 0
    assert "already finished" in capsys.readouterr().out
    assert "spectral_norm = 'keras'" in (model_dir / "config.gin").read_text()  # recorded: no binding needed now
    # The other way round: a run of today's layout bound to Keras' is refused by the restore, too.
    new_run = tmp_path / "new"
    new_run.mkdir()
    run_fixture.write_untrained_run(str(new_run))
    capsys.readouterr()
    assert run_train(*SMOKE, f"--model_dir={new_run}", "--gin_bindings=tfseg.methods.redo.spectral_norm='keras'") == 2
    assert "does not fit the networks this config builds" in capsys.readouterr().err


@pytest.mark.parametrize("binding, named", [
    ("tfseg.training.TrainConfig.checkpoint_every=0", "tfseg.training.TrainConfig.checkpoint_every = 0"),
    ("tfseg.training.TrainConfig.batch_size=-4", "tfseg.training.TrainConfig.batch_size = -4"),
    ("tfseg.methods.redo.learning_rate='fast'", "tfseg.methods.redo.learning_rate = 'fast'"),
    ("tfseg.methods.redo.z_dim=2.5", "tfseg.methods.redo.z_dim = 2.5"),
    ("tfseg.methods.redo.info_weight=-1.0", "tfseg.methods.redo.info_weight = -1.0"),
])
def test_a_bad_number_is_a_one_line_error_naming_the_binding(tmp_path, capsys, binding, named):
    for extra in ([], ["--dry_run"]):
        assert run_train(*SMOKE, f"--model_dir={tmp_path / 'run'}", f"--gin_bindings={binding}", *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and named in err[0], err
    assert not (tmp_path / "run").exists()


def test_none_is_a_number_only_where_the_parameter_is_annotated_optional(tmp_path, capsys):
    # redo_paper_base.gin scores the whole validation split: eval_examples = None.
    assert run_train(*SMOKE, f"--model_dir={tmp_path / 'run'}", "--dry_run",
                     "--gin_bindings=tfseg.training.TrainConfig.eval_examples=None") == 0
    capsys.readouterr()
    assert run_train(*SMOKE, f"--model_dir={tmp_path / 'run'}", "--dry_run",
                     "--gin_bindings=tfseg.training.TrainConfig.eval_batch_size=None") == 2
    assert "tfseg.training.TrainConfig.eval_batch_size = None: must be a number" in capsys.readouterr().err


def test_the_eta_covers_every_remaining_step_at_the_pace_since_the_first_step(monkeypatch):
    import io  # pylint: disable=import-outside-toplevel
    from tfseg import progress  # pylint: disable=import-outside-toplevel
    clock = {"now": 100.0}
    monkeypatch.setattr(progress.time, "time", lambda: clock["now"])
    stream = io.StringIO()
    bar = progress.TrainingProgress(total_steps=100, start_step=0, images_per_step=10, stream=stream)
    clock["now"] = 160.0  # the first step took a minute of tracing
    bar.first_step_done(1)
    bar.update(1, {})
    assert stream.getvalue().rstrip().endswith("ETA ?")
    clock["now"] = 178.0  # then 9 steps in 18 s: 2 s per step, 90 steps to go
    bar.update(10, {"loss/x": 1.0})
    assert stream.getvalue().rstrip().endswith("ETA 03:00")


def test_a_run_resumes_on_another_strategy_but_not_with_another_model():
    saved = ("tfseg.training.make_strategy.name = 'multi_worker'\n"
             "tfseg.training.TrainConfig.num_steps = 2\ntfseg.methods.redo.z_dim = 4\nRESOLUTION = 16\n")
    on_one_machine = "tfseg.training.TrainConfig.num_steps = 3\ntfseg.methods.redo.z_dim = 4\nRESOLUTION = 16\n"
    assert run_dir.config_differences(saved, on_one_machine) == []
    assert run_dir.config_differences(saved, on_one_machine.replace("z_dim = 4", "z_dim = 8")) == [
        ("tfseg.methods.redo.z_dim", "4", "8")]
    assert run_dir.config_differences(saved, on_one_machine.replace("= 16", "= 32")) == [("RESOLUTION", "16", "32")]


@pytest.mark.parametrize("gin_name", [m.demo_config for m in methods_under_test.METHODS] + ["lsun_horse.gin"])
def test_every_weight_of_a_method_survives_a_checkpoint_its_moving_average_included(gin_name, tmp_path):
    """A Keras 3 network held in a list is reached by a checkpoint only through an optimizer: G's EMA,
    which none trains, was lost on resume before `checkpointing.unreached_weights`."""
    from tfseg import config  # noqa: PLC0415
    from tfseg.training import checkpointing, loading, train_config  # noqa: PLC0415

    def build():
        gin.clear_config()
        config.parse([os.path.join(REPO, "gin_configs", gin_name), config.SMOKE_CONFIG], [])
        cfg = train_config.TrainConfig()
        model = loading.build_method(cfg)
        model.build_for_training(cfg.batch_size)
        return model, checkpointing.make_checkpoint(model, checkpointing.RunState())

    model, checkpoint = build()
    for i, v in enumerate(model.variables):
        v.assign(tf.cast(tf.fill(v.shape, float(i % 7 + 2)), v.dtype))
    path = checkpoint.save(str(tmp_path / "ckpt"))
    fresh, fresh_checkpoint = build()
    checkpointing.restore(fresh_checkpoint, path)
    lost = [v.path for v, w in zip(model.variables, fresh.variables) if not np.array_equal(v.numpy(), w.numpy())]
    assert not lost
    has_average = getattr(model, "generator_ema", None) is not None
    assert bool(checkpointing.unreached_weights(model)) == has_average
    if has_average:  # a checkpoint written before the averages were saved is refused, saying why
        legacy = checkpointing.make_checkpoint(fresh, checkpointing.RunState(), include_unreached=False)
        legacy_path = legacy.save(str(tmp_path / "legacy"))
        with pytest.raises(checkpointing.MissingAverages, match="did not save the weights no optimizer trains"):
            checkpointing.restore(fresh_checkpoint, legacy_path)
        # Evaluation, export and prediction still read such a run: everything trained is there.
        checkpointing.restore(checkpointing.make_checkpoint(fresh, checkpointing.RunState(),
                                                            include_unreached=False), legacy_path)


def test_a_run_saved_before_the_averages_still_loads_for_evaluation_export_and_prediction(tmp_path, monkeypatch, capsys):
    from tfseg.training import checkpointing, loading  # noqa: PLC0415
    made = checkpointing.make_checkpoint
    monkeypatch.setattr(checkpointing, "make_checkpoint",
                        lambda model, state, include_unreached=True: made(model, state, include_unreached=False))
    run_fixture.write_untrained_run(str(tmp_path), "demo_labels4free.gin", foreground_region=1)
    monkeypatch.undo()
    gin.clear_config()
    model, _, path = loading.load_trained(str(tmp_path))
    assert path.endswith("ckpt-2") and int(model.foreground_region.numpy()) == 1  # restored
    assert "predates saved moving averages" in capsys.readouterr().err

"""Mixed precision (`tfseg.training.TrainConfig.precision`): 16-bit compute that trains like float32.

Each method is built tiny under each policy from the same seed and trained a few steps of every
stage on the same images; its losses must stay finite and close to the float32 run's.
"""
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.errors import ConfigError
from tfseg.methods import optimizers, redo
from tfseg.methods.base import phases_due
from tfseg.training import checkpointing, precision, train_config, train_step, trainer
from tfseg.evaluation import split_evaluation

import methods as methods_under_test  # tests/methods.py: the one list of methods

# Each method at 16 px with tiny widths, and the stages whose losses are compared (tests/methods.py):
# each method's adversarial stage and the shared distillation once.
METHODS = {m.name: m.tiny for m in methods_under_test.METHODS}
STAGES = {m.name: m.precision_stages for m in methods_under_test.METHODS}
BATCH = 4
STEPS = 2
# One worker runs the module, so the float32 reference runs are made once, not once per worker.
pytestmark = pytest.mark.xdist_group("precision")


def _train(method, policy):
    """Builds `method` under `policy` and trains STEPS steps of each of its `STAGES`.

    Returns:
        (model, {"stage/loss": [mean per step]}).
    """
    images = tf.random.stateless_uniform([BATCH, 16, 16, 3], [7, 7], -1.0, 1.0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with precision.policy(policy):
        with strategy.scope():
            model = METHODS[method]()
            model.build_for_training(BATCH)
        iterator = iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors({"image": images}).repeat()))
        losses = {}
        for stage in model.stages():
            if stage.name not in STAGES[method]:
                continue
            model.begin_stage(stage.name)
            # Every phase on every step, the periodic ones (Labels4Free's lazy R1) included: one trace.
            step_fn = train_step.make_train_step(model, strategy, False, phases_due(stage.phases, 0),
                                              stage.batches_per_step)
            for step in range(STEPS):
                out = step_fn(iterator, tf.constant(step, tf.int64))
                for name, value in out.items():
                    if name.startswith("loss/"):
                        losses.setdefault(f"{stage.name}/{name}", []).append(float(np.mean(value.numpy())))
    return model, losses


@pytest.fixture(scope="module")
def float32_runs():
    return {method: _train(method, "float32")[1] for method in METHODS}


@pytest.mark.slow  # trains each method two steps per stage under three policies
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_few_steps_stay_finite_and_close_to_float32(method, policy, float32_runs):
    model, losses = _train(method, policy)
    reference = float32_runs[method]
    assert losses.keys() == reference.keys() and {name.split("/")[0] for name in losses} == set(STAGES[method])
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float16"
    layers = list(model._flatten_layers())
    assert any(layer.compute_dtype == compute for layer in layers)  # the networks did compute in 16 bits
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # and kept float32 weights
    masks = model.region_masks(tf.zeros([2, 16, 16, 3]))
    assert masks.dtype == tf.float32
    assert model.loss_scaled == (policy == "mixed_float16")
    for name, values in losses.items():
        assert np.all(np.isfinite(values)), (name, values)
        # The first step sees the same weights and data: only rounding differs. Later steps follow
        # Adam's first, sign-like updates (beta_1 = 0), so they drift a little further.
        first, second = reference[name]
        assert abs(values[0] - first) <= 0.05 + 0.05 * abs(first), (name, values, reference[name])
        assert abs(values[1] - second) <= 0.2 + 0.2 * abs(second), (name, values, reference[name])


def test_a_float16_checkpoint_restores_into_the_float32_networks_of_evaluation_and_export(tmp_path):
    with precision.policy("mixed_float16"):
        trained = METHODS["redo"]()
        trained.build_for_training(BATCH)
    assert all(optimizers.is_loss_scaled(o) for o in trained.optimizers_by_name().values())
    for variable in trained.trainable_variables[:3]:
        variable.assign(variable + 1.0)
    path = checkpointing.make_checkpoint(trained, checkpointing.RunState()).save(str(tmp_path / "ckpt"))

    with optimizers.loss_scaling(True):  # as tfseg.training.loading rebuilds a float16 run
        rebuilt = METHODS["redo"]()
        rebuilt.build_for_training(BATCH)
    assert all(layer.compute_dtype == "float32" for layer in rebuilt._flatten_layers())
    checkpointing.restore(checkpointing.make_checkpoint(rebuilt, checkpointing.RunState()), path)
    for a, b in zip(trained.trainable_variables, rebuilt.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # and the float16 run resumes with its loss scales
    with precision.policy("mixed_float16"):
        resumed = METHODS["redo"]()
        resumed.build_for_training(BATCH)
    trained.mask_optimizer.dynamic_scale.assign(123.0)
    path = checkpointing.make_checkpoint(trained, checkpointing.RunState()).save(str(tmp_path / "ckpt2"))
    checkpointing.restore(checkpointing.make_checkpoint(resumed, checkpointing.RunState()), path)
    assert float(resumed.mask_optimizer.dynamic_scale.numpy()) == 123.0


def test_the_policy_is_restored_after_training_and_after_an_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with precision.policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_an_unknown_precision_is_named_with_the_choices():
    gin.clear_config()
    with pytest.raises(ConfigError, match=r"TrainConfig.precision = 'float8'.*'mixed_bfloat16'"):
        train_config.TrainConfig(method=redo.ReDOSettings, resolution=16, batch_size=4, num_steps=1,
                            precision="float8")


def test_float16_loss_scaling_skips_an_overflowed_step_and_lowers_the_scale():
    with precision.policy("mixed_float16"):
        model = METHODS["redo"]()
        model.build_for_training(BATCH)
    optimizer = model.discriminator_optimizer
    before = [v.numpy().copy() for v in model._discriminator_variables()]
    scale = float(optimizer.dynamic_scale.numpy())
    grads = [tf.fill(v.shape, np.float32(np.inf)) for v in model._discriminator_variables()]
    model.apply_phase("discriminator", grads)
    assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    for b, v in zip(before, model._discriminator_variables()):
        np.testing.assert_array_equal(b, v.numpy())
    # a finite gradient, scaled by the loss scale, moves the weights as float32 would unscaled
    grads = [tf.ones(v.shape) * optimizers.loss_scale(optimizer) for v in model._discriminator_variables()]
    model.apply_phase("discriminator", grads)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model._discriminator_variables()))


@pytest.mark.slow
def test_a_float16_run_trains_resumes_and_evaluates_in_float32(tmp_path, capsys, monkeypatch):
    import json  # noqa: PLC0415
    from test_training import REPO, run_train  # noqa: PLC0415  (absl flags are defined there)
    from tfseg.training import loading  # noqa: PLC0415
    model_dir = str(tmp_path / "run")
    args = [f"--gin_file={REPO}/gin_configs/demo.gin", "--smoke", f"--model_dir={model_dir}",
            "--gin_bindings=tfseg.training.TrainConfig.precision='mixed_float16'"]
    scored_in = []  # the compute dtypes of the networks the run's test split was scored with
    score_split = split_evaluation.run_split_evaluation

    def recording_score_split(model, *args):
        scored_in.append({layer.compute_dtype for layer in model._flatten_layers()})
        return score_split(model, *args)

    monkeypatch.setattr(trainer, "run_split_evaluation", recording_score_split)
    assert run_train(*args) == 0
    out = capsys.readouterr().out
    assert "step 2/2" in out and "test split, checkpoint" in out
    assert keras.config.dtype_policy().name == "float32"  # the policy did not outlive the run
    assert scored_in == [{"float32"}]  # the test score is the float32 networks', as the export computes
    # evaluation and export rebuild float32 networks that take the float16 run's checkpoint
    model, train_config, _ = loading.load_trained(model_dir)
    assert train_config.precision == "mixed_float16" and model.loss_scaled
    assert all(layer.compute_dtype == "float32" for layer in model._flatten_layers())
    assert model.segment(tf.zeros([1, 16, 16, 3])).dtype == tf.float32
    # so tfseg.evaluate's rescoring gives the run's own test score
    rescored = score_split(model, train_config, str(tmp_path), "test")  # writes tmp_path/eval_test.json
    with open(os.path.join(model_dir, "eval_test.json")) as f:
        assert json.load(f)["fg_iou"] == pytest.approx(rescored["fg_iou"])
    # and a longer run resumes from it in float16
    assert run_train(*args, "--gin_bindings=tfseg.training.TrainConfig.num_steps=3") == 0
    assert "step 3/3" in capsys.readouterr().out

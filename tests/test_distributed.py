"""The training step under a MirroredStrategy with two replicas (two logical CPU devices)."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfseg import config, registry
    from tfseg.training import nonfinite, trainer
    registry.import_configurables()
    config.parse(["gin_configs/demo.gin", "gin_configs/smoke.gin"], [])
    cfg = trainer.TrainConfig()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = trainer.build_method(cfg)
        model.build_for_training(cfg.batch_size)
        guard = nonfinite.Guard(list(model.variables)
                                + [v for o in model.optimizers_by_name().values() for v in o.variables])
    images = tf.random.uniform([cfg.batch_size, cfg.resolution, cfg.resolution, 3], -1, 1, seed=3)
    iterator = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors({"image": images}).repeat()))
    step = trainer.make_train_step(model, strategy, jit_compile=False, guard=guard)
    before = [v.numpy().copy() for v in model.mask_network.trainable_variables]
    out = step(iterator, tf.constant(0, tf.int64))
    after = [v.numpy() for v in model.mask_network.trainable_variables]
    print("replicas", strategy.num_replicas_in_sync)
    print("examples", out["loss/discriminator"].shape[0])
    print("changed", any(abs(a - b).max() > 0 for a, b in zip(before, after)))
    print("finite", bool(out[nonfinite.FINITE_METRIC].numpy()))
    shadow = guard.shadows[guard.variables.index(model.mask_network.trainable_variables[0])]
    print("shadow kept", bool((shadow.numpy() == model.mask_network.trainable_variables[0].numpy()).all()))
""")


def test_train_step_runs_on_two_replicas_and_gathers_the_global_batch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
    assert "examples 4" in result.stdout  # the smoke global batch, split 2 + 2 and gathered
    assert "changed True" in result.stdout
    assert "finite True" in result.stdout and "shadow kept True" in result.stdout  # the non-finite guard, mirrored

"""The GAN optimizer: Keras' Adam update computed by TensorFlow's fused kernel, one op per variable."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.methods import optimizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(optimizer_class, strategy, beta_1, steps=6):
    """Variables and optimizer slots after `steps` updates of three variables under `strategy`."""
    with strategy.scope():
        variables = [keras.Variable(np.random.default_rng(i).normal(size=(3, 4)).astype("float32"))
                     for i in range(3)]
        optimizer = optimizer_class(1e-2, beta_1=beta_1, beta_2=0.99, epsilon=1e-8)
        optimizer.build(variables)

    @tf.function
    def step(k):
        def replica_fn():
            optimizer.apply([tf.sin(v.value * (k + 1.0)) for v in variables], variables)
        strategy.run(replica_fn)

    for k in range(steps):
        step(tf.constant(float(k)))
    return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("beta_1", [0.0, 0.9])
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_fused_adam_updates_weights_and_slots_as_keras_adam(beta_1, strategy):
    make = {"default": tf.distribute.get_strategy, "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0"])}
    expected, expected_slots = _train(keras.optimizers.Adam, make[strategy](), beta_1)
    fused, fused_slots = _train(optimizers.FusedAdam, make[strategy](), beta_1)
    assert len(fused_slots) == len(expected_slots) == 2 + 2 * 3  # iterations, learning rate, m and v
    for a, b in zip(fused + fused_slots, expected + expected_slots):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(fused[0], _train(optimizers.FusedAdam, make[strategy](), beta_1, steps=0)[0][0])


def test_the_step_holds_one_fused_update_per_variable():
    variables = [keras.Variable(tf.ones([2, 2])), keras.Variable(tf.ones([3]))]
    optimizer = optimizers.gan_adam(1e-3)
    optimizer.build(variables)
    graph = tf.function(lambda: optimizer.apply([tf.ones([2, 2]), tf.ones([3])], variables)).get_concrete_function().graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 2
    assert "AssignSubVariableOp" not in ops  # Keras' unfused update assigns m, v and the weight itself


def test_a_checkpoint_of_keras_adam_restores_into_the_fused_adam(tmp_path):
    # Runs saved before the fused kernel resume: same slots, same checkpoint keys.
    weights = keras.Variable(tf.ones([2, 2]))
    before = keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.99)
    before.build([weights])
    before.apply([tf.fill([2, 2], 0.5)], [weights])
    path = tf.train.Checkpoint(optimizer=before, weights=weights).save(str(tmp_path / "ckpt"))
    restored_weights = keras.Variable(tf.zeros([2, 2]))
    after = optimizers.gan_adam(1e-3)
    after.build([restored_weights])
    tf.train.Checkpoint(optimizer=after, weights=restored_weights).restore(path).assert_consumed()
    for a, b in zip(after.variables, before.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_fused_adam_checkpoints_exactly_what_keras_adam_does():
    children = {}
    for cls in (keras.optimizers.Adam, optimizers.FusedAdam):
        weights = keras.Variable(tf.ones([2]))
        optimizer = cls(1e-3)
        optimizer.build([weights])
        optimizer.apply([tf.ones([2])], [weights])
        children[cls] = set(optimizer._trackable_children())
    assert children[optimizers.FusedAdam] == children[keras.optimizers.Adam]


def test_the_fused_adam_refuses_amsgrad_which_it_does_not_compute():
    with pytest.raises(ValueError, match="no amsgrad"):
        optimizers.FusedAdam(1e-3, amsgrad=True)


def test_loss_scaling_wraps_the_fused_adam():
    with optimizers.loss_scaling(True):
        scaled = optimizers.gan_adam(1e-3)
    assert optimizers.is_loss_scaled(scaled) and isinstance(scaled.inner_optimizer, optimizers.FusedAdam)
    assert isinstance(optimizers.gan_adam(1e-3), optimizers.FusedAdam)


def test_two_replicas_update_their_own_copies_of_weights_and_slots_alike():
    # Each replica's kernel must read and write its own device's copies of m and v.
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from tfseg.methods import optimizers
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        results = {}
        for name, cls in (("fused", optimizers.FusedAdam), ("keras", keras.optimizers.Adam)):
            with strategy.scope():
                v = keras.Variable(np.arange(6, dtype="float32").reshape(2, 3))
                opt = cls(1e-2, beta_1=0.0, beta_2=0.99)
                opt.build([v])
            @tf.function
            def step():
                def fn():
                    ctx = tf.distribute.get_replica_context()
                    grad = tf.cos(v.value) * tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)
                    opt.apply([grad], [v])
                strategy.run(fn)
            for _ in range(4):
                step()
            copies = [x.numpy() for x in v.value.values] + [x.numpy() for s in opt.variables[2:] for x in s.value.values]
            results[name] = copies
        f, k = results["fused"], results["keras"]
        print("replicas agree", all(np.array_equal(f[i], f[i + 1]) for i in range(0, len(f), 2)))
        print("matches keras", all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(f, k)),
              max(float(np.abs(a - b).max()) for a, b in zip(f, k)))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas agree True" in result.stdout and "matches keras True " in result.stdout, result.stdout

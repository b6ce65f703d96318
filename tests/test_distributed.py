"""The training step under a MirroredStrategy with two replicas (two logical CPU devices)."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import sys
    sys.path.insert(0, "tests")
    import test_adding_a_method  # the toy method: the trainer's step, not a method's, is under test here
    from tfseg import config, registry
    from tfseg.training import nonfinite, strategy as strategy_lib, trainer
    from tfseg.training import loading, train_config, train_step
    registry.import_configurables()
    config.parse(["gin_configs/demo.gin", "gin_configs/smoke.gin"],
                 ["tfseg.training.TrainConfig.method = @tests.two_colours"])
    cfg = train_config.TrainConfig()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = loading.build_method(cfg)
        model.build_for_training(cfg.batch_size)
        guard = nonfinite.Guard(list(model.variables)
                                + [v for o in model.optimizers_by_name().values() for v in o.variables])
    images = tf.random.uniform([cfg.batch_size, cfg.resolution, cfg.resolution, 3], -1, 1, seed=3)
    iterator = strategy_lib.distributed_iterator(strategy, tf.data.Dataset.from_tensors({"image": images}).repeat())
    # ReDO's and PerturbGAN's full steps run on two replicas in the two-worker test.
    step = train_step.make_train_step(model, strategy, jit_compile=False, phases=("train",), batches_per_step=1)
    before = [v.numpy().copy() for v in model.mask_network.trainable_variables]
    with strategy_lib.graph_optimization(cfg.optimize_graphs):  # off at smoke sizes, as in a smoke run
        out = step(iterator, tf.constant(0, tf.int64))
        guard.keep_or_revert(bool(out[nonfinite.FINITE_METRIC].numpy()))
    after = [v.numpy() for v in model.mask_network.trainable_variables]
    print("replicas", strategy.num_replicas_in_sync)
    print("one cpu", strategy_lib.on_one_cpu(strategy))
    print("examples", out["loss/rebuild"].shape[0])
    print("changed", any(abs(a - b).max() > 0 for a, b in zip(before, after)))
    print("finite", bool(out[nonfinite.FINITE_METRIC].numpy()))
    shadow = guard.shadows[guard.variables.index(model.mask_network.trainable_variables[0])]
    print("shadow kept", bool((shadow.numpy() == model.mask_network.trainable_variables[0].numpy()).all()))
""")


@pytest.mark.slow
def test_train_step_runs_on_two_replicas_and_gathers_the_global_batch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
    assert "one cpu False" in result.stdout  # two replicas: the batches are split by the distributed iterator
    assert "examples 4" in result.stdout  # the smoke global batch, split 2 + 2 and gathered
    assert "changed True" in result.stdout
    assert "finite True" in result.stdout and "shadow kept True" in result.stdout  # the non-finite guard, mirrored


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        import tensorflow as tf
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


def test_one_writer_per_run_the_chief_or_else_worker_zero():
    from tfseg.training.strategy import is_chief
    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert is_chief(object())  # a single-machine strategy has no cluster resolver
    assert is_chief(_Strategy(_Resolver(None, None, {})))
    assert is_chief(_Strategy(_Resolver("worker", 0, workers)))
    assert not is_chief(_Strategy(_Resolver("worker", 1, workers)))
    assert is_chief(_Strategy(_Resolver("chief", 0, with_chief)))
    assert not is_chief(_Strategy(_Resolver("worker", 0, with_chief)))


def _free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(model_dir, gin_file, *bindings):
    """Trains `gin_file --smoke` on two local worker processes (TF_CONFIG, free ports); their outputs."""
    import json
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tfseg.train", f"--gin_file=gin_configs/{gin_file}", "--smoke",
             f"--model_dir={model_dir}", "--gin_bindings=tfseg.training.make_strategy.name='multi_worker'",
             *[f"--gin_bindings={b}" for b in bindings]],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return [out for out, _ in outputs], [w.pid for w in workers]


def _fingerprint(out):
    lines = [line for line in out.splitlines() if line.startswith("weights fingerprint ")]
    assert len(lines) == 1, out[-2000:]
    return lines[0].split()[2]


@pytest.mark.slow
@pytest.mark.parametrize("gin_file,steps", [("demo.gin", 2), ("demo_perturbgan.gin", 6)])
def test_two_local_workers_train_one_run_to_the_same_weights_and_only_the_chief_writes(gin_file, steps, tmp_path):
    import json
    model_dir = tmp_path / "run"
    outputs, pids = _two_workers(model_dir, gin_file)
    for out in outputs:
        assert f"step {steps}/{steps}" in out
    # Synchronous steps: the same losses, and the same weights at the end.
    last_step = [[line for line in out.splitlines() if line.startswith(f"step {steps}/{steps}")][0].split("|")[1]
                 for out in outputs]
    assert last_step[0] == last_step[1]
    assert _fingerprint(outputs[0]) == _fingerprint(outputs[1])
    assert "this worker writes nothing there" in outputs[1]
    # TensorBoard names each event file after the process that wrote it: all are worker 0's.
    events = [name for _, _, names in os.walk(model_dir) for name in names if name.startswith("events.")]
    assert events and all(f".{pids[0]}." in name for name in events), (pids, events)
    with open(model_dir / "eval_test.json") as f:
        assert json.load(f)["num_images"] == 8
    assert sorted(os.listdir(model_dir / "checkpoints"))[-1].startswith(f"ckpt-{steps}")
    if gin_file != "demo.gin":
        return
    # The chief's checkpoint goes on training on one machine (another strategy is not another config).
    result = subprocess.run(
        [sys.executable, "-m", "tfseg.train", f"--gin_file=gin_configs/{gin_file}", "--smoke",
         f"--model_dir={model_dir}", "--gin_bindings=tfseg.training.TrainConfig.num_steps=3"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {model_dir}/checkpoints/ckpt-2 at step 2" in result.stdout
    assert "step 3/3" in result.stdout and "weights fingerprint" not in result.stdout  # one machine


def test_training_data_is_split_between_workers_by_example_unless_the_source_shards_itself():
    import tensorflow as tf
    from tfseg.training import strategy
    policy = lambda ds: ds.options().experimental_distribute.auto_shard_policy  # noqa: E731
    generated = strategy.shard_by_example_unless_set(tf.data.Dataset.range(8).batch(2))
    assert policy(generated) == tf.data.experimental.AutoShardPolicy.DATA
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    sharded_by_source = tf.data.Dataset.range(8).with_options(options).map(lambda x: x)
    assert policy(strategy.shard_by_example_unless_set(sharded_by_source)) == tf.data.experimental.AutoShardPolicy.OFF


def test_weights_fingerprint_changes_with_any_weight_and_is_stable():
    import tensorflow as tf
    from tfseg.training import strategy
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])
    first = strategy.weights_fingerprint([a, b])
    assert first == strategy.weights_fingerprint([a, b]) and len(first) == 8
    b.assign([[3.0000002]])
    assert strategy.weights_fingerprint([a, b]) != first


def test_on_one_cpu_the_step_reads_the_plain_iterator_and_trains_as_with_the_distributed_one():
    import keras
    import numpy as np
    import tensorflow as tf

    from tfseg.training import strategy as strategy_lib

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert strategy_lib.on_one_cpu(strategy) and strategy_lib.on_one_cpu(tf.distribute.get_strategy())
    data = tf.data.Dataset.from_tensor_slices(tf.random.stateless_uniform([12, 3], [1, 2])).batch(4)
    plain = strategy_lib.distributed_iterator(strategy, data)
    assert isinstance(plain, tf.data.Iterator)  # not a DistributedIterator

    def train(iterator):
        """Three SGD steps of a Dense layer through `strategy.run`, as the trainer's step."""
        with strategy.scope():
            keras.utils.set_random_seed(0)
            layer = keras.layers.Dense(2)
            layer.build((None, 3))
            optimizer = keras.optimizers.SGD(0.1)
            optimizer.build(layer.trainable_variables)

        @tf.function
        def step(iterator):
            def replica_fn(x):
                with tf.GradientTape() as tape:
                    loss = tf.nn.compute_average_loss(tf.reduce_sum(tf.square(layer(x) - 1.0), axis=1))
                optimizer.apply(tape.gradient(loss, layer.trainable_variables), layer.trainable_variables)
                return loss
            return strategy.reduce("SUM", strategy.run(replica_fn, args=(next(iterator),)), axis=None)

        losses = [float(step(iterator)) for _ in range(3)]
        return losses, [v.numpy() for v in layer.trainable_variables]

    losses, weights = train(plain)
    reference_losses, reference_weights = train(iter(strategy.experimental_distribute_dataset(data)))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)
    for w, r in zip(weights, reference_weights):
        np.testing.assert_allclose(w, r, rtol=1e-6)

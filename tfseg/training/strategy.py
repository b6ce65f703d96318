"""tf.distribute strategy, XLA and graph-optimisation choices, all by gin."""
import contextlib
import zlib

import gin
import numpy as np
import tensorflow as tf

from tfseg.errors import ConfigError

STRATEGIES = ("mirrored", "one_device", "multi_worker", "tpu")


@gin.configurable(module="tfseg.training")
def make_strategy(name="mirrored", device=None):
    """Returns the distribution strategy.

    Args:
        name: "mirrored" (all local GPUs, else the CPU), "one_device", "multi_worker"
            (MultiWorkerMirroredStrategy; reads the cluster from the TF_CONFIG environment variable),
            or "tpu" (TPUStrategy).
        device: for "one_device", e.g. "/gpu:0"; default: the first GPU, else the CPU. For "tpu",
            the TPU's name or grpc:// address; default "local" (the TPU of a TPU VM).
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        if device is None:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(device or "local")
    raise ValueError(f"unknown strategy {name!r}; set tfseg.training.make_strategy.name to one of "
                     f"{', '.join(STRATEGIES)}")


def _tpu_strategy(tpu):
    """TPUStrategy on `tpu`, connected and initialised as TensorFlow's TPU guide does it (a TPU VM's
    own TPU needs no connection). Never run here: no TPU reaches this project."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        first_line = (getattr(e, "message", None) or str(e)).splitlines()[0].split(". ")[0]
        raise ConfigError(f"tfseg.training.make_strategy.name = 'tpu', but no TPU {tpu!r} could be used "
                          f"({first_line}). On a TPU VM leave tfseg.training.make_strategy.device unset; for "
                          "another TPU bind it to its name or grpc:// address; without a TPU choose "
                          f"another strategy ({', '.join(STRATEGIES[:3])}).") from e
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this process writes the run's files (checkpoints, summaries, scores).

    One writer per run: in a multi-worker cluster the "chief" task, or worker 0 when the cluster
    has no chief (TensorFlow's multi-worker rule); every single-machine strategy is its own chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def num_workers(strategy):
    """How many machines (processes) train together: 1 for every single-machine strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def shard_by_example_unless_set(dataset):
    """Sets tf.data's auto-sharding to DATA (each worker keeps every N-th example) unless the source
    chose a policy itself (the TFRecord source shards by file and turns it OFF). AUTO would reach the
    same split for the generator-backed sources only after failing to find files, with a warning."""
    if dataset.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def on_one_cpu(strategy):
    """Whether `strategy` trains one replica, on a CPU, in one process."""
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return not tf.config.list_logical_devices("GPU")  # the default strategy: the default device
    devices = strategy.extended.worker_devices
    return (strategy.num_replicas_in_sync == 1 and num_workers(strategy) == 1
            and all(tf.DeviceSpec.from_string(d).device_type == "CPU" for d in devices))


def distributed_iterator(strategy, dataset):
    """An iterator over `dataset`'s global batches for a step that calls `strategy.run`.

    On one CPU replica it is the dataset's plain iterator (`strategy.run` takes its tensors as they
    are): the distributed iterator (`experimental_distribute_dataset`) there nearly doubled the time
    of every training step on a 2-core CPU (ReDO demo, TF 2.21: 1.81 vs 0.93 s per step, the same
    kernels each about twice as slow; `tools/benchmark.py`). Elsewhere, the distributed iterator,
    which splits batches between replicas and prefetches to accelerators.
    """
    if on_one_cpu(strategy):
        return iter(dataset)
    return iter(strategy.experimental_distribute_dataset(dataset))


def weights_fingerprint(variables):
    """CRC-32 of the variables' bytes, in order, as 8 hex digits.

    Synchronous training ends with the same weights on every worker; a multi-worker run prints this
    at its end so that one line per worker's log shows they agree.
    """
    crc = 0
    for variable in variables:
        crc = zlib.crc32(np.ascontiguousarray(tf.convert_to_tensor(variable).numpy()).tobytes(), crc)
    return f"{crc:08x}"


def resolve_jit_compile(jit_compile):
    """`auto|true|false` -> bool. auto: XLA on GPU/TPU only.

    On our 2-core CPU the XLA-compiled ReDO step is slower than TF's oneDNN kernels
    (`python tools/benchmark.py --gin_file=gin_configs/demo.gin`: 131 vs 161 training img/s),
    hence off there.
    """
    value = str(jit_compile).lower()
    if value == "auto":
        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"jit_compile must be auto, true or false, got {jit_compile!r} "
                     "(gin binding tfseg.training.TrainConfig.jit_compile)")


@contextlib.contextmanager
def graph_optimization(enabled):
    """Grappler on (`enabled`) or off for the functions first run inside; the setting before is restored.

    TensorFlow's switch is process-wide (`tf.config.optimizer`), hence a context, so an in-process
    smoke run does not leave it off for what runs next.
    """
    if enabled:
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})

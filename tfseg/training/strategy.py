"""tf.distribute strategy, XLA and graph-optimisation choices, all by gin."""
import contextlib

import gin
import tensorflow as tf

STRATEGIES = ("mirrored", "one_device", "multi_worker")


@gin.configurable(module="tfseg.training")
def make_strategy(name="mirrored", device=None):
    """Returns the distribution strategy.

    Args:
        name: "mirrored" (all local GPUs, else the CPU), "one_device", or "multi_worker"
            (MultiWorkerMirroredStrategy; reads the cluster from the TF_CONFIG environment variable).
        device: for "one_device", e.g. "/gpu:0"; default: the first GPU, else the CPU.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        if device is None:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; set tfseg.training.make_strategy.name to one of "
                     f"{', '.join(STRATEGIES)}")


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

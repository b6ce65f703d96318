"""Speed of a config: training and inference images/s with XLA on and off.

    python tools/benchmark.py --gin_file=gin_configs/demo.gin [--repeats=5 --steps=20]

Synthetic inputs of the config's shape feed the exact training step the trainer runs
(`tfseg.training.trainer.make_train_step`), so the figures measure compute, not data loading.
Each figure is the median over `--repeats` timings of `--steps` steps, after warm-up (tracing
and XLA compilation are excluded). Training images/s counts every image a step consumes.
"""
import statistics
import sys
import time

from absl import app, flags

flags.DEFINE_multi_string("gin_file", [], "gin config(s) to measure.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_integer("steps", 20, "Steps per timing.")
flags.DEFINE_integer("repeats", 5, "Timings per figure; the median is reported.")
flags.DEFINE_integer("warmup", 3, "Untimed steps before timing (compilation).")
flags.DEFINE_integer("inference_batch", 64, "Batch size of the mask-network inference timing.")
flags.DEFINE_list("xla", ["false", "true"], "XLA settings to measure.")
flags.DEFINE_bool("savedmodel", True, "Also export the (untrained) model and time its serving signatures.")
FLAGS = flags.FLAGS


def _median_rate(fn, images_per_call):
    for _ in range(FLAGS.warmup):
        fn()
    rates = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            out = fn()
        _block(out)
        rates.append(FLAGS.steps * images_per_call / (time.perf_counter() - start))
    return statistics.median(rates)


def _block(out):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for value in tf.nest.flatten(out):
        value.numpy()


def measure(train_config, jit_compile, strategy):
    """Training images/s per stage, inference images/s and the model, for one XLA setting.

    Returns:
        `({stage: (train images/s, images per step)}, inference images/s, model)`. A stage that
        trains on generated images counts the batch it draws per step.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfseg.training import trainer  # pylint: disable=import-outside-toplevel

    r, b = train_config.resolution, train_config.batch_size
    with strategy.scope():
        model = trainer.build_method(train_config)
        model.build_for_training(b)
    batch = {"image": tf.random.uniform([b, r, r, 3], -1.0, 1.0, seed=1)}
    iterator = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))
    step = tf.Variable(0, dtype=tf.int64)
    stages = {}
    for stage, _, _ in trainer.stage_schedule(model, train_config):
        model.begin_stage(stage.name)
        step_fn = trainer.make_train_step(model, strategy, jit_compile, stage.phases,
                                          stage.batches_per_step)
        per_step = b * max(1, stage.batches_per_step)
        stages[stage.name] = (_median_rate(lambda: step_fn(iterator, step), per_step), per_step)

    images = tf.random.uniform([FLAGS.inference_batch, r, r, 3], -1.0, 1.0, seed=2)
    segment = tf.function(model.segment, jit_compile=jit_compile)
    infer_rate = _median_rate(lambda: segment(images), FLAGS.inference_batch)
    return stages, infer_rate, model


def measure_savedmodel(model, train_config):
    """Images/s of the exported SavedModel's two signatures at batch 1 and 32."""
    import tempfile  # pylint: disable=import-outside-toplevel
    from tfseg.serving import benchmark as serving_benchmark, export_module  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as folder:
        path = export_module.export(export_module.serving_functions_from_run(model, train_config), folder)
        return serving_benchmark.savedmodel_rates(path, train_config.resolution)


def main(argv):
    del argv
    from tfseg import config  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib, trainer  # pylint: disable=import-outside-toplevel

    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    train_config = trainer.TrainConfig()
    strategy = strategy_lib.make_strategy()
    rows = {}
    for setting in FLAGS.xla:
        jit = strategy_lib.resolve_jit_compile(setting)
        rows[jit] = measure(train_config, jit, strategy)
    print(f"\nconfig: {', '.join(FLAGS.gin_file)} | resolution {train_config.resolution} | "
          f"batch {train_config.batch_size} | replicas {strategy.num_replicas_in_sync} | "
          f"median of {FLAGS.repeats} x {FLAGS.steps} steps")
    print(f"{'XLA':<6}{'stage':<12}{'train img/s':>14}{'train steps/s':>16}{'inference img/s':>18}")
    for jit, (stages, infer_rate, _) in rows.items():
        for name, (train_rate, per_step) in stages.items():
            print(f"{'on' if jit else 'off':<6}{name:<12}{train_rate:>14.1f}"
                  f"{train_rate / per_step:>16.2f}{infer_rate:>18.1f}")
    if True in rows and False in rows:
        for name in rows[False][0]:
            print(f"XLA on / off, {name}: training x{rows[True][0][name][0] / rows[False][0][name][0]:.2f}")
        print(f"XLA on / off: inference x{rows[True][1] / rows[False][1]:.2f}")
    if FLAGS.savedmodel:
        model = next(iter(rows.values()))[2]
        rates = measure_savedmodel(model, train_config)
        print(f"\nSavedModel (serving signatures, images/s):")
        print(f"{'signature':<22}{'batch 1':>10}{'batch 32':>10}")
        for name, key in (("serving_default bytes", "bytes"), ("serve_image_tensor", "tensor")):
            print(f"{name:<22}{rates[f'savedmodel_{key}_b1']:>10.1f}{rates[f'savedmodel_{key}_b32']:>10.1f}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))

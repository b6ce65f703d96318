"""Speed of a config: training and inference images/s with XLA on and off; input pipeline images/s.

    python tools/benchmark.py --gin_file=gin_configs/demo.gin [--repeats=5 --steps=20]
    python tools/benchmark.py --input_pipeline --image_dir=PHOTOS --lsun_lmdb=LSUN_DIR \
        --tfrecord_pattern='SHARDS/{split}-*.tfrecord' [--gin_file=gin_configs/lsun_horse.gin --xla=false --nosavedmodel]

Synthetic inputs of the config's shape feed the exact training step the trainer runs
(`tfseg.training.train_step.make_train_step`), so the figures measure compute, not data loading.
Each figure is the median over `--repeats` timings of `--steps` steps, after warm-up (tracing
and XLA compilation are excluded). Training images/s counts every image a step consumes. The step
timed is the one most iterations run: a lazy regulariser that runs as a phase of its own every n-th
step (Labels4Free's R1) is left out.

--paper_shapes times the papers' workloads (`PAPER_WORKLOADS`), each with XLA off and on in a
process of its own, and prints seconds per step, images/s and the process's peak resident memory
(which includes TensorFlow itself, about 1 GiB). Add --workloads=NAME,... to choose some; any
--gin_file / --gin_bindings given apply after each workload's own (the tests shrink them that way).

--profile adds, per stage, where a step's time goes: TensorFlow's profiler over --profile_steps
steps, kernel time summed by op type and by network (forward and backward apart), the largest
first (tools/op_profile.py); XLA off only, as XLA's fused kernels carry no op names.

--input_pipeline times `tfseg.data.make_dataset("train", ...)` alone, no model, on each source
given: a photo folder (--image_dir), an LSUN LMDB (--lsun_lmdb), TFRecord shards
(--tfrecord_pattern), and with --input_gin_source the
source the gin config binds (any source, e.g. tfseg.data.tfrecord_source with its file_pattern).
With --gin_file the config's make_dataset bindings (resize, crops) apply, and the images/s each
training stage consumes is printed beside the input rates: an input slower than that starves
training.
"""
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import op_profile  # tools/, beside this file

FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags (only when run as a script, so tests can import this module next to
    tfseg.train, whose --gin_file flag would clash)."""
    from tfseg import cli_flags  # pylint: disable=import-outside-toplevel
    flags.DEFINE_multi_string("gin_file", [], "gin config(s) to measure.")
    cli_flags.define_gin_bindings()
    flags.DEFINE_integer("steps", 20, "Steps per timing.")
    flags.DEFINE_integer("repeats", 5, "Timings per figure; the median is reported.")
    flags.DEFINE_integer("warmup", 3, "Untimed steps before timing (compilation).")
    flags.DEFINE_integer("inference_batch", 64, "Batch size of the mask-network inference timing (0: the "
                         "config's training batch size).")
    flags.DEFINE_list("xla", ["false", "true"], "XLA settings to measure.")
    flags.DEFINE_bool("savedmodel", True, "Also export the (untrained) model and time its serving signatures.")
    flags.DEFINE_bool("paper_shapes", False, "Time the papers' workloads (PAPER_WORKLOADS), one process "
                      "per workload and XLA setting, with peak memory.")
    flags.DEFINE_list("workloads", None, "With --paper_shapes: only these workloads.")
    flags.DEFINE_bool("profile", False, "Also trace --profile_steps steps of each stage with TensorFlow's "
                      "profiler and print where their time goes: kernel time by op type and by network "
                      "(tools/op_profile.py). XLA off only (XLA's fused kernels carry no op names). With "
                      "--paper_shapes, for every workload.")
    flags.DEFINE_integer("profile_steps", 1, "Steps traced per stage by --profile.")
    flags.DEFINE_bool("input_pipeline", False, "Time the input pipeline alone on --image_dir, --lsun_lmdb "
                      "and/or the gin-bound source (--input_gin_source). Without --gin_file, only that.")
    flags.DEFINE_string("image_dir", None, "A folder of photos for --input_pipeline.")
    flags.DEFINE_string("lsun_lmdb", None, "An unzipped LSUN archive (folder with data.mdb) for --input_pipeline.")
    flags.DEFINE_string("tfrecord_pattern", None, "TFRecord shards written by tools/prepare_data.py for "
                        "--input_pipeline, e.g. 'data/photos_tfr/{split}-*.tfrecord'.")
    flags.DEFINE_bool("input_gin_source", False, "Also time the source bound to tfseg.data.make_dataset.source "
                      "by --gin_file / --gin_bindings.")
    flags.DEFINE_integer("input_batch", 32, "Batch size of the input pipeline timing.")
    flags.DEFINE_integer("input_resolution", 128, "Resolution of the input pipeline timing.")
    flags.DEFINE_integer("input_batches", 20, "Batches per input pipeline timing.")
    flags.DEFINE_integer("input_repeats", 5, "Input pipeline timings per source; the median is reported.")
    flags.DEFINE_integer("input_warmup", 5, "Untimed batches first (they also fill the shuffle buffer).")


#: PerturbGAN's paper configs grow progressively; a paper-shape step is timed at the final resolution.
_AT_FINAL_RESOLUTION = ["tfseg.methods.perturbgan.progressive_start = None",
                        "tfseg.training.TrainConfig.stage_steps = {'generator': 1, 'encoder': 1, 'segmenter': 1}"]

#: The papers' shapes (issue 13), `{name: (gin files, bindings, what it is)}`. Synthetic inputs; the
#: data sources the configs name are never read.
PAPER_WORKLOADS = {
    "redo_128": (["redo_flowers.gin"], [
        "tfseg.training.TrainConfig.batch_size = 25", "tfseg.methods.redo.redraw_every_region = False"],
        "ReDO at 128 px, batch 25, Flowers widths, self-attention in G and D, one region redrawn per "
        "image (as tfseg trains it by default); inference: the mask network, batch 25"),
    "redo_128_reference_work": (["redo_flowers.gin"], [
        "tfseg.training.TrainConfig.batch_size = 25", "tfseg.methods.redo.redraw_every_region = True",
        "tfseg.methods.redo.shared_encoder_trunk = False"],
        "the same with the reference's work: every region redrawn, a separate z-encoder"),
    # The iteration at the final resolution (the reference's last stage): progressive growing off.
    "perturbgan_64": (["lsun_horse.gin"], ["tfseg.training.TrainConfig.resolution = 64", *_AT_FINAL_RESOLUTION],
                      "PerturbGAN, 64 px, batch 32, 512-channel StyleGANs and critic, at the final resolution"),
    "perturbgan_128": (["lsun_horse.gin"], _AT_FINAL_RESOLUTION,
                       "PerturbGAN, 128 px, batch 32, 512-channel StyleGANs and critic, at the final resolution"),
    "labels4free_256": (["labels4free_lsun_horse.gin"], [
        "tfseg.training.TrainConfig.batch_size = 4", "tfseg.methods.labels4free.pretrained_dir = None",
        "tfseg.training.TrainConfig.stage_steps = {'stylegan2': 1, 'alpha': 1, 'segmenter': 1}"],
        "Labels4Free at 256 px, batch 4: the StyleGAN2 step, the alpha-network step, the segmenter"),
}

#: Starts each --profile section of the output (a workload's process prints them; the parent relays them).
_PROFILE_HEADING = "where the time goes:"

#: A row of the single-config table: XLA, stage, train img/s, train steps/s, inference img/s.
_ROW = re.compile(r"^(on|off)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", re.M)


def run_workload(name, jit, extra_files=(), extra_bindings=(), steps=3, repeats=1, warmup=1):
    """Runs this tool on one workload of `PAPER_WORKLOADS` with one XLA setting, in a process of its own.

    Returns:
        `({stage: (seconds per step, train images/s)}, inference images/s, peak resident memory in
        bytes, the --profile tables the process printed (empty without --profile))`.

    Raises:
        RuntimeError: the process failed; the message holds the end of its error output.
    """
    files, bindings, _ = PAPER_WORKLOADS[name]
    from tfseg import config  # pylint: disable=import-outside-toplevel
    files = [os.path.join(config.GIN_CONFIG_DIR, f) for f in files] + list(extra_files)
    bindings = list(bindings) + list(extra_bindings)
    args = [sys.executable, os.path.abspath(__file__), *[f"--gin_file={f}" for f in files],
            *[f"--gin_bindings={b}" for b in bindings], f"--xla={'true' if jit else 'false'}", "--nosavedmodel",
            "--inference_batch=0", f"--steps={steps}", f"--repeats={repeats}", f"--warmup={warmup}"]
    if FLAGS.profile:
        args += ["--profile", f"--profile_steps={FLAGS.profile_steps}"]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err)  # quiet: main() silences TensorFlow
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, error = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"workload {name} (XLA {'on' if jit else 'off'}) failed with exit code "
                           f"{process.returncode}:\n{error[-3000:]}")
    stages, inference = {}, None
    for _, stage, train_rate, steps_per_s, infer_rate in _ROW.findall(text):
        stages[stage] = (1.0 / float(steps_per_s) if float(steps_per_s) else float("inf"), float(train_rate))
        inference = float(infer_rate)
    profiles = text[text.index(_PROFILE_HEADING):].strip() if _PROFILE_HEADING in text else ""
    return stages, inference, usage.ru_maxrss * 1024, profiles  # Linux reports kilobytes


def format_paper_table(results):
    """`{(workload, XLA): (stages, inference, peak bytes, profile tables)}` -> the --paper_shapes table."""
    lines = [f"{'workload':<26}{'XLA':<5}{'stage':<12}{'s/step':>10}{'img/s':>10}{'infer img/s':>13}{'peak GiB':>10}"]
    for (name, jit), (stages, inference, peak, _) in results.items():
        for stage, (seconds, rate) in stages.items():
            lines.append(f"{name:<26}{'on' if jit else 'off':<5}{stage:<12}{seconds:>10.3f}{rate:>10.3f}"
                         f"{inference:>13.1f}{peak / 2**30:>10.2f}")
    return "\n".join(lines)


def _median_rate(fn, images_per_call, steps, repeats, warmup):
    """Median images/s over `repeats` timings of `steps` calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        _block(out)
        rates.append(steps * images_per_call / (time.perf_counter() - start))
    return statistics.median(rates)


def _block(out):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for value in tf.nest.flatten(out):
        value.numpy()


def measure(train_config, jit_compile, strategy):
    """Training images/s per stage, inference images/s and the model, for one XLA setting.

    Returns:
        `({stage: (train images/s, images per step, real images per step)}, inference images/s,
        model, {stage: --profile tables})`. A stage that trains on generated images counts the batch
        it draws per step, and reads 0 real images.
    """
    from tfseg.training import precision  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    # Graphs optimised (or not, as in a smoke run) and networks in the precision of the training run.
    with strategy_lib.graph_optimization(train_config.optimize_graphs), precision.policy(train_config.precision):
        return _measure(train_config, jit_compile, strategy)


def _measure(train_config, jit_compile, strategy):
    from tfseg.methods import base  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    from tfseg.training import loading, schedule, train_step  # pylint: disable=import-outside-toplevel

    r, b = train_config.resolution, train_config.batch_size
    with strategy.scope():
        model = loading.build_method(train_config)
        model.build_for_training(b)
    batch = {"image": tf.random.uniform([b, r, r, 3], -1.0, 1.0, seed=1)}
    iterator = strategy_lib.distributed_iterator(strategy, tf.data.Dataset.from_tensors(batch).repeat())
    step = tf.Variable(0, dtype=tf.int64)
    stages, profiles = {}, {}
    for stage, _, _ in schedule.stage_schedule(model, train_config):
        model.begin_stage(stage.name)
        # The step of most iterations: a lazy regulariser (a `Periodic` phase) is left out.
        step_fn = train_step.make_train_step(model, strategy, jit_compile, base.every_step_phases(stage.phases),
                                          stage.batches_per_step)
        per_step = stage.images_per_step(b)
        rate = _median_rate(lambda: step_fn(iterator, step), per_step, FLAGS.steps, FLAGS.repeats, FLAGS.warmup)
        stages[stage.name] = (rate, per_step, b * stage.batches_per_step)
        if FLAGS.profile:  # XLA's fused kernels carry no op names: nothing to attribute, so XLA off only
            profiles[stage.name] = _profile_tables(lambda: step_fn(iterator, step)) if not jit_compile else None

    inference_batch = FLAGS.inference_batch or b
    images = tf.random.uniform([inference_batch, r, r, 3], -1.0, 1.0, seed=2)
    segment = tf.function(model.segment, jit_compile=jit_compile)
    infer_rate = _median_rate(lambda: segment(images), inference_batch, FLAGS.steps, FLAGS.repeats,
                              FLAGS.warmup)
    return stages, infer_rate, model, profiles


def _profile_tables(fn):
    """--profile's two tables for one stage's step."""
    by_type, by_network = op_profile.profile(fn, FLAGS.profile_steps)
    return (op_profile.format_table(by_type, "op type", FLAGS.profile_steps) + "\n"
            + op_profile.format_table(by_network, "first name scope (network or layer)", FLAGS.profile_steps))


def measure_savedmodel(model, train_config):
    """Images/s of the exported SavedModel's two signatures at batch 1 and 32."""
    import tempfile  # pylint: disable=import-outside-toplevel
    from tfseg.serving import benchmark as serving_benchmark, export_module  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as folder:
        path = export_module.export(export_module.serving_functions_from_run(model, train_config), folder)
        return serving_benchmark.savedmodel_rates(path, train_config.resolution)


def input_sources(image_dir=None, lsun_lmdb=None, gin_bound=False, tfrecord_pattern=None):
    """The sources --input_pipeline times, `{row name: source}`: a photo folder, an LSUN LMDB, TFRecord
    shards, and (`gin_bound`, --input_gin_source) whatever source gin binds."""
    from tfseg.data import folder, lsun, pipeline, tfrecord  # pylint: disable=import-outside-toplevel
    sources = {}
    if image_dir:
        sources[f"photo folder {image_dir}"] = functools.partial(folder.image_folder_source, image_dir=image_dir)
    if lsun_lmdb:
        sources[f"LSUN LMDB {lsun_lmdb}"] = functools.partial(lsun.lsun_source, lmdb_dir=lsun_lmdb)
    if tfrecord_pattern:
        sources[f"TFRecord shards {tfrecord_pattern}"] = functools.partial(tfrecord.tfrecord_source,
                                                                           file_pattern=tfrecord_pattern)
    if gin_bound:
        source, _ = pipeline.bound_source()
        sources[f"gin-bound {getattr(source, '__name__', source)}"] = source
    return sources


def input_pipeline_rates(sources, batch_size=32, resolution=128, batches=20, repeats=5, warmup=5):
    """Images/s of `tfseg.data.make_dataset("train", batch_size, resolution=resolution)` alone, per source.

    Args:
        sources: `{name: source}`, e.g. from `input_sources`.
        batch_size, resolution: of the batches drawn.
        batches, repeats, warmup: each rate is the median of `repeats` timings of `batches` batches,
            after `warmup` untimed batches (the first also fills make_dataset's shuffle buffer).

    Returns:
        `{name: images/s}`.

    Raises:
        DataError: a source's configuration is unusable (e.g. a missing folder).
    """
    from tfseg.data import pipeline  # pylint: disable=import-outside-toplevel
    rates = {}
    for name, source in sources.items():
        iterator = iter(pipeline.make_dataset("train", batch_size, source=source, resolution=resolution))
        rates[name] = _median_rate(functools.partial(next, iterator), batch_size, batches, repeats, warmup)
    return rates


def format_input_table(rates, batch_size, resolution, batches, repeats, warmup):
    """The --input_pipeline table: one row per source."""
    width = max([len("source")] + [len(name) for name in rates]) + 2
    lines = [f"input pipeline: tfseg.data.make_dataset(\"train\") alone, batch {batch_size}, {resolution} px, "
             f"median of {repeats} x {batches} batches after {warmup} untimed",
             f"{'source':<{width}}{'images/s':>10}"]
    lines += [f"{name:<{width}}{rate:>10.1f}" for name, rate in rates.items()]
    return "\n".join(lines)


def format_consumption_table(rows, slowest_input):
    """Real images/s one training step consumes (batch x batches per step / step time) per stage,
    beside the slowest input pipeline's images/s; "generated" marks stages that read no real image."""
    lines = [f"\nwhat one training step consumes, beside the slowest input pipeline above "
             f"({slowest_input:.1f} images/s):",
             f"{'XLA':<6}{'stage':<12}{'s/step':>10}{'real img/s':>12}{'input / consumed':>18}"]
    for jit, (stages, _, _, _) in rows.items():
        for name, (train_rate, per_step, real_per_step) in stages.items():
            seconds = per_step / train_rate
            consumed = real_per_step / seconds
            ratio = f"{slowest_input / consumed:.1f}x" if consumed else "generated"
            lines.append(f"{'on' if jit else 'off':<6}{name:<12}{seconds:>10.2f}{consumed:>12.2f}{ratio:>18}")
    return "\n".join(lines)


def main(argv):
    del argv
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)  # before anything imports TensorFlow: its start-up lines
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, DataError  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    from tfseg.training.train_config import TrainConfig  # pylint: disable=import-outside-toplevel

    registry.import_configurables()
    if FLAGS.paper_shapes:
        return paper_shapes_main()
    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    input_rates = {}
    if FLAGS.input_pipeline:
        try:
            sources = input_sources(FLAGS.image_dir, FLAGS.lsun_lmdb, FLAGS.input_gin_source, FLAGS.tfrecord_pattern)
            if not sources:
                raise DataError("--input_pipeline needs a source: --image_dir, --lsun_lmdb, --tfrecord_pattern "
                                "or --input_gin_source.")
            input_rates = input_pipeline_rates(sources, FLAGS.input_batch, FLAGS.input_resolution,
                                               FLAGS.input_batches, FLAGS.input_repeats, FLAGS.input_warmup)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n" + format_input_table(input_rates, FLAGS.input_batch, FLAGS.input_resolution,
                                        FLAGS.input_batches, FLAGS.input_repeats, FLAGS.input_warmup),
              flush=True)
        if not FLAGS.gin_file:
            return 0
    run_config = TrainConfig()
    strategy = strategy_lib.make_strategy()
    rows = {}
    for setting in FLAGS.xla:
        jit = strategy_lib.resolve_jit_compile(setting)
        rows[jit] = measure(run_config, jit, strategy)
    print(f"\nconfig: {', '.join(FLAGS.gin_file)} | resolution {run_config.resolution} | "
          f"batch {run_config.batch_size} | replicas {strategy.num_replicas_in_sync} | "
          f"median of {FLAGS.repeats} x {FLAGS.steps} steps")
    print(f"{'XLA':<6}{'stage':<12}{'train img/s':>14}{'train steps/s':>16}{'inference img/s':>18}")
    for jit, (stages, infer_rate, _, _) in rows.items():
        for name, (train_rate, per_step, _) in stages.items():
            # Three decimals: a paper-shape step reads 32 images in minutes (0.148 img/s, not 0.1).
            print(f"{'on' if jit else 'off':<6}{name:<12}{train_rate:>14.3f}"
                  f"{train_rate / per_step:>16.5f}{infer_rate:>18.1f}")
    if True in rows and False in rows:
        for name in rows[False][0]:
            print(f"XLA on / off, {name}: training x{rows[True][0][name][0] / rows[False][0][name][0]:.2f}")
        print(f"XLA on / off: inference x{rows[True][1] / rows[False][1]:.2f}")
    if input_rates:
        print(format_consumption_table(rows, min(input_rates.values())))
    for jit, (_, _, _, profiles) in rows.items():
        for name, tables in profiles.items():
            if tables is None:
                print(f"\n{_PROFILE_HEADING} {name}, XLA on: not traced (XLA's fused kernels carry no op or "
                      "network names; read the XLA off tables)")
                continue
            print(f"\n{_PROFILE_HEADING} {name}, XLA off ({FLAGS.profile_steps} step(s) "
                  f"traced; kernel time summed over threads):\n{tables}")
    if FLAGS.savedmodel:
        model = next(iter(rows.values()))[2]
        rates = measure_savedmodel(model, run_config)
        print(f"\nSavedModel (serving signatures, images/s):")
        print(f"{'signature':<22}{'batch 1':>10}{'batch 32':>10}")
        for name, key in (("serving_default bytes", "bytes"), ("serve_image_tensor", "tensor")):
            print(f"{name:<22}{rates[f'savedmodel_{key}_b1']:>10.1f}{rates[f'savedmodel_{key}_b32']:>10.1f}")
    return 0


def chosen_workloads(names):
    """The --workloads list checked against `PAPER_WORKLOADS` (None: all of them, in order)."""
    if not names:
        return list(PAPER_WORKLOADS)
    unknown = [name for name in names if name not in PAPER_WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; --workloads takes "
                         f"{', '.join(PAPER_WORKLOADS)}")
    return list(names)


def paper_shapes_main():
    """--paper_shapes: every chosen workload with every --xla setting, one process each."""
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    try:
        names = chosen_workloads(FLAGS.workloads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # A paper-shape step takes seconds to minutes on a CPU: fewer timed steps unless asked for.
    counts = [FLAGS[flag].value if FLAGS[flag].present else default
              for flag, default in (("steps", 3), ("repeats", 1), ("warmup", 1))]
    results = {}
    for name in names:
        print(f"{name}: {PAPER_WORKLOADS[name][2]}", flush=True)
        for setting in FLAGS.xla:
            jit = strategy_lib.resolve_jit_compile(setting)
            try:
                results[(name, jit)] = run_workload(name, jit, FLAGS.gin_file, FLAGS.gin_bindings, *counts)
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
    print(f"\npaper shapes: median of {counts[1]} x {counts[0]} steps after {counts[2]} untimed; "
          "peak = the process's peak resident memory, TensorFlow included")
    print(format_paper_table(results))
    for (name, jit), result in results.items():
        if result[3]:
            print(f"\n{name}, XLA {'on' if jit else 'off'}:\n{result[3]}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))

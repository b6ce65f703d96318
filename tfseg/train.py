"""Train a tfseg model: `python -m tfseg.train --gin_file=gin_configs/demo.gin [--model_dir=runs/demo]`.

Flags go to gin; gin goes to the trainer. Re-running the same command resumes from the last
checkpoint in --model_dir. Bad bindings, missing data and unwritable folders fail here, before
training, with the fix in the message.
"""
import contextlib
import os
import shutil
import sys
from typing import NamedTuple, Optional

from absl import flags

from tfseg import cli_flags

flags.DEFINE_multi_string("gin_file", [], "gin config file(s), e.g. gin_configs/demo.gin. Repeatable; later files win.")
cli_flags.define_gin_bindings()
flags.DEFINE_string("model_dir", None, "Run directory for checkpoints, TensorBoard logs and results. "
                    "Default: runs/<name of the first gin file>.")
flags.DEFINE_bool("smoke", False, "Shrink the config to a seconds-long run on fake data "
                  "(parses gin_configs/smoke.gin after --gin_file). For checking a config or an install.")
flags.DEFINE_bool("dry_run", False, "Resolve the config, check data and model_dir, print the "
                  "config and exit without training.")
FLAGS = flags.FLAGS


def default_model_dir(gin_files):
    """runs/<stem of the first gin file> (runs/default without one)."""
    stem = os.path.splitext(os.path.basename(gin_files[0]))[0] if gin_files else "default"
    return os.path.join("runs", stem)


def _step_reads(stage, batch_size):
    """What one step of `stage` reads, for --dry_run. A step that reads several batches says so: ReDO
    gives each phase a batch of its own, progressive growing joins them into one larger batch, and a
    bare "batch 64" for ReDO's batch 32 read as a misconfigured batch size."""
    if stage.batches_per_step > 1:
        return (f"{stage.images_per_step(batch_size)} images a step "
                f"({stage.batches_per_step} batches of {batch_size})")
    return f"batch {batch_size}"


class _Prepared(NamedTuple):
    """What `_prepare` resolved before training: the config, the strategy (None in a dry run) and
    the checks a dry run reports instead of failing on."""
    train_config: object
    strategy: object
    data_info: object
    data_problem: Optional[Exception]
    clash: Optional[Exception]
    schedule: Optional[list]


def main(argv):
    del argv
    # Imports after flag parsing so that --help is quick.
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)
    from tfseg import config  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, DataError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.data import decode  # pylint: disable=import-outside-toplevel

    # Counts of skipped files are per run, also when one process runs several (tests, notebooks).
    decode.reset_skipped_files()
    model_dir = FLAGS.model_dir or default_model_dir(FLAGS.gin_file)
    try:
        prepared = _prepare(model_dir)
    except (ConfigError, DataError, RunDirError) as err:
        print(f"error: {config.without_gin_context(err)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:  # e.g. a required gin parameter left unset
        print(f"error: the gin config does not resolve: {config.without_gin_context(err)}", file=sys.stderr)
        return 2
    if FLAGS.dry_run:
        _print_dry_run(prepared, model_dir)
        return 0
    return _train(prepared, model_dir)


def _prepare(model_dir):
    """Parses the config and checks its bindings, the data and model_dir, before anything trains.

    Raises:
        ConfigError, DataError, RunDirError (a dry run keeps the data and model_dir problems to report).
    """
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, DataError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.data import pipeline  # pylint: disable=import-outside-toplevel
    from tfseg.training import loading, run_dir, schedule, train_config  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    import gin  # pylint: disable=import-outside-toplevel

    if not FLAGS.gin_file:
        raise ConfigError("no --gin_file given. Start with "
                          "--gin_file=gin_configs/demo.gin (ReDO on the embedded data set).")
    gin_files = list(FLAGS.gin_file) + ([config.SMOKE_CONFIG] if FLAGS.smoke else [])
    registry.import_configurables()
    config.parse(gin_files, FLAGS.gin_bindings)
    config.check_numeric_bindings()
    cfg = train_config.TrainConfig()
    loading.method_settings(cfg)  # the method's own bindings, before anything is built
    # Before any TensorFlow op: a multi-worker strategy configures collective ops, which
    # TensorFlow accepts only at program start-up.
    strategy = None if FLAGS.dry_run else strategy_lib.make_strategy()
    data_info, data_problem = _unless_dry_run(pipeline.validate_data_config, DataError)
    _, clash = _unless_dry_run(lambda: run_dir.check_config_fits(model_dir, gin.config_str()), RunDirError)
    stages = None
    if FLAGS.dry_run:
        # Constructing the method (no weights yet) checks its bindings and stage budgets.
        stages = schedule.stage_schedule(loading.build_method(cfg), cfg)
    else:
        config.prepare_model_dir(model_dir)
    return _Prepared(cfg, strategy, data_info, data_problem, clash, stages)


def _unless_dry_run(check, error):
    """`(check(), None)`; when it raises `error`, a real run raises it and a dry run returns
    `(None, the error)` to report it and still show the resolved config."""
    try:
        return check(), None
    except error as err:
        if not FLAGS.dry_run:
            raise
        return None, err


def _print_dry_run(prepared, model_dir):
    """The resolved config, the data, model_dir and the stage schedule, and what a real run would stop on."""
    import gin  # pylint: disable=import-outside-toplevel
    from tfseg.data import pipeline  # pylint: disable=import-outside-toplevel
    print(gin.config_str())
    if prepared.data_info is not None:
        print("\n".join("# " + line for line in pipeline.format_data_summary(prepared.data_info).splitlines()))
    print(f"# model_dir: {model_dir}")
    print("# stages:")
    for stage, start, end in prepared.schedule:
        print(f"#   {stage.name}: steps {start + 1}-{end}, {_step_reads(stage, prepared.train_config.batch_size)}"
              + (f", {stage.note}" if stage.note else ""))
    if prepared.clash is not None:
        print("# model_dir clash (a real run stops here): " + str(prepared.clash).replace("\n", "\n# "))
    if prepared.data_problem is not None:
        print(f"# data NOT ready (a real run stops here): {prepared.data_problem}")
    if prepared.data_problem is not None or prepared.clash is not None:
        print("# dry run: config resolved; not training.")
    else:
        print("# dry run: config resolved, data found; not training.")


def _train(prepared, model_dir):
    """Trains in `model_dir` (locked by the chief); the process's exit code."""
    from tfseg.errors import RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.training import nonfinite, signals  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
    chief = strategy_lib.is_chief(prepared.strategy)
    try:
        _train_locked(prepared, model_dir, chief)
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except signals.Stopped as stopped:
        return stopped.exit_code
    except nonfinite.Diverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _train_locked(prepared, model_dir, chief):
    """Holds model_dir's lock (the chief; the other workers of a cluster neither lock nor write it),
    saves the config and runs the trainer."""
    import gin  # pylint: disable=import-outside-toplevel
    from tfseg import config  # pylint: disable=import-outside-toplevel
    from tfseg.data import pipeline  # pylint: disable=import-outside-toplevel
    from tfseg.training import run_dir, trainer  # pylint: disable=import-outside-toplevel
    with run_dir.Lock(model_dir) if chief else contextlib.nullcontext():
        run_dir.check_config_fits(model_dir, gin.config_str())  # again, now that we hold the lock
        if chief:
            config.save_config(model_dir)
        print(f"training in {model_dir} (TensorBoard: tensorboard --logdir "
              f"{os.path.dirname(model_dir) or model_dir})" + ("" if chief else "; this worker writes nothing there"))
        print(pipeline.format_data_summary(prepared.data_info))
        job = trainer.Trainer(model_dir, prepared.train_config, strategy=prepared.strategy,
                              data_info=prepared.data_info)
        try:
            job.train()
        finally:
            if not chief:
                shutil.rmtree(job.write_dir, ignore_errors=True)
        job.write_operative_config()  # again: evaluation may have called more configurables


def run():
    """Console-script entry point (`tfseg-train`)."""
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.run_entry_point(main, __name__)


if __name__ == "__main__":
    run()

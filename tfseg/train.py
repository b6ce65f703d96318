"""Train a tfseg model: `python -m tfseg.train --gin_file=gin_configs/demo.gin [--model_dir=runs/demo]`.

Flags go to gin; gin goes to the trainer. Re-running the same command resumes from the last
checkpoint in --model_dir. Bad bindings, missing data and unwritable folders fail here, before
training, with the fix in the message.
"""
import contextlib
import os
import shutil
import sys

from absl import flags

flags.DEFINE_multi_string("gin_file", [], "gin config file(s), e.g. gin_configs/demo.gin. Repeatable; later files win.")
# tfseg.export defines the same flag; a process that imports both (the tests) shares one definition.
if "gin_bindings" not in flags.FLAGS:
    flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings, e.g. "
                              "--gin_bindings='tfseg.training.TrainConfig.num_steps=100'. Repeatable; win over "
                              "files.")
flags.DEFINE_alias("gin_param", "gin_bindings")
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


def main(argv):
    del argv
    # Imports after flag parsing so that --help is quick.
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)
    import gin  # pylint: disable=import-outside-toplevel
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    from tfseg.errors import ConfigError, DataError, RunDirError  # pylint: disable=import-outside-toplevel
    from tfseg.data import decode, pipeline  # pylint: disable=import-outside-toplevel
    from tfseg.training import nonfinite, run_dir, signals, trainer  # pylint: disable=import-outside-toplevel
    from tfseg.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel

    # Counts of skipped files are per run, also when one process runs several (tests, notebooks).
    decode.reset_skipped_files()
    model_dir = FLAGS.model_dir or default_model_dir(FLAGS.gin_file)
    try:
        if not FLAGS.gin_file:
            raise ConfigError("no --gin_file given. Start with "
                              "--gin_file=gin_configs/demo.gin (ReDO on the embedded data set).")
        gin_files = list(FLAGS.gin_file) + ([config.SMOKE_CONFIG] if FLAGS.smoke else [])
        registry.import_configurables()
        config.parse(gin_files, FLAGS.gin_bindings)
        config.check_numeric_bindings()
        train_config = trainer.TrainConfig()
        trainer.method_settings(train_config)  # the method's own bindings, before anything is built
        # Before any TensorFlow op: a multi-worker strategy configures collective ops, which
        # TensorFlow accepts only at program start-up.
        strategy = None if FLAGS.dry_run else strategy_lib.make_strategy()
        data_problem, data_info = None, None
        try:
            data_info = pipeline.validate_data_config()
        except DataError as err:
            if not FLAGS.dry_run:
                raise
            data_problem = err  # a dry run reports it and still shows the resolved config
        clash = None
        try:
            run_dir.check_config_fits(model_dir, gin.config_str())
        except RunDirError as err:
            if not FLAGS.dry_run:
                raise
            clash = err
        if FLAGS.dry_run:
            # Constructing the method (no weights yet) checks its bindings and stage budgets.
            schedule = trainer.stage_schedule(trainer.build_method(train_config), train_config)
        else:
            config.prepare_model_dir(model_dir)
    except (ConfigError, DataError, RunDirError) as err:
        print(f"error: {config.without_gin_context(err)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:  # e.g. a required gin parameter left unset
        print(f"error: the gin config does not resolve: {config.without_gin_context(err)}", file=sys.stderr)
        return 2
    if FLAGS.dry_run:
        print(gin.config_str())
        if data_info is not None:
            print("\n".join("# " + line for line in pipeline.format_data_summary(data_info).splitlines()))
        print(f"# model_dir: {model_dir}")
        print("# stages:")
        for stage, start, end in schedule:
            print(f"#   {stage.name}: steps {start + 1}-{end}, {_step_reads(stage, train_config.batch_size)}"
                  + (f", {stage.note}" if stage.note else ""))
        if clash is not None:
            print("# model_dir clash (a real run stops here): " + str(clash).replace("\n", "\n# "))
        if data_problem is not None:
            print(f"# data NOT ready (a real run stops here): {data_problem}")
        if data_problem is not None or clash is not None:
            print("# dry run: config resolved; not training.")
        else:
            print("# dry run: config resolved, data found; not training.")
        return 0
    chief = strategy_lib.is_chief(strategy)
    try:
        # The other workers of a cluster neither lock nor write model_dir: the chief does.
        with run_dir.Lock(model_dir) if chief else contextlib.nullcontext():
            run_dir.check_config_fits(model_dir, gin.config_str())  # again, now that we hold the lock
            if chief:
                config.save_config(model_dir)
            print(f"training in {model_dir} (TensorBoard: tensorboard --logdir "
                  f"{os.path.dirname(model_dir) or model_dir})" + ("" if chief else "; this worker writes nothing there"))
            print(pipeline.format_data_summary(data_info))
            job = trainer.Trainer(model_dir, train_config, strategy=strategy, data_info=data_info)
            try:
                job.train()
            finally:
                if not chief:
                    shutil.rmtree(job.write_dir, ignore_errors=True)
            job.write_operative_config()  # again: evaluation may have called more configurables
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except signals.Stopped as stopped:
        return stopped.exit_code
    except nonfinite.Diverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def run():
    """Console-script entry point (`tfseg-train`)."""
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.run_entry_point(main, __name__)


if __name__ == "__main__":
    run()

"""Command-line flags shared by tfseg's commands (train, evaluate, export, predict).

Only absl here, so `--help` stays quick.
"""
from absl import flags

GIN_BINDINGS_HELP = (
    "Extra gin bindings, repeatable; they win over the config files (tfseg.train: the --gin_file(s); "
    "tfseg.evaluate, export and predict with --model_dir: the run's config.gin). E.g. "
    "--gin_bindings='tfseg.training.TrainConfig.num_steps=100' to train; for an existing run, a data "
    "folder that moved, or \"tfseg.methods.redo.spectral_norm='keras'\" for a ReDO run made before that "
    "setting existed (a checkpoint that does not fit says which).")


# The flags defined here belong to the command that asks for them: its --help lists them.
flags.disclaim_key_flags()


def define_gin_bindings():
    """Defines `--gin_bindings` (alias `--gin_param`), once per process: the commands that read a gin
    config call it, and a process may import several of them (the tests do). Each caller's `--help`
    lists it."""
    if "gin_bindings" not in flags.FLAGS:
        flags.DEFINE_multi_string("gin_bindings", [], GIN_BINDINGS_HELP)
        flags.DEFINE_alias("gin_param", "gin_bindings")
    for name in ("gin_bindings", "gin_param"):
        flags.declare_key_flag(name)

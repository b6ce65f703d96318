"""Run directories as `tfseg.train --smoke` leaves them, written without training.

Tests that need a run's files (config.gin, latest and best checkpoints) rather than its training use
this: the weights are the initial ones, and skipping the steps saves their tracing (most of a
minute on a busy 2-core machine).
"""
import os

from tfseg import config
from tfseg.training import checkpointing, loading, train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_untrained_run(model_dir, gin_name="demo.gin", steps=(2,), foreground_region=1, bindings=()):
    """Writes config.gin, a latest checkpoint at each of `steps` and a best one at the last.

    Args:
        model_dir: an existing, empty folder.
        gin_name: a shipped config, shrunk by smoke.gin as `--smoke` does.
        steps: the step numbers of the latest checkpoints, in order.
        foreground_region: stored in the checkpoints; 1 (not the default) so a lost region shows.
        bindings: gin bindings after the files, as --gin_bindings.
    """
    config.parse([os.path.join(REPO, "gin_configs", gin_name), config.SMOKE_CONFIG], list(bindings))
    config.save_config(model_dir)
    cfg = train_config.TrainConfig()
    model = loading.build_method(cfg)
    model.build_for_training(cfg.batch_size)
    model.foreground_region.assign(foreground_region)
    state = checkpointing.RunState()
    latest, best = checkpointing.managers(checkpointing.make_checkpoint(model, state), model_dir)
    for step in steps:
        state.step.assign(step)
        latest.save(checkpoint_number=step)
    best.save(checkpoint_number=steps[-1])

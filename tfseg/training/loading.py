"""Builds the method of a `TrainConfig`, and rebuilds a trained one from its run directory (for the
run's own test score, evaluation, export and prediction)."""
import sys

from tfseg import registry
from tfseg.config import load_run_config
from tfseg.errors import ConfigError
from tfseg.methods import optimizers
from tfseg.modeling import refinement
from tfseg.training import checkpointing, precision
from tfseg.training.train_config import TrainConfig


def method_settings(config, restarts=0):
    """The method's settings dataclass for `config` (its bindings checked; no network built)."""
    return config.method(resolution=config.resolution, seed=config.seed + 1000 * restarts)


def build_method(config, restarts=0):
    """The method of `config`, seeded anew for every automatic restart, with gin's mask refinement."""
    method = method_settings(config, restarts).build()
    method.mask_refinement = refinement.mask_refinement()
    return method


def restore_float32(config, checkpoint_path):
    """The method of `config` with float32 networks, whatever precision its run trained in, holding
    `checkpoint_path`'s weights: the run's test score, evaluation, export and prediction compute what
    a user's export computes. Its optimizers are built as the run had them (loss scaling included),
    so the checkpoint's slots find their variables."""
    with precision.policy("float32"), optimizers.loss_scaling(precision.loss_scaled(config.precision)):
        model = build_method(config, restarts=checkpointing.saved_restarts(checkpoint_path))
        model.build_for_training(config.batch_size)
    state = checkpointing.RunState()
    try:
        checkpointing.restore(checkpointing.make_checkpoint(model, state), checkpoint_path, model.checkpoint_hint)
    except checkpointing.MissingAverages:
        # Everything an optimizer trained is there (a distilled segmenter included); only the weights
        # no optimizer trains (a generator's moving average) are not.
        checkpointing.restore(checkpointing.make_checkpoint(model, state, include_unreached=False), checkpoint_path,
                              model.checkpoint_hint)
        print(f"warning: {checkpoint_path} predates saved moving averages: the weights no optimizer trains "
              "(a generator's moving average) keep their initial values; every trained network, a distilled "
              "segmenter included, is restored", file=sys.stderr)
    return model


def load_trained(model_dir, which="best", extra_bindings=()):
    """Returns `(model, train_config, checkpoint_path)` of the run in `model_dir`.

    Raises:
        ConfigError: no config or no checkpoint in `model_dir`.
    """
    registry.import_configurables()  # a run's config may name any configurable
    load_run_config(model_dir, extra_bindings)
    path = checkpointing.latest_checkpoint(model_dir, which)
    if path is None:
        raise ConfigError(f"'{model_dir}' has no checkpoint yet. Train first (python -m "
                          f"tfseg.train --model_dir={model_dir} ...) or check the path.")
    train_config = TrainConfig()
    model = restore_float32(train_config, path)
    return model, train_config, path

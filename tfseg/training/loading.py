"""Rebuilds a trained method from its run directory (for evaluation, export and prediction)."""
from tfseg import config, registry
from tfseg.errors import ConfigError
from tfseg.training import checkpointing, trainer


def load_trained(model_dir, which="best", extra_bindings=()):
    """Returns `(model, train_config, checkpoint_path)` of the run in `model_dir`.

    Raises:
        ConfigError: no config or no checkpoint in `model_dir`.
    """
    registry.import_configurables()  # a run's config may name any configurable
    config.load_run_config(model_dir, extra_bindings)
    path = checkpointing.latest_checkpoint(model_dir, which)
    if path is None:
        raise ConfigError(f"'{model_dir}' has no checkpoint yet. Train first (python -m "
                          f"tfseg.train --model_dir={model_dir} ...) or check the path.")
    train_config = trainer.TrainConfig()
    model = trainer.restore_float32(train_config, path)
    return model, train_config, path

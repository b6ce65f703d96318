"""Checkpoints that resume: all networks, optimizers, the step and the random state.

The randomness of every method is stateless, derived from (seed, step), so the step and the
restart count *are* the random state.
"""
import os

import tensorflow as tf

from tfseg.errors import RunDirError
from tfseg.training.run_dir import BEST_DIR, CHECKPOINTS_DIR


class RunState:
    """Counters stored with every checkpoint."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.restarts = tf.Variable(0, dtype=tf.int64, trainable=False, name="restarts")
        self.best_score = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_score")


#: The checkpoint entry of the weights nothing else reaches (`unreached_weights`).
UNREACHED = "unreached"


def _model_children(model):
    """What every checkpoint of a method holds of it: the model, its optimizers, its non-trainable
    variables (Keras 3 wrappers' state, e.g. SpectralNormalization's vector, is not reached through
    the model alone)."""
    return dict(model=model, optimizers=model.optimizers_by_name(),
                non_trainable=list(model.non_trainable_variables))


def unreached_weights(model):
    """The model's weights that a checkpoint of the model, its optimizers and its non-trainable
    variables does not reach, e.g. G's moving average.

    A Keras 3 network held in a list (a synthesis network's blocks, a generator's mapping networks)
    is not reached through the model's attributes by a `tf.train.Checkpoint`: its weights are saved
    only where an optimizer lists them. These are the ones no optimizer trains.
    """
    root = tf.train.Checkpoint(**_model_children(model))  # held here: the view keeps only a weak reference
    reached = {id(t) for t in tf.train.TrackableView(root).descendants()}
    return [v for v in model.variables if id(v) not in reached and id(getattr(v, "value", v)) not in reached]


def make_checkpoint(model, state, include_unreached=True):
    """A `tf.train.Checkpoint` of a method (`_model_children`) and the run state, plus the weights
    no optimizer trains (`unreached_weights`) where a method has any (`include_unreached=False`: the
    layout before they were, to read an older run's segmenter).
    """
    extra = unreached_weights(model) if include_unreached else []
    return tf.train.Checkpoint(**_model_children(model), step=state.step, restarts=state.restarts,
                               best_score=state.best_score, **({UNREACHED: extra} if extra else {}))


def managers(checkpoint, model_dir, keep=3):
    """(latest, best) checkpoint managers under `model_dir`'s `CHECKPOINTS_DIR` and `BEST_DIR`."""
    latest = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, CHECKPOINTS_DIR),
                                        max_to_keep=keep)
    best = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, BEST_DIR), max_to_keep=1)
    return latest, best


class CheckpointMismatch(RunDirError):
    """A readable checkpoint whose variables do not fit the networks this config builds."""


class MissingAverages(CheckpointMismatch):
    """A checkpoint written before tfseg saved the weights no optimizer trains (G's moving average)."""


def restore(checkpoint, path, hint=""):
    """Restores `path` and checks every variable of the model found its value.

    `hint`: what the method tells the owner of an older run whose layout does not fit (its
    `Method.checkpoint_hint`), added to the mismatch's message.

    Raises:
        CheckpointMismatch: the checkpoint holds other variables or shapes (another network layout);
            nothing is restored and the caller must not train over it.
        tf.errors.OpError: the files are truncated, missing or corrupt.
    """
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        if hasattr(checkpoint, UNREACHED) and not any(
                key.startswith(UNREACHED + "/") for key in tf.train.load_checkpoint(path).get_variable_to_shape_map()):
            raise MissingAverages(
                f"checkpoint {path} was written by a tfseg that did not save the weights no optimizer "
                "trains (a generator's moving average): resumed, it would sample from an untrained "
                "generator. Train it afresh in another --model_dir; the run was left as it was.") from err
        raise CheckpointMismatch(
            f"checkpoint {path} does not fit the networks this config builds ({first}). It was written "
            "with another network layout: other bindings, or an older tfseg"
            + (f" ({hint})" if hint else "") + ". Resume it with the bindings it was made with, or "
            "pass another --model_dir; the run was left as it was.") from err


def latest_checkpoint(model_dir, which="best"):
    """Path of the best (validation-selected) or latest checkpoint in `model_dir`, or None."""
    folders = [BEST_DIR, CHECKPOINTS_DIR] if which == "best" else [CHECKPOINTS_DIR]
    for folder in folders:
        path = tf.train.latest_checkpoint(os.path.join(model_dir, folder))
        if path:
            return path
    return None


def saved_restarts(path):
    """The restart count stored in the checkpoint at `path` (seeds the rebuilt networks)."""
    return int(tf.train.load_checkpoint(path).get_tensor("restarts/.ATTRIBUTES/VARIABLE_VALUE"))

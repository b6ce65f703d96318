"""Steps whose losses or gradients are not finite are undone, counted, and bounded.

A learning rate too high, or one bad batch, can turn every weight into NaN in one update; a NaN model
then thresholds to empty masks, scores fg IoU 0 and would be checkpointed, selected and served. The
guard keeps a copy of every variable of the method (networks and optimizers) as of the last finite
step. The step reports whether any loss or gradient of any replica was non-finite; the trainer then
puts the variables back from the copy (the update is skipped) or refreshes the copy. Both run
outside the step functions, in one `tf.function` of their own: inlined in every step function (a
stage with a periodic phase has two, Labels4Free three stages) the copy's several ops per variable
were traced again each time (over a quarter of a profiled Labels4Free smoke run). The trainer counts the
skipped steps, restores the last checkpoint after too many in a row, and stops past a second bound.

The copy doubles the memory of the variables (not of the activations): `TrainConfig.skip_nonfinite`
turns it off.
"""
import numpy as np
import tensorflow as tf

#: Metric that carries, per example, whether the replica's losses and gradients were all finite.
FINITE_METRIC = "health/finite"


def all_finite(metrics, grads):
    """Scalar bool: every metric value and every gradient is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in tf.nest.flatten(metrics)]
    checks += [tf.reduce_all(tf.math.is_finite(tf.cast(g, tf.float32)))
               for g in tf.nest.flatten(grads) if g is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def finite_metric(metrics, finite):
    """A per-example metric `[b]` (1.0 = finite) shaped like the phase's other metrics."""
    first = tf.nest.flatten(metrics)[0]
    return tf.fill(tf.shape(first)[:1], tf.cast(finite, tf.float32))


class Guard:
    """Shadow copies of `variables`; after each step the trainer calls `keep_or_revert(finite)`."""

    def __init__(self, variables):
        self.variables = list(variables)
        # Created under the caller's strategy scope, so they are mirrored like the originals.
        self.shadows = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name="nonfinite_shadow")
                        for v in self.variables]
        # Traced once per guard (on first use), whatever the number of step functions.
        self._keep = tf.function(lambda: _copy(self.variables, self.shadows), autograph=False)
        self._revert = tf.function(lambda: _copy(self.shadows, self.variables), autograph=False)

    def keep_or_revert(self, finite):
        """After a step: refreshes the shadows when `finite` (a bool), else puts every variable back."""
        (self._keep if bool(finite) else self._revert)()

    def sync(self):
        """Refreshes the shadows from the variables (after a restore)."""
        self._keep()


def _copy(sources, targets):
    for source, target in zip(sources, targets):
        target.assign(tf.convert_to_tensor(source))


def nonfinite_variables(variables):
    """Names of the variables holding a NaN or an infinity (a model that must never be served)."""
    return [getattr(v, "path", None) or v.name for v in variables
            if not np.all(np.isfinite(np.asarray(tf.convert_to_tensor(v))))]


class Diverged(RuntimeError):
    """The losses stayed non-finite after restoring the last checkpoint; the message says what to do."""

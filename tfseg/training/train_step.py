"""One training step of a method: its phases, per replica, as one compiled function.

Not `model.fit`: fit breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), and a GAN
step is several optimizer phases anyway. Each phase's losses-and-gradients function runs per
replica, compiled with XLA when asked; the optimizer update runs outside XLA in the replica
context, where Keras all-reduces the gradients (XLA cannot compile that merge).
"""
import functools

import tensorflow as tf

from tfseg.training import nonfinite


def make_train_step(model, strategy, jit_compile, phases=None, batches_per_step=None):
    """A `tf.function(iterator, step) -> metrics` running every phase of `model` (or `phases`) once.

    Each phase's gradient function is compiled per replica (with XLA if `jit_compile`); the
    optimizer update runs outside XLA, in the replica context, where Keras all-reduces the
    gradients. Metrics are every phase's `PhaseMetrics.flat()`, per-example values gathered from
    all replicas, plus `nonfinite.FINITE_METRIC` (a scalar bool: every loss and gradient of every
    replica was finite), with which the caller keeps or undoes the step (`nonfinite.Guard`).
    """
    phases = tuple(model.phases if phases is None else phases)
    batches_per_step = model.batches_per_step if batches_per_step is None else batches_per_step
    # Without AutoGraph: the step's Python loops run over static phases and batches, and a method's
    # tensor-dependent branch must be an explicit tf.cond (a tensor used as a Python bool fails at
    # trace time, loudly). Tracing is then cheaper.
    gradient_fns = {
        phase: tf.function(lambda batches, step, phase=phase:
                           model.phase_gradients(phase, batches, step),
                           jit_compile=jit_compile, autograph=False)
        for phase in phases}

    @functools.partial(tf.function, autograph=False)
    def train_step(iterator, step):
        batches = tuple(next(iterator) for _ in range(batches_per_step))
        model.begin_step(phases)
        out, finite = {}, []
        for phase in phases:
            def replica_fn(batches, step, phase=phase):
                phase_metrics, grads = gradient_fns[phase](batches, step)
                phase_metrics = phase_metrics.flat()
                model.apply_phase(phase, grads)
                # A loss-scaled optimizer skips overflowed gradients itself and lowers its scale:
                # those steps are expected (float16), not a reason to undo the step.
                ok = nonfinite.all_finite(phase_metrics, () if model.loss_scaled else grads)
                return {**phase_metrics, nonfinite.FINITE_METRIC: nonfinite.finite_metric(phase_metrics, ok)}
            per_replica = strategy.run(replica_fn, args=(batches, step))
            for name, value in per_replica.items():
                gathered = strategy.gather(value, axis=0)
                if name == nonfinite.FINITE_METRIC:
                    finite.append(tf.reduce_all(gathered > 0.5))
                else:
                    out[name] = gathered
        out[nonfinite.FINITE_METRIC] = tf.reduce_all(tf.stack(finite))
        return out

    return train_step

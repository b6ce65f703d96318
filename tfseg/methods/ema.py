"""An exponential moving average (EMA) of a generator's weights, kept in a second copy of it.

StyleGAN-family code samples from the EMA copy, not from the trained generator: its images are
smoother and steadier (PerturbGAN's `g_running`, decay 0.999; StyleGAN2's `g_ema`, 0.9978).
"""
import tensorflow as tf


def weight_pairs(ema_network, network):
    """(EMA variable, trained variable) for every trainable variable of `network`, matched by position
    (the two networks are built alike)."""
    pairs = [(e, g) for e, g in zip(ema_network.weights, network.weights) if g.trainable]
    if len(pairs) != len(network.trainable_weights) or any(e.shape != g.shape for e, g in pairs):
        raise ValueError(f"{ema_network.name} is not shaped like {network.name}")
    return pairs


def copy(pairs):
    """Sets each EMA variable to its trained variable (the EMA starts at the initial weights)."""
    for ema, source in pairs:
        ema.assign(source)


def update(pairs, decay):
    """ema <- decay * ema + (1 - decay) * trained, for every pair.

    Runs in replica context after the generator's optimizer step. The trained variables are mirrored
    and equal on every replica after the all-reduced update, so the update is done once per device
    through the public `ReplicaContext.merge_call` and `extended.update`, as Keras' optimizers do,
    instead of a replica-context assign (which a MirroredVariable without an aggregation refuses).
    Outside any replica context (a cross-replica call) the merge function runs as is.
    """
    values = [(e.value, g.value) for e, g in pairs]

    def assign(ema, value):
        return ema.assign(decay * ema + (1.0 - decay) * tf.cast(value, ema.dtype))

    def merge_fn(strategy, values):
        for ema, value in values:
            strategy.extended.update(ema, assign, args=(value,), group=False)

    context = tf.distribute.get_replica_context()
    if context is None:
        merge_fn(tf.distribute.get_strategy(), values)
    else:
        context.merge_call(merge_fn, args=(values,))

"""The Adam every GAN network of tfseg trains with (beta_1 = 0, as in all three reference codes;
each variable's update one fused TensorFlow kernel), and the float16 loss scaling that wraps it
under the `mixed_float16` policy (`tfseg.training.precision`).

Every gradient of a method is taken through `gradients`, so a loss-scaled optimizer sees its loss
scaled; `LossScaleOptimizer.apply` unscales, skips a step whose gradients overflowed and adapts the
scale. Under float32 and mixed_bfloat16 (float32's exponent range) nothing is scaled.
"""
import contextlib
import types

import keras
import tensorflow as tf

# Whether `gan_adam` wraps its Adam for float16 loss scaling; set by `loss_scaling`.
_LOSS_SCALING = [False]


@contextlib.contextmanager
def loss_scaling(enabled):
    """Optimizers made inside scale the loss (`enabled`) or not; the setting before is restored.

    On during float16 training (`tfseg.training.precision.policy`), and when a float16 run is
    rebuilt in float32 for evaluation or export, so its checkpoint finds the same optimizers.
    """
    before = _LOSS_SCALING[0]
    _LOSS_SCALING[0] = bool(enabled)
    try:
        yield
    finally:
        _LOSS_SCALING[0] = before


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (in an update context: this device's)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each variable updated by TensorFlow's one fused `ResourceApplyAdam` kernel.

    Same update, same order of terms (m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
    var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)), same slots and checkpoint;
    one op per variable instead of about a dozen, which is most of the optimizer's share of tracing
    a step. It overrides two methods of Keras 3's TensorFlow-backend optimizer and reads Adam's slot
    lists (`_momentums`, `_velocities`), as of Keras 3.15; tests/test_optimizers.py compares it with
    Keras' Adam, so a change there fails a test rather than training differently.
    """

    def __init__(self, *args, steps_per_variable=False, pytorch_epsilon=False, coupled_weight_decay=0.0,
                 **kwargs):
        """`steps_per_variable`: count Adam's steps (its bias correction) per variable, over the
        applies that give it a gradient, as PyTorch's Adam does, instead of once per optimizer:
        for networks that grow (a layer that joins late starts its moments as a new one would).
        It adds one scalar slot per variable to the checkpoint.
        `pytorch_epsilon`: add epsilon to the bias-corrected sqrt(v_hat), as PyTorch's Adam does
        (m_hat / (sqrt(v_hat) + eps)), instead of to sqrt(v) (Keras, TensorFlow); the kernel is
        given eps * sqrt(1 - beta_2^t), which is the same update.
        `coupled_weight_decay`: L2 added to the gradient (g + wd * theta), as PyTorch's Adam
        `weight_decay` does (ReDO's F), not Keras' decoupled (AdamW) decay. Under loss scaling it
        is added to the unscaled gradient (`LossScaleOptimizer` unscales before this optimizer)."""
        super().__init__(*args, **kwargs)
        self.pytorch_epsilon = pytorch_epsilon
        self.coupled_weight_decay = coupled_weight_decay
        if self.amsgrad:
            raise ValueError("FusedAdam has no amsgrad variant; use keras.optimizers.Adam")
        self.steps_per_variable = steps_per_variable
        # The scalars every variable's update shares in one apply; a plain object, which the
        # optimizer's checkpoint does not track (a dict attribute would become a dependency).
        self._shared = types.SimpleNamespace(scalars=None)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if self.steps_per_variable:
            self._variable_steps = [self.add_variable(shape=(), dtype="float32", initializer="zeros",
                                                      name=var.path.replace("/", "_") + "_step")
                                    for var in var_list]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # The bias-correction powers once per apply, not once per variable.
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.constant(self.beta_1, tf.float32), tf.constant(self.beta_2, tf.float32)
        self._shared.scalars = dict(lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                                    beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                                    epsilon=tf.constant(self.epsilon, tf.float32))
        if self.pytorch_epsilon:
            self._shared.scalars["epsilon"] = self._scaled_epsilon(self._shared.scalars["beta2_power"])
        if self.coupled_weight_decay:
            grads = [g + self.coupled_weight_decay * v for g, v in zip(grads, trainable_variables)]
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._shared.scalars = None

    def _scaled_epsilon(self, beta2_power):
        return tf.constant(self.epsilon, tf.float32) * tf.sqrt(1.0 - beta2_power)

    def update_step(self, gradient, variable, learning_rate):
        # tfseg's weights are float32 under every precision policy; the kernel refuses other dtypes.
        index = self._get_variable_index(variable)
        scalars = self._shared.scalars
        if self.steps_per_variable:
            counter = self._variable_steps[index]
            counter.assign_add(1.0)
            step = tf.identity(counter.value)
            scalars = dict(scalars, beta1_power=tf.pow(scalars["beta1"], step),
                           beta2_power=tf.pow(scalars["beta2"], step))
            if self.pytorch_epsilon:
                scalars["epsilon"] = self._scaled_epsilon(scalars["beta2_power"])
        return tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            grad=tf.cast(gradient, tf.float32), use_locking=False, **scalars)


def gan_adam(learning_rate, beta_2=0.99, epsilon=1e-8, lazy_ratio=1.0, steps_per_variable=False,
             pytorch_epsilon=False, coupled_weight_decay=0.0):
    """Adam(beta_1 = 0, beta_2), scaled for a lazily run regulariser: lr * c, beta_2 ** c.

    Inside `loss_scaling(True)` it comes wrapped in Keras' dynamic `LossScaleOptimizer`.

    Args:
        learning_rate: the nominal learning rate.
        beta_2: 0.99 in StyleGAN / StyleGAN2 (PerturbGAN, Labels4Free), 0.9 in ReDO.
        epsilon: 1e-8 as PyTorch (the references); ReDO keeps Keras' 1e-7, measured with it.
        lazy_ratio: c = interval / (interval + 1) keeps the optimizer's per-step dynamics when a
            regulariser runs every `interval` steps (StyleGAN2 appendix B); 1 when none does.
        steps_per_variable: bias correction per variable (`FusedAdam`), for growing networks.
        pytorch_epsilon: epsilon where PyTorch's Adam adds it (`FusedAdam`).
        coupled_weight_decay: PyTorch Adam's L2 on the weights, added to the gradient (`FusedAdam`).
    """
    adam = FusedAdam(learning_rate * lazy_ratio, beta_1=0.0, beta_2=beta_2**lazy_ratio, epsilon=epsilon,
                     steps_per_variable=steps_per_variable, pytorch_epsilon=pytorch_epsilon,
                     coupled_weight_decay=coupled_weight_decay)
    if _LOSS_SCALING[0]:
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def is_loss_scaled(optimizer):
    """Whether `optimizer` expects gradients of a scaled loss (float16 training)."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def loss_scale(optimizer):
    """The factor `optimizer` expects the loss multiplied by: its current loss scale, else 1."""
    if not is_loss_scaled(optimizer):
        return tf.constant(1.0)
    return tf.convert_to_tensor(optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale,
                                tf.float32)


def gradients(tape, loss, variables, optimizer):
    """`tape.gradient(loss, variables)`, of the loss times `optimizer`'s loss scale.

    The scale enters as the backward pass's starting gradient, so the forward pass is unchanged.
    """
    if not is_loss_scaled(optimizer):
        return tape.gradient(loss, variables)
    return tape.gradient(loss, variables, output_gradients=tf.cast(loss_scale(optimizer), loss.dtype))


def rescaled(grads, computed_for, applied_by):
    """Gradients taken with `computed_for`'s loss scale, rescaled to `applied_by`'s (one backward
    pass feeding two optimizers, as ReDO's F and G); unchanged when neither scales."""
    if not (is_loss_scaled(computed_for) or is_loss_scaled(applied_by)):
        return grads
    factor = loss_scale(applied_by) / loss_scale(computed_for)
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]

"""A feed-forward segmenter distilled from a layered generator (PerturbGAN stage (b), Labels4Free §3.1).

A layered generator knows the exact mask of every image it draws, so its samples are an unlimited
labelled training set. A mask network trained on those (image, mask) pairs segments real photos
in one forward pass, with no inversion. Shared by every method that has a generator with a mask.
"""
import keras
import tensorflow as tf
from keras import ops

from tfseg import losses
from tfseg.methods import optimizers
from tfseg.methods.base import PhaseMetrics
from tfseg.modeling.mask_network import MaskNetwork


def samples_per_replica(global_batch_size):
    """How many samples a distillation step draws per replica: the stage reads no real batch, so
    it draws the global batch split over the replicas (at least one)."""
    return max(1, global_batch_size // tf.distribute.get_strategy().num_replicas_in_sync)


class DistilledSegmenter(keras.layers.Layer):
    """A mask network and the loss that fits it to generated masks.

    Args:
        width, residual_blocks: size of the mask network (ReDO's F, `modeling.mask_network`).
        hard_targets: fit masks thresholded at 0.5 (True) or the soft masks themselves.

    Call: `images [b, R, R, 3]` in [-1, 1] -> foreground probability `[b, R, R, 1]`.
    """

    def __init__(self, width=32, residual_blocks=2, hard_targets=True, **kwargs):
        super().__init__(**kwargs)
        self.hard_targets = hard_targets
        self.network = MaskNetwork(num_regions=2, width=width, num_residual_blocks=residual_blocks,
                                   name="mask_network")

    def build(self, images_shape):
        # MaskNetwork builds its layers on a first call (it has no build of its own).
        self.network(ops.zeros((1,) + tuple(images_shape[1:])))

    def call(self, images):
        return ops.sigmoid(self.network.logits(images))

    # Plain tensor code, kept out of autograph: in some pytest orders and runs autograph resolved
    # this bound method of a sub-layer to the layer's `call` (seen with TF 2.16-2.21 and Keras 3;
    # root cause not found). The decorator is public API; it only skips conversion.
    @tf.autograph.experimental.do_not_convert
    def loss(self, images, target_masks):
        """Per-example binary cross-entropy `[b]` between the predicted and the generated masks.

        Args:
            images: `[b, R, R, 3]` generated images (no gradient flows back to the generator).
            target_masks: `[b, R, R, 1]` their masks in [0, 1].
        """
        target = tf.stop_gradient(target_masks)
        if self.hard_targets:
            target = tf.cast(target > 0.5, tf.float32)
        logits = self.network.logits(tf.stop_gradient(images))
        per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
        return ops.mean(per_pixel, axis=(1, 2, 3))

    def gradients(self, images, target_masks, optimizer):
        """One distillation phase: `(metrics, grads)` of the mean `loss` over the global batch, for
        `optimizer` (whose loss scale they carry under float16).

        Metrics: the loss "segmenter", and the generated masks' coverage and "mask/binariness".
        """
        with tf.GradientTape() as tape:
            per_example = self.loss(images, target_masks)
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, self.trainable_variables, optimizer)
        return PhaseMetrics(losses={"segmenter": per_example},
                            mask_coverage=losses.mask_coverage(target_masks),
                            diagnostics={"mask/binariness": losses.mask_binariness(target_masks)}), grads

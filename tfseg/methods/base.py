"""The contract between a method (ReDO, PerturbGAN, ...) and the generic trainer.

A method is a `keras.Model` that owns its networks and optimizers and splits a training step
into *phases* (e.g. "generator" then "discriminator"). For each phase it provides a
gradient function, which the trainer may compile with XLA per replica, and an apply function,
which runs outside XLA (optimizer updates under a strategy cannot be compiled: they merge across
replicas). Losses are scaled by the *global* batch so that summing gradients over replicas
gives the global mean.
"""
import math
from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from tfseg.methods import optimizers

#: TensorBoard and console names of what a phase reports (`PhaseMetrics.flat`), defined once here.
LOSS_PREFIX = "loss/"
MASK_COVERAGE = "mask/coverage"


class PhaseMetrics(NamedTuple):
    """What one phase reports, typed by what the trainer does with it; every value is per example `[b]`.

    Attributes:
        losses: `{name: [b]}`; the console shows them (names ending in "total" only in TensorBoard),
            TensorBoard files them under `loss/<name>`.
        mask_coverage: `[b]` share of each image in the object region (region 0), or None. Shown as
            `mask/coverage`; collapse detection reads the smaller region's share from it, so it
            works for every method that reports it.
        diagnostics: `{name: [b]}` for TensorBoard only, under their own names ("mask/binariness").
    """
    losses: dict
    mask_coverage: Optional[tf.Tensor] = None
    diagnostics: Optional[dict] = None

    def flat(self):
        """`{name: [b]}` under the TensorBoard names: what a compiled step returns from a replica."""
        out = {LOSS_PREFIX + name: value for name, value in self.losses.items()}
        if self.mask_coverage is not None:
            out[MASK_COVERAGE] = self.mask_coverage
        out.update(self.diagnostics or {})
        return out


class Periodic(NamedTuple):
    """A phase that runs only on every `every`-th step (steps counted from 0: step % every == 0),
    at its place among its stage's phases, with an optimizer update of its own: e.g. StyleGAN2's
    lazy R1, a discriminator step on the penalty alone every 16 steps."""
    phase: str
    every: int


def phases_due(phases, step):
    """The names of the `phases` (names or `Periodic`) that run at training step `step` (from 0)."""
    return tuple(p.phase if isinstance(p, Periodic) else p for p in phases
                 if not isinstance(p, Periodic) or step % p.every == 0)


def every_step_phases(phases):
    """The names of the `phases` that run on every step (the `Periodic` ones left out)."""
    return tuple(p for p in phases if not isinstance(p, Periodic))


class Stage(NamedTuple):
    """A part of training with its own phases, run for `TrainConfig.stage_steps[name]` steps.

    Attributes:
        name: e.g. "generator", "segmenter"; names the step budget in gin.
        phases: the phases one step of this stage runs, in order: names, or `Periodic` for a phase
            that runs only every n-th step.
        batches_per_step: real batches one step consumes (0: the stage trains on generated data).
        evaluates: whether validation scores the segmenter during this stage (a generator stage
            has no segmenter of real images yet: image grids only).
        images: a budget the method fixes, in real images (e.g. a resolution of progressive
            growing): the stage runs ceil(images / (batch x batches_per_step)) steps, and
            `TrainConfig.stage_steps` may not name it. None: the budget comes from the config.
        note: what the stage trains, shown by `--dry_run` (e.g. "16 px, lr 0.001").
    """
    name: str
    phases: tuple
    batches_per_step: int = 1
    evaluates: bool = True
    images: Optional[int] = None
    note: str = ""

    def images_per_step(self, global_batch):
        """Real images one step reads at a run batch of `global_batch` (a batch when it reads none:
        a stage on generated data still draws a batch)."""
        return global_batch * max(1, self.batches_per_step)

    def fixed_steps(self, global_batch):
        """Steps of a stage whose budget the method fixes in images, at a run batch of `global_batch`
        (None when the config sets the budget)."""
        if self.images is None:
            return None
        return math.ceil(self.images / self.images_per_step(global_batch))


class Method(keras.Model):
    """Base class; subclasses set `phases` and implement the methods below.

    A method is built from its settings, a frozen dataclass that gin configures under the
    method's name (e.g. `tfseg.methods.redo.<field>`) and whose `build()` returns the method:
    every hyper-parameter is declared once, there, with its default and its meaning.
    """

    #: Names of the phases of one training step, run in this order.
    phases = ()
    #: How many input batches one training step consumes (ReDO: 2, its D sees a fresh real batch).
    batches_per_step = 1
    #: Phases whose loss (a penalty) need not depend on every weight they train, e.g. R1 on D's last
    #: bias: `apply_phase` leaves such a weight alone (PyTorch's Adam skips a parameter whose
    #: gradient is None). In any other phase a None gradient is an error.
    partial_gradient_phases = ()
    #: Region 0 is the object because the method is built so (a mask layer composited over a
    #: background layer). False where regions are symmetric (ReDO): without labels the trainer
    #: then picks the region by the border rule (`tfseg.evaluation.evaluator.border_region`).
    foreground_by_construction = False
    #: Why region 0 is the object when `foreground_by_construction` (said on the console).
    foreground_reason = "the segmenter predicts the foreground layer's mask"
    #: What the owner of an older run must bind when its checkpoint no longer fits the networks
    #: (added to `tfseg.training.checkpointing.CheckpointMismatch`'s message); "" when nothing helps.
    checkpoint_hint = ""
    #: Post-processing every mask passes through outside training (`tfseg.modeling.refinement`), or
    #: None. Set from gin by `tfseg.training.loading.build_method`; it has no weights to checkpoint.
    mask_refinement = None

    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        #: The method's hyper-parameters (its settings dataclass; `resolution` and `seed` included).
        self.settings = settings
        self.resolution = settings.resolution
        self.base_seed = settings.seed
        keras.utils.set_random_seed(settings.seed)  # initial weights follow the seed
        # Which output region is the foreground. Chosen on a labelled *validation* split by the
        # trainer (else by construction or the border rule), stored in checkpoints and exports.
        self.foreground_region = tf.Variable(0, dtype=tf.int32, trainable=False,
                                             name="foreground_region")

    def stages(self):
        """The stages of training in order; one stage of all `phases` unless overridden."""
        return (Stage("train", tuple(self.phases), self.batches_per_step, True),)

    def begin_stage(self, name):
        """Called before the first step of stage `name` (also when a run resumes inside it)."""

    # -- to implement ---------------------------------------------------------------------------
    def build_for_training(self, global_batch_size):
        """Creates all variables (networks and optimizers) so checkpoints can be restored."""
        raise NotImplementedError

    def phase_gradients(self, phase, batches, step):
        """Per-replica losses and gradients of one phase.

        Args:
            phase: one of `self.phases`.
            batches: tuple of `batches_per_step` dicts with "image" `[b, R, R, 3]` in [-1, 1].
            step: int64 scalar, the global step (seeds the method's randomness).
        Returns:
            `(metrics, grads)`: a `PhaseMetrics` of per-example `[b]` tensors, and the structure
            `apply_phase` expects.
        """
        raise NotImplementedError

    def phase_optimizers(self):
        """`{phase: (optimizer, variables)}`: what each phase trains, with which optimizer.

        A phase whose one backward pass trains several networks, each with its own optimizer, maps to
        `{name: (optimizer, variables)}` instead, and its `phase_gradients` returns `{name: grads}`
        (ReDO's "generator" phase: F, the G_k and the encoder). Checkpoints and learning-rate
        summaries name an optimizer by its phase, or by its name within such a phase.
        """
        raise NotImplementedError

    def region_masks(self, images, training=False):
        """Soft masks of every region, `[batch, R, R, n]`."""
        raise NotImplementedError

    def summary_images(self, images, step):
        """Named `[batch, R, R, 3]` image batches in [-1, 1] (or masks in [0, 1]) for TensorBoard."""
        raise NotImplementedError

    # -- shared (override where a method differs) ---------------------------------------------
    def begin_step(self, phases):
        """Told, while a training step is traced, the phases it runs in order (periodic ones only
        when due): for an update that must follow the last of several, e.g. an EMA of G after every
        G update of the step. Nothing by default."""

    def apply_phase(self, phase, grads):
        """Applies the gradients of `phase_gradients` with the phase's optimizer(s)."""
        updates = self.phase_optimizers()[phase]
        if not isinstance(updates, dict):
            updates, grads = {phase: updates}, {phase: grads}
        for name, (optimizer, variables) in updates.items():
            named_grads = grads[name]
            if phase in self.partial_gradient_phases:
                named_grads, variables = zip(*[(g, v) for g, v in zip(named_grads, variables) if g is not None])
            optimizer.apply(named_grads, variables)

    @property
    def loss_scaled(self):
        """Whether the optimizers scale the loss (float16 training, `tfseg.methods.optimizers`)."""
        return any(optimizers.is_loss_scaled(o) for o in self.optimizers_by_name().values())

    def build_optimizers(self):
        """Creates every optimizer's slots (after the networks are built), so checkpoints restore."""
        for optimizer, variables in self._named_updates().values():
            optimizer.build(variables)

    def optimizers_by_name(self):
        """Dict of the optimizers, for checkpoints and learning-rate summaries (`phase_optimizers`' names)."""
        return {name: optimizer for name, (optimizer, _) in self._named_updates().items()}

    def _named_updates(self):
        """`{name: (optimizer, variables)}` over all phases, a phase of several updates flattened."""
        named = {}
        for phase, updates in self.phase_optimizers().items():
            named.update(updates if isinstance(updates, dict) else {phase: updates})
        return named

    def final_region_masks(self, images):
        """`region_masks` as evaluation and serving see them: after `mask_refinement`, if any."""
        return self._refined(images, self.region_masks(images, training=False))

    def _refined(self, images, masks):
        if self.mask_refinement is None:
            return masks
        return self.mask_refinement.refine_regions(images, tf.cast(masks, tf.float32))

    def segment(self, images):
        """Foreground probability `[batch, R, R, 1]` in [0, 1] for images `[batch, R, R, 3]`."""
        return self.foreground_masks(images)[1]

    def foreground_masks(self, images):
        """`(network's, final)` foreground probabilities `[batch, R, R, 1]`, before and after
        `mask_refinement` (the same tensor without one), from one pass of the networks."""
        masks = self.region_masks(images, training=False)

        def foreground(regions):
            return tf.gather(regions, self.foreground_region, axis=-1)[..., None]

        return foreground(masks), foreground(self._refined(images, masks))

    def replica_seed(self, step, stream):
        """A stateless seed, distinct per step, per replica and per random stream."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        replica = tf.cast(replica, tf.int64)
        step = tf.cast(step, tf.int64)
        return tf.stack([tf.constant(self.base_seed, tf.int64) * 1000 + replica,
                         step * 16 + stream])

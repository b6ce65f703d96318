"""ReDO (Chen, Artieres & Denoyer 2019): segment by redrawing (docs/methods.md §2).

A mask network F splits a real image x into n soft regions. For each sample one region i is
redrawn by its generator G_i from a fresh code z: y = m_i * G_i(m_i, z) + (1 - m_i) * x. The other
regions keep their real pixels, so F cannot ignore x; a discriminator must not tell y from real
images; an encoder recovers z from y (information conservation), so the redrawn region cannot be
empty. F, the G_k and the encoder are trained together on one loss; D on the hinge loss.
"""
import dataclasses
import math
from typing import ClassVar, Optional, Tuple

import gin
import keras
import numpy as np
import tensorflow as tf

from tfseg import losses
from tfseg.errors import ConfigError
from tfseg.methods.base import Method, PhaseMetrics
from tfseg.methods import optimizers
from tfseg.methods.optimizers import gan_adam
from tfseg.modeling import equivariance
from tfseg.modeling import spectral_norm as spectral_norm_lib
from tfseg.modeling.mask_network import MaskNetwork
from tfseg.modeling.redo_discriminator import Discriminator
from tfseg.modeling.redo_generator import RegionGenerator


@gin.configurable("redo", module="tfseg.methods")
@dataclasses.dataclass(frozen=True)
class ReDOSettings:
    """ReDO's hyper-parameters (gin: `tfseg.methods.redo.<field>`); defaults are the paper's
    CUB/Flowers settings. The trainer calls it with `resolution` and `seed`; `build()` makes the method.

    Attributes:
        resolution: image side R (set by the trainer).
        num_regions: n (2: object and background).
        z_dim: nz, size of each region code.
        mask_width: width nf of the mask network (64 in the paper).
        mask_residual_blocks: residual blocks in the mask network.
        mask_temperature: tau of the mask network's sigmoid / softmax (the authors' --temperature, 1).
        mask_symmetric_padding: the mask network's two stride-2 convolutions pad one pixel on every
            side, as the authors' PyTorch code (padding=1); False (tfseg's default so far): Keras'
            "same", which pads only the bottom and right, so each output samples the input one
            pixel lower and further right. Same weights either way; paper configs set True.
        generator_width: ch of each region generator (32 for CUB/Flowers, 64 for LFW).
        generator_max_width: optional cap on generator block widths.
        generator_self_attention: the generators' self-attention block (§2.3).
        generator_norm_offset: gamma offset of the generators' conditional norms (reference: 0).
        generator_seed_multiplier: the generators' first layer (the 4x4 seed from z) in multiples of
            the first block's width: 1 as the reference (16ch); the demo configs keep 2, with which
            they were measured.
        discriminator_width, discriminator_max_width: D's first and maximal widths.
        discriminator_self_attention: D's self-attention block (§2.3).
        encoder_width: the separate z-encoder's first width (the authors' nfZ); None: D's width.
        redraw_every_region: False (tfseg's default, the paper's description): one region per image is
            redrawn, the encoder reads that composite. True (the authors' code): every region of
            every image is redrawn (n composites per image through D) and the encoder reads the
            wholly generated image (the sum of the n redrawn regions) and recovers all n codes.
            About n times the generator's and D's work per step.
        shared_encoder_trunk: the z-encoder is a head on D's trunk (InfoGAN-style, cheaper); False
            (the reference's netRecZ): a network of its own, shaped like D without self-attention.
            The demo configs keep True, with which they were measured.
        info_weight: lambda_z.
        object_min_coverage, object_max_coverage: tfseg's optional size prior on region 0, not the
            paper's (which has none): hinges on region 0's mean coverage per image below the min or
            above the max (`losses.mask_size_loss` / `mask_excess_loss`, on F only). It makes region 0
            the object (so no polarity must be guessed afterwards) and keeps F from the trivial
            split a GAN finds first on photos (one region takes most of the image). Off (0 and 1)
            by default. Measured once, on Flowers-17 at 32 px (redo_folder.gin at 32 px, batch 32,
            range 0.1-0.4, validation masks through its colour refinement): no gain; validation
            fg IoU 0.250 / 0.254 / 0.244 at steps 250 / 500 / 750, region 0 a faint soft layer over
            the whole image that meets the hinges without finding the flowers; so no config
            switches it on.
        object_size_weight: weight of each of the two hinges (PerturbGAN's gamma_1 is 2).
        binarization_weight: weight of PerturbGAN's binarization term mean(min(m, 1 - m)) on
            region 0 (on F only; not the paper's, 0 = off). With the size prior it stops F from
            meeting the hinges with a faint layer over the whole image. Measured once with that
            prior on Flowers-17 at 32 px: hard masks, but one bottom strip for every photo
            (validation 0.28 -> 0.24 over 1,250 steps; docs/results.md); no config sets it.
        equivariance_weight: weight of tfseg's crop-equivariance term on F (not the paper's, 0 =
            off): mean |F(crop(x)) - crop(F(x))| over a random box per image (side
            `equivariance_min_scale` to 1 of the image; `tfseg.modeling.equivariance`). A fixed
            split (F ignoring its input) disagrees with itself under crops; one extra pass of F.
            Measured on Flowers-17 at 32 px with the size prior and binarization (two runs, stopped
            at steps 600 and 800, docs/results.md): no gain, validation 0.21-0.33; the split
            stayed fixed (a faint uniform layer at weight 5, a corner wedge at weight 10); no
            config sets it.
        equivariance_min_scale: smallest side of the equivariance term's boxes.
        learning_rate: Adam lr of G, D and the encoder.
        mask_learning_rate: Adam lr of F.
        mask_weight_decay: coupled L2 on F.
        adam_epsilon: the Adam epsilon of every network (1e-7, Keras' default, with which tfseg's
            configs were measured; PyTorch's and the authors' 1e-8).
        pytorch_adam_epsilon: epsilon added where PyTorch's Adam adds it (to the bias-corrected sqrt(v_hat));
            False: where Keras adds it (to sqrt(v)). With `adam_epsilon = 1e-8` and True the update
            is the authors' exactly (tests/test_reference_redo.py); paper configs set both.
        init_gain: orthogonal init gain (0.8; 0.2 and 1.4 fail).
        pytorch_bias_init: biases start as PyTorch's Conv2d / Linear draw them, U(-1/sqrt(fan_in),
            1/sqrt(fan_in)) (the authors' train.py re-initialises only the weights), instead of
            Keras' zeros. Drawn from `seed`; paper configs set it.
        spectral_norm: how G's and D's convolutions are spectrally normalised: "reference" (as the
            authors' PyTorch code: W / sigma(W) on every call, gradient through sigma) or "keras"
            (Keras' wrapper: the kernel is overwritten with W / sigma, no gradient through sigma);
            `tfseg.modeling.spectral_norm`.
        seed: seeds initial weights and the codes z.
    """
    resolution: int
    num_regions: int = 2
    z_dim: int = 32
    mask_width: int = 64
    mask_residual_blocks: int = 3
    mask_temperature: float = 1.0
    mask_symmetric_padding: bool = False
    generator_width: int = 32
    generator_max_width: Optional[int] = None
    generator_self_attention: bool = True
    generator_norm_offset: float = 0.0
    generator_seed_multiplier: int = 1
    discriminator_width: int = 64
    discriminator_max_width: int = 1024
    discriminator_self_attention: bool = True
    encoder_width: Optional[int] = None
    redraw_every_region: bool = False
    shared_encoder_trunk: bool = False
    info_weight: float = 5.0
    object_min_coverage: float = 0.0
    object_max_coverage: float = 1.0
    object_size_weight: float = 2.0
    binarization_weight: float = 0.0
    equivariance_weight: float = 0.0
    equivariance_min_scale: float = 0.6
    learning_rate: float = 1e-4
    mask_learning_rate: float = 1e-5
    mask_weight_decay: float = 1e-4
    adam_epsilon: float = 1e-7
    pytorch_adam_epsilon: bool = False
    init_gain: float = 0.8
    pytorch_bias_init: bool = False
    spectral_norm: str = "reference"
    seed: int = 0

    #: Layout-changing bindings a resumed run is checked on by the checkpoint restore, not by
    #: `tfseg.training.run_dir` (runs made before they existed lack them in config.gin).
    CHECKED_AT_RESTORE: ClassVar[Tuple[str, ...]] = ("spectral_norm", "generator_seed_multiplier",
                                                     "shared_encoder_trunk")

    def __post_init__(self):
        if not 0.0 <= self.object_min_coverage < self.object_max_coverage <= 1.0:
            raise ConfigError("tfseg.methods.redo.object_min_coverage and object_max_coverage must satisfy "
                              f"0 <= min < max <= 1, got {self.object_min_coverage} and "
                              f"{self.object_max_coverage}")
        if not 0.0 < self.equivariance_min_scale <= 1.0:
            raise ConfigError("tfseg.methods.redo.equivariance_min_scale must be in (0, 1], got "
                              f"{self.equivariance_min_scale}")
        if self.spectral_norm not in spectral_norm_lib.STYLES:
            raise ConfigError(f"tfseg.methods.redo.spectral_norm must be one of {spectral_norm_lib.STYLES}, "
                              f"got {self.spectral_norm!r}")

    def build(self):
        return ReDO(self)


def _adam(learning_rate, settings, coupled_weight_decay=0.0):
    # beta_2 = 0.9: the reference's setting for every network.
    return gan_adam(learning_rate, beta_2=0.9, epsilon=settings.adam_epsilon,
                    pytorch_epsilon=settings.pytorch_adam_epsilon, coupled_weight_decay=coupled_weight_decay)


class ReDO(Method):
    """ReDO's networks, optimizers and two-phase training step ("generator", "discriminator").

    Built from a `ReDOSettings`; call `build_for_training` before use.
    """

    phases = ("generator", "discriminator")
    checkpoint_hint = (
        "ReDO runs made before tfseg.methods.redo.spectral_norm existed need --gin_bindings=\"tfseg.methods."
        "redo.spectral_norm='keras'\"; ReDO runs of a config other than demo.gin made before the reference "
        "defaults also need \"tfseg.methods.redo.generator_seed_multiplier=2\" and "
        "\"tfseg.methods.redo.shared_encoder_trunk=True\"")
    batches_per_step = 2

    def __init__(self, settings):
        super().__init__(settings, name="redo")
        s = settings
        self.num_regions = s.num_regions
        self.z_dim = s.z_dim
        self.mask_network = MaskNetwork(s.num_regions, s.mask_width, s.mask_residual_blocks,
                                        temperature=s.mask_temperature, gain=s.init_gain,
                                        symmetric_padding=s.mask_symmetric_padding, name="mask_network")
        self.generators = [
            RegionGenerator(s.resolution, s.generator_width, s.generator_max_width,
                            s.generator_self_attention, s.z_dim, gain=s.init_gain,
                            norm_offset=s.generator_norm_offset, spectral_norm=s.spectral_norm,
                            seed_multiplier=s.generator_seed_multiplier, name=f"generator_{k}")
            for k in range(s.num_regions)]
        self.discriminator = self._discriminator_shaped(
            s.discriminator_self_attention, with_encoder_head=s.shared_encoder_trunk, name="discriminator")
        # Without the shared trunk the z-encoder is a network of D's shape, as in the reference code.
        self.encoder = (None if s.shared_encoder_trunk else
                        self._discriminator_shaped(False, with_encoder_head=True, name="encoder",
                                                   with_adversarial_head=False,
                                                   width=s.encoder_width or s.discriminator_width))
        # Coupled L2 on F (PyTorch Adam's weight_decay, not AdamW): gradient += wd * theta.
        self.mask_optimizer = _adam(s.mask_learning_rate, s, coupled_weight_decay=s.mask_weight_decay)
        self.generator_optimizer = _adam(s.learning_rate, s)
        self.encoder_optimizer = _adam(s.learning_rate, s)
        self.discriminator_optimizer = _adam(s.learning_rate, s)

    @property
    def foreground_by_construction(self):
        """With the size prior on, region 0 is the object (the prior says so); else regions are symmetric."""
        return self._object_size_prior_on()

    foreground_reason = "the size prior (tfseg.methods.redo.object_min/max_coverage) is on region 0"

    def _object_size_prior_on(self):
        s = self.settings
        return s.object_min_coverage > 0.0 or s.object_max_coverage < 1.0

    def _discriminator_shaped(self, self_attention, with_encoder_head, name, with_adversarial_head=True,
                              width=None):
        s = self.settings
        return Discriminator(s.resolution, width or s.discriminator_width, s.discriminator_max_width,
                             self_attention, s.num_regions, s.z_dim,
                             with_encoder_head=with_encoder_head, gain=s.init_gain,
                             spectral_norm=s.spectral_norm, name=name,
                             with_adversarial_head=with_adversarial_head)

    # -- variables ------------------------------------------------------------------------------
    def _encoder_variables(self):
        if self.encoder is not None:
            return self.encoder.trainable_variables
        return self.discriminator.trunk.trainable_variables + self.discriminator.code_head.trainable_variables

    def _generator_variables(self):
        return [v for g in self.generators for v in g.trainable_variables]

    def _discriminator_variables(self):
        d = self.discriminator
        return d.trunk.trainable_variables + d.adversarial_head.trainable_variables

    def build_for_training(self, global_batch_size):
        r = self.resolution
        images = tf.zeros([2, r, r, 3])
        masks = self.mask_network(images)
        z = tf.zeros([2, self.z_dim])
        for k, generator in enumerate(self.generators):
            generator(masks[..., k:k + 1], z)
        self.discriminator(images)
        if self.encoder is not None:
            self.encoder(images)
        if self.settings.pytorch_bias_init:
            self._draw_biases_as_pytorch()
        self.build_optimizers()

    def _networks(self):
        return [self.mask_network, *self.generators, self.discriminator] + (
            [self.encoder] if self.encoder is not None else [])

    def _draw_biases_as_pytorch(self):
        """Every conv and dense bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default."""
        rng = np.random.default_rng([self.base_seed, 29])
        for network in self._networks():
            for layer in network._flatten_layers(include_self=False):  # pylint: disable=protected-access
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
                    bound = 1.0 / math.sqrt(math.prod(layer._kernel.shape[:-1]))  # pylint: disable=protected-access
                    layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype(np.float32))

    def phase_optimizers(self):
        # One backward pass of the "generator" phase trains F, the G_k and the encoder, each with its
        # own optimizer (the reference's three Adams): a phase of several named updates.
        return {"generator": {"mask": (self.mask_optimizer, self.mask_network.trainable_variables),
                              "generator": (self.generator_optimizer, self._generator_variables()),
                              "encoder": (self.encoder_optimizer, self._encoder_variables())},
                "discriminator": (self.discriminator_optimizer, self._discriminator_variables())}

    # -- forward pieces -------------------------------------------------------------------------
    def region_masks(self, images, training=False):
        return self.mask_network(images, training=training)

    def _codes(self, batch, step, stream):
        return tf.random.stateless_normal([batch, self.z_dim], self.replica_seed(step, stream))

    def redraw(self, images, masks, z, training):
        """Redraws one region per sample.

        Samples are split into n contiguous chunks and chunk k redraws region k: a stratified draw
        of i ~ U{1..n} that runs each generator only on its own samples (the data are shuffled,
        so position carries no information).

        Args:
            images: `[b, R, R, 3]` real images.
            masks: `[b, R, R, n]` soft masks.
            z: `[b, nz]` codes.
        Returns:
            `(composites [b, R, R, 3], regions [b] int32)`.
        """
        b = images.shape[0]
        bounds = [k * b // self.num_regions for k in range(self.num_regions + 1)]
        composites, regions = [], []
        for k, generator in enumerate(self.generators):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            m = masks[lo:hi, :, :, k:k + 1]
            drawn = generator(m, z[lo:hi], training=training)
            composites.append(drawn + (1.0 - m) * images[lo:hi])
            regions.append(tf.fill([hi - lo], k))
        return tf.concat(composites, 0), tf.concat(regions, 0)

    def redraw_every_region(self, images, masks, z, training):
        """Redraws each region of every sample (the authors' code), region by region.

        Args:
            images: `[b, R, R, 3]`; masks: `[b, R, R, n]`; z: `[n * b, nz]`, block k for region k.
        Returns:
            `(composites [n * b, R, R, 3]` (block k: region k redrawn), `generated [b, R, R, 3]` (every
            region redrawn: the sum of the n drawn regions, which the encoder reads)).
        """
        b = images.shape[0]
        composites, drawn = [], []
        for k, generator in enumerate(self.generators):
            m = masks[..., k:k + 1]
            drawn.append(generator(m, z[k * b:(k + 1) * b], training=training))
            composites.append(drawn[-1] + (1.0 - m) * images)
        return tf.concat(composites, 0), tf.add_n(drawn)

    def _fakes(self, images, masks, z, training):
        """The composites D judges and what the encoder reads: `(composites, encoder_input, regions)`,
        `regions [b]` the region redrawn in each encoder input, or None when the encoder must recover
        all n codes (every-region mode)."""
        if self.settings.redraw_every_region:
            composites, generated = self.redraw_every_region(images, masks, z, training)
            return composites, generated, None
        composites, regions = self.redraw(images, masks, z, training)
        return composites, composites, regions

    def _codes_per_step(self, b):
        return b * self.num_regions if self.settings.redraw_every_region else b

    # -- training phases ------------------------------------------------------------------------
    def phase_gradients(self, phase, batches, step):
        if phase == "generator":
            return self._generator_gradients(batches[0]["image"], step)
        if phase == "discriminator":
            return self._discriminator_gradients(batches[0]["image"], batches[1]["image"], step)
        raise ValueError(f"ReDO has no phase {phase!r}; phases are {self.phases}")

    def _generator_gradients(self, images, step):
        b = images.shape[0]
        z = self._codes(self._codes_per_step(b), step, stream=0)
        mask_vars = self.mask_network.trainable_variables
        gen_vars = self._generator_variables()
        enc_vars = self._encoder_variables()
        with tf.GradientTape(persistent=True) as tape:
            masks = self.mask_network(images, training=True)
            composites, encoder_input, regions = self._fakes(images, masks, z, training=True)
            if self.encoder is None and encoder_input is composites:  # one pass through the shared trunk
                logits, codes = self.discriminator(composites, training=True)
            else:
                logits, _ = self.discriminator(composites, training=True)
                encoder = self.encoder if self.encoder is not None else self.discriminator
                _, codes = encoder(encoder_input, training=True)
            if regions is None:  # every region redrawn: all n codes, [b, n, nz] against z's n blocks
                info = losses.information_conservation_loss(
                    codes, tf.transpose(tf.reshape(z, [self.num_regions, b, self.z_dim]), [1, 0, 2]))
                info = tf.reduce_mean(info, axis=1)
            else:
                info = losses.information_conservation_loss(
                    tf.gather(codes, regions, axis=1, batch_dims=1), z)
            adversarial = losses.per_source_example(losses.hinge_generator_loss(logits), b)
            per_example = adversarial + self.settings.info_weight * info
            mask_priors = self._mask_priors(images, masks, step)
            for weight, value in mask_priors.values():
                per_example += weight * value
            total = tf.nn.compute_average_loss(per_example)
            info_total = tf.nn.compute_average_loss(self.settings.info_weight * info)
        # F and the G_k descend the whole loss; the encoder only the information term (in the
        # shared-trunk arrangement the adversarial term must not train D's trunk from G's side).
        # Two backward passes, not three: F and the G_k share the one through D and G.
        mask_and_gen_grads = optimizers.gradients(tape, total, mask_vars + gen_vars, self.mask_optimizer)
        mask_grads = mask_and_gen_grads[:len(mask_vars)]
        gen_grads = optimizers.rescaled(mask_and_gen_grads[len(mask_vars):], self.mask_optimizer,
                                        self.generator_optimizer)
        enc_grads = optimizers.gradients(tape, info_total, enc_vars, self.encoder_optimizer)
        del tape
        coverage = losses.mask_coverage(masks[..., :1])
        named_losses = {"generator_adversarial": adversarial, "information": info,
                        **{name: value for name, (_, value) in mask_priors.items()}}
        metrics = PhaseMetrics(
            losses={**named_losses, "generator_total": per_example},
            mask_coverage=coverage,
            diagnostics={"mask/binariness": losses.mask_binariness(masks[..., :1])})
        return metrics, {"mask": mask_grads, "generator": gen_grads, "encoder": enc_grads}

    def _mask_priors(self, images, masks, step):
        """tfseg's optional terms on F's masks, not the paper's (on F only): `{name: (weight, [b])}`,
        only those switched on."""
        s = self.settings
        priors = {}
        if self._object_size_prior_on():
            priors["object_size"] = (s.object_size_weight, self._object_size_loss(masks))
        if s.binarization_weight > 0:
            priors["mask_binarization"] = (s.binarization_weight,
                                           losses.mask_binarization_loss(masks[..., :1]))
        if s.equivariance_weight > 0:
            priors["mask_equivariance"] = (s.equivariance_weight, self._equivariance_loss(images, masks, step))
        return priors

    def _equivariance_loss(self, images, masks, step):
        """`[b]` disagreement of F with itself under one random crop per image (F only: the masks
        are F's own, and the crops of the images carry no gradient to other networks)."""
        boxes = equivariance.random_crop_boxes(images.shape[0], self.settings.equivariance_min_scale,
                                               self.replica_seed(step, stream=1))
        r = self.resolution
        masks_of_crops = self.mask_network(equivariance.crop(images, boxes, r), training=True)
        return equivariance.equivariance_loss(masks_of_crops, equivariance.crop(masks, boxes, r))

    def _object_size_loss(self, masks):
        """`[b]` hinges of the size prior on region 0 (below the min or above the max coverage)."""
        s = self.settings
        region0 = masks[..., :1]
        return (losses.mask_size_loss(region0, s.object_min_coverage)
                + losses.mask_excess_loss(region0, s.object_max_coverage))

    def _discriminator_gradients(self, images, real_images, step):
        b = images.shape[0]
        # The same z as the generator phase, redrawn by the *updated* F and G (reference order).
        z = self._codes(self._codes_per_step(b), step, stream=0)
        masks = self.mask_network(images, training=True)
        composites = tf.stop_gradient(self._fakes(images, masks, z, training=True)[0])
        d_vars = self._discriminator_variables()
        with tf.GradientTape() as tape:
            real_logits, _ = self.discriminator(real_images, training=True)
            fake_logits, _ = self.discriminator(composites, training=True)
            per_example = losses.hinge_discriminator_loss(real_logits, fake_logits)
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, d_vars, self.discriminator_optimizer)
        metrics = PhaseMetrics(losses={"discriminator": per_example},
                               diagnostics={"discriminator/real": real_logits,
                                            "discriminator/fake": losses.per_source_example(fake_logits, b)})
        return metrics, grads

    # -- summaries ------------------------------------------------------------------------------
    def summary_images(self, images, step):
        b = images.shape[0]
        masks = self.mask_network(images, training=False)
        out = {"input": images}
        for k, generator in enumerate(self.generators):
            m = masks[..., k:k + 1]
            z = tf.random.stateless_normal([b, self.z_dim], [self.base_seed, 10_000 + k])
            out[f"region_{k}_mask"] = m
            out[f"region_{k}_redrawn"] = generator(m, z) + (1.0 - m) * images
        return out

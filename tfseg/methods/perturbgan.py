"""PerturbGAN (Bielski & Favaro 2019): segmentation emerges from a perturbed layered generator.

G(z) draws a background B, a foreground F and a mask m. Before the critic sees the composite,
F and m are shifted together by a random integer offset drawn independently of z (and B's
contrast is jittered): x_hat = T[m] * T[F] + (1 - T[m]) * J(B). A generator that does not put the
object, and only the object, in (F, m) draws scenes that look wrong once shifted, so m becomes a
segmentation of what G draws (docs/methods.md §1).

Training runs in three stages (one `tfseg.train` command, each stage resumable):
1. "generator": the WGAN-GP critic and the layered generator, mask size and binarization losses.
2. "encoder": with G and D frozen, an encoder E maps a real photo to G's styles so that the
   unshifted composite of G(E(x)) reconstructs x (L_auto = |x_E - x|_1 + |D_feat(x_E) - D_feat(x)|^2);
   the mask of x is G_mask(E(x)) (the paper's route, §1.5).
3. "segmenter": a feed-forward mask network distilled from generated (composite, mask) pairs.
Validation scores the encoder route during stage 2 and the distilled segmenter during stage 3;
the best-on-validation checkpoint records which one it used, so the better route is the one that
is evaluated on test and exported.
"""
import dataclasses
from typing import Optional

import gin
import tensorflow as tf
from keras import ops

from tfseg import losses
from tfseg.errors import ConfigError
from tfseg.methods.base import Method, PhaseMetrics, Stage
from tfseg.methods import distillation, ema
from tfseg.methods.distillation import DistilledSegmenter
from tfseg.methods.growth import GrowthSchedule
from tfseg.methods import optimizers
from tfseg.methods.optimizers import gan_adam
from tfseg.modeling import perturbation
from tfseg.modeling.layers import upsample_nearest
from tfseg.modeling.stylegan import LayeredGenerator, ProGANDiscriminator

ENCODER_ROUTE, DISTILLED_ROUTE = 0, 1
ENCODER_TARGETS = ("w", "z")
# Random streams of `replica_seed`, one per draw of a step (< 16).
_D_Z, _D_SHIFT, _D_JITTER, _D_NOISE, _D_MIX = 0, 1, 2, 3, 4
_G_Z, _G_SHIFT, _G_JITTER, _G_NOISE = 5, 6, 7, 8
_E_Z = 9
_S_Z, _S_SHIFT, _S_JITTER, _S_NOISE = 11, 12, 13, 14
_MIX_DECISION = 10  # one draw per step (and replica), shared by the D and G phases, as the reference decides


@gin.configurable("perturbgan", module="tfseg.methods")
@dataclasses.dataclass(frozen=True)
class PerturbGANSettings:
    """PerturbGAN's hyper-parameters (gin: `tfseg.methods.perturbgan.<field>`); paper values where
    it gives them. The trainer calls it with `resolution` and `seed`; `build()` makes the method.

    Attributes:
        resolution: image side R (set by the trainer).
        min_mask_coverage: eta of the mask size hinge (required; per data set: car 0.25, horse
            0.20, chair and bird 0.15).
        z_dim, w_dim: latent and style sizes (paper: 512).
        mapping_layers: depth of each mapping network (paper: 8).
        channel_base, max_channels: synthesis widths, min(max_channels, channel_base // r) at
            resolution r (paper: 16384, 512; CPU default: 1024, 64).
        discriminator_channel_base, discriminator_max_channels: the same for D and E (None: as G).
        single_generator: one 7-channel synthesis network (ablation (h)).
        shared_mapping: one mapping network for background and foreground (`common_style`).
        shift_fraction: beta; shifts are drawn in [-beta R, beta R] per axis (0 disables: ablation (b)).
        background_contrast_jitter: s of the contrast factor U[1 - s, 1 + s] (0 disables; paper
            row (d) uses 0.3).
        max_mask_coverage: optional upper hinge max(0, mean(m) - max), weighted like the lower one
            (not in the paper; None disables it).
        mask_size_weight, binarization_weight: gamma_1 and gamma_2 (2.0 each).
        gradient_penalty_weight, drift_weight: lambda_GP (10) and epsilon_drift (1e-3).
        learning_rate: Adam lr of G and D (mapping networks at 0.01x through equalized lr_mul).
        encoder_learning_rate: Adam lr of the encoder E (stage 2).
        reconstruction_weight, feature_weight: weights of the two L_auto terms (1, 1).
        encoder_target: what the encoder predicts from a photo: "z", one latent code that G's
            mapping networks turn into styles (the paper's figure; the default), or "w", one style
            vector per synthesis network (tfseg's default before; runs made then need this binding
            to resume or export). Measured on Flowers-17 from one generator (perturbgan_folder.gin,
            1,500 generator steps, then 500 encoder steps each): validation fg IoU of the encoder
            route 0.486 / 0.531 with "z" against 0.411 / 0.495 with "w" at encoder steps 250 / 500.
            (On the embedded data the generator does not learn the layout, so the route scores
            ~0.23 either way and cannot tell them apart.)
        synthetic_latent_weight: extra term regressing the latent (w or z) of generated images (0: off).
        segmenter_width, segmenter_residual_blocks, segmenter_learning_rate: the distilled
            segmenter (stage 3).
        distill_on_shifted: distil on shifted composites (more object positions) or unshifted ones.
        style_mixing_probability: chance per step that the critic and generator steps draw mixed
            styles (two codes; each synthesis network switches from the first to the second after a
            random block). The paper's code: 0.9 (`perturbgan_paper_base.gin`); tfseg's CPU configs
            were measured without it (0). Only the adversarial stage mixes.
        progressive_start: grow the generator and critic progressively from this resolution (the
            reference: 8) up to R, one "generator_<r>" stage per resolution, each fading in over
            `progressive_phase_images` real images and then training as long at full weight
            (`tfseg.methods.growth`). None (tfseg's CPU configs): train at R from the first step, one
            "generator" stage.
        progressive_phase_images: real images of one fade-in (and of one stable phase): the
            reference's `--phase`, 600k.
        progressive_batch_multiples: `{resolution: k}`: the critic's real batch and G's batch at that
            resolution are k x `TrainConfig.batch_size` (one step reads k batches); others 1.
            The reference's `--sched` with batch 32: {8: 8, 16: 4, 32: 2}.
        progressive_learning_rates: `{resolution: lr}` of G and D while growing (others:
            `learning_rate`). The reference's `--sched`: 0.0015 at 128, 0.001 below.
        style_gain: equalized gain of G's AdaIN style layers (tfseg: 1; the authors' StyleGAN v1
            port: sqrt(2), as every other equalized layer of it).
        equalized_noise: G's per-channel noise strengths are equalized (x sqrt(2 / channels) at run
            time), as the authors' port; False (tfseg): plain weights.
        fused_scale_from: from this resolution up, G's blocks upsample with one fused transposed
            conv and D's blocks downsample with one fused stride-2 conv (the authors' port: 128);
            None (tfseg): nearest x2 + conv, conv + average pool everywhere.
        discriminator_widen_first_conv: D's block r -> r/2 changes width in its first conv (the
            authors' port) rather than its second (tfseg). D only; the encoder keeps tfseg's layout.
        discriminator_output_gain: equalized gain of D's output layer (tfseg 1; the port sqrt(2)).
        pytorch_adam_epsilon: G's and D's Adams add epsilon to the bias-corrected sqrt(v), as the
            authors' torch.optim.Adam, instead of to sqrt(v) (Keras: a 10x larger epsilon on the
            first step). Measured on the one-iteration equivalence test: weights whose gradients are
            ~1e-8 moved up to 0.5 lr apart from the authors' without it.
        ema_decay: keep an exponential moving average of G's weights with this decay per generator
            step (the reference's `g_running`: 0.999, `perturbgan_paper_base.gin`) and let every
            later use of G sample from it: the encoder route, the distilled segmenter's training
            pairs, the image summaries. None (tfseg's CPU configs, measured so): G itself.
        seed: seeds weights and every random draw.
    """
    resolution: int
    min_mask_coverage: float = gin.REQUIRED
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 1024
    max_channels: int = 64
    discriminator_channel_base: Optional[int] = None
    discriminator_max_channels: Optional[int] = None
    single_generator: bool = False
    shared_mapping: bool = False
    shift_fraction: float = 0.125
    background_contrast_jitter: float = 0.0
    max_mask_coverage: Optional[float] = None
    mask_size_weight: float = 2.0
    binarization_weight: float = 2.0
    gradient_penalty_weight: float = 10.0
    drift_weight: float = 1e-3
    learning_rate: float = 1e-3
    encoder_learning_rate: float = 1e-4
    reconstruction_weight: float = 1.0
    feature_weight: float = 1.0
    encoder_target: str = "z"
    synthetic_latent_weight: float = 0.0
    segmenter_width: int = 32
    segmenter_residual_blocks: int = 2
    segmenter_learning_rate: float = 1e-3
    distill_on_shifted: bool = True
    style_mixing_probability: float = 0.0
    progressive_start: Optional[int] = None
    progressive_phase_images: int = 600_000
    progressive_batch_multiples: dict = dataclasses.field(default_factory=dict)
    progressive_learning_rates: dict = dataclasses.field(default_factory=dict)
    style_gain: float = 1.0
    equalized_noise: bool = False
    fused_scale_from: Optional[int] = None
    discriminator_widen_first_conv: bool = False
    discriminator_output_gain: float = 1.0
    pytorch_adam_epsilon: bool = False
    ema_decay: Optional[float] = None
    seed: int = 0

    def __post_init__(self):
        if self.encoder_target not in ENCODER_TARGETS:
            raise ConfigError(f"tfseg.methods.perturbgan.encoder_target must be one of {ENCODER_TARGETS}, "
                              f"got {self.encoder_target!r}")
        self.growth()  # checks the progressive bindings before any network is built

    def growth(self):
        """The `GrowthSchedule` of the adversarial stage, or None without progressive growing."""
        if self.progressive_start is None:
            return None
        return GrowthSchedule(self.progressive_start, self.resolution, self.progressive_phase_images,
                              dict(self.progressive_batch_multiples), dict(self.progressive_learning_rates),
                              self.learning_rate, "generator", ("discriminator", "generator"),
                              "tfseg.methods.perturbgan")

    def build(self):
        return PerturbGAN(self)


class PerturbGAN(Method):
    """PerturbGAN's networks, optimizers and three training stages, built from `PerturbGANSettings`."""

    def __init__(self, settings):
        super().__init__(settings, name="perturbgan")
        s = settings
        self.z_dim = s.z_dim
        d_base = s.discriminator_channel_base or s.channel_base
        d_max = s.discriminator_max_channels or s.max_channels
        self.growth = s.growth()
        grow_from = s.progressive_start
        port = dict(style_gain=s.style_gain, equalized_noise=s.equalized_noise,
                    fused_scale_from=s.fused_scale_from)
        self.generator = LayeredGenerator(s.resolution, s.z_dim, s.w_dim, s.mapping_layers,
                                          s.channel_base, s.max_channels, s.single_generator,
                                          s.shared_mapping, grow_from=grow_from, name="generator", **port)
        self.generator_ema = None
        if s.ema_decay is not None:
            self.generator_ema = LayeredGenerator(s.resolution, s.z_dim, s.w_dim, s.mapping_layers,
                                                  s.channel_base, s.max_channels, s.single_generator,
                                                  s.shared_mapping, grow_from=grow_from, name="generator_ema",
                                                  **port)
        self.discriminator = ProGANDiscriminator(s.resolution, d_base, d_max, grow_from=grow_from,
                                                 widen_first_conv=s.discriminator_widen_first_conv,
                                                 output_gain=s.discriminator_output_gain,
                                                 fused_scale_from=s.fused_scale_from, name="discriminator")
        self.encoder = ProGANDiscriminator(s.resolution, d_base, d_max,
                                           outputs=(self.generator.num_styles * s.w_dim
                                                    if s.encoder_target == "w" else s.z_dim),
                                           minibatch_std=False, name="encoder")
        self.segmenter = DistilledSegmenter(s.segmenter_width, s.segmenter_residual_blocks,
                                            name="segmenter")
        # While growing, a phase leaves the layers of higher resolutions (and the heads it no longer
        # uses) without gradient; Adam skips them, and counts its steps per weight (as PyTorch's
        # Adam, the reference's) so that a layer fading in starts with a fresh bias correction.
        growing = self.growth is not None
        self.partial_gradient_phases = ("discriminator", "generator") if growing else ()
        self.generator_optimizer = gan_adam(s.learning_rate, steps_per_variable=growing,
                                            pytorch_epsilon=s.pytorch_adam_epsilon)
        self.discriminator_optimizer = gan_adam(s.learning_rate, steps_per_variable=growing,
                                                pytorch_epsilon=s.pytorch_adam_epsilon)
        self.encoder_optimizer = gan_adam(s.encoder_learning_rate)
        self.segmenter_optimizer = gan_adam(s.segmenter_learning_rate)
        # Which route segments real photos; stored in checkpoints, set by `begin_stage`.
        self.segmentation_route = tf.Variable(DISTILLED_ROUTE, dtype=tf.int32, trainable=False,
                                              name="segmentation_route")
        self.stage_name = "generator"
        #: The resolution the adversarial stage trains at now (below R only while growing).
        self.level = None
        self.global_batch = None
        #: `{(phase, name): value}` replacing a random draw of the adversarial phases ("z", "mixing"
        #: = (z2, crossovers), "noise", "shifts", "jitter", "interpolation"): the equivalence tests
        #: inject the authors' draws (tests/test_reference_perturbgan.py). None in training.
        self.injected_draws = None

    # -- structure ------------------------------------------------------------------------------
    phases = ("discriminator", "generator", "encoder", "segmenter")
    checkpoint_hint = ("PerturbGAN runs made before its encoder predicted z need "
                       "--gin_bindings=\"tfseg.methods.perturbgan.encoder_target='w'\"")
    # The segmenter predicts the foreground layer's mask: region 0 is the object.
    foreground_by_construction = True

    def stages(self):
        adversarial = (Stage("generator", ("discriminator", "generator"), 1, evaluates=False),)
        if self.growth is not None:
            adversarial = self.growth.stages()
        return (*adversarial,
                Stage("encoder", ("encoder",), 1, evaluates=True),
                Stage("segmenter", ("segmenter",), 0, evaluates=True))

    @property
    def adversarial_stage(self):
        """Whether the current stage trains G and D (the first, or one per resolution while growing)."""
        return self.stage_name.startswith("generator")

    def begin_stage(self, name):
        self.stage_name = name
        self.level = self.growth.level_of(name) if self.growth is not None else None
        if self.level is not None:
            for optimizer in (self.generator_optimizer, self.discriminator_optimizer):
                optimizer.learning_rate = self.level.learning_rate
        if name == "encoder":
            self.segmentation_route.assign(ENCODER_ROUTE)
        elif name == "segmenter":
            self.segmentation_route.assign(DISTILLED_ROUTE)

    def build_for_training(self, global_batch_size):
        r = self.resolution
        self.global_batch = global_batch_size
        self.segmenter_batch_size = distillation.samples_per_replica(global_batch_size)
        images = tf.zeros([2, r, r, 3])
        self.generator(tf.zeros([2, self.z_dim]))
        if self.generator_ema is not None:
            self.generator_ema(tf.zeros([2, self.z_dim]))
            ema.copy(self._ema_pairs())  # the average starts at G's initial weights
        self.discriminator(images)
        for level in () if self.growth is None else self.growth.levels[:-1]:  # the lower fromRGBs
            self.discriminator(tf.zeros([2, level.resolution, level.resolution, 3]))
        self.encoder(images)
        self.segmenter(images)
        self.build_optimizers()

    def _ema_pairs(self):
        return ema.weight_pairs(self.generator_ema, self.generator)

    @property
    def sampler(self):
        """The generator every use after the adversarial steps samples from: G's EMA when kept."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def apply_phase(self, phase, grads):
        super().apply_phase(phase, grads)
        if phase == "generator" and self.generator_ema is not None:
            ema.update(self._ema_pairs(), self.settings.ema_decay)

    def phase_optimizers(self):
        return {"generator": (self.generator_optimizer, self.generator.trainable_variables),
                "discriminator": (self.discriminator_optimizer, self.discriminator.trainable_variables),
                "encoder": (self.encoder_optimizer, self.encoder.trainable_variables),
                "segmenter": (self.segmenter_optimizer, self.segmenter.trainable_variables)}

    # -- generation -----------------------------------------------------------------------------
    def growth_args(self, step):
        """`{"resolution", "alpha"}` for G and D at global step `step` of a growth stage ({}
        otherwise: R, nothing faded)."""
        if self.level is None:
            return {}
        alpha = self.growth.alpha(self.level, step, self.global_batch) if self.level.fades_in else None
        return {"resolution": self.level.resolution, "alpha": alpha}

    def real_at_level(self, batches):
        """The real images of one critic step: every batch the step read, at the current resolution
        (area-averaged down from R while growing)."""
        real = batches[0]["image"] if len(batches) == 1 else ops.concatenate([b["image"] for b in batches], 0)
        factor = self.resolution // self.level.resolution if self.level is not None else 1
        return real if factor == 1 else ops.average_pool(real, factor, factor)

    def _drawn(self, phase, name, draw):
        """`draw()`, unless the test injected this draw of `phase` (`injected_draws`)."""
        if self.injected_draws is not None and (phase, name) in self.injected_draws:
            return self.injected_draws[(phase, name)]
        return draw()

    def render(self, batch, seeds, perturb=True, mixing_seed=None, generator=None, growth=None, phase=None):
        """Draws layers from fresh z and composites them, shifted (training path) or not.

        Args:
            batch: number of samples.
            seeds: dict of stateless seeds "z", "noise", "shift", "jitter" (`[2]` each).
            perturb: apply the shift and the background contrast jitter.
            mixing_seed: the step's seed of the style-mixing decision (None: no mixing); used only
                when `style_mixing_probability` > 0.
            generator: the network that draws (default: the trained G; `sampler` after stage 1).
            growth: `growth_args(step)` while growing: draw at that resolution, faded in.
            phase: the phase drawing ("discriminator", "generator"), for `injected_draws`.
        Returns:
            dict: the generator's layers, "composite" (unshifted), "shifted_mask" and
            "shifted_composite" `[b, r, r, 3|1]` (r = R unless growing).
        """
        growth = growth or {}
        size = growth.get("resolution", self.resolution)
        z = self._drawn(phase, "z", lambda: tf.random.stateless_normal([batch, self.z_dim], seeds["z"]))
        mixing = None
        if mixing_seed is not None and self.settings.style_mixing_probability > 0:
            mixing = self._drawn(phase, "mixing", lambda: self._mixing(batch, seeds["z"], mixing_seed, size))
        generator = self.generator if generator is None else generator
        out = dict(generator(z, noise_seed=seeds["noise"], mixing=mixing, noise=self._drawn(phase, "noise", lambda: None),
                             **growth))
        out["composite"] = perturbation.composite(out["foreground"], out["mask"], out["background"])
        if not perturb:
            out["shifted_mask"], out["shifted_composite"] = out["mask"], out["composite"]
            return out
        shifts = self._drawn(phase, "shifts", lambda: perturbation.random_shifts(
            batch, size, self.settings.shift_fraction, seeds["shift"]))
        moved = perturbation.shift_layers(ops.concatenate([out["foreground"], out["mask"]], -1), shifts)
        background = perturbation.contrast_jitter(out["background"], self.settings.background_contrast_jitter,
                                                  seeds["jitter"], factors=self._drawn(phase, "jitter", lambda: None))
        out["shifted_mask"] = moved[..., 3:]
        out["shifted_composite"] = perturbation.composite(moved[..., :3], moved[..., 3:], background)
        return out

    def _mixing(self, batch, z_seed, decision_seed, resolution=None):
        """`(z2, crossovers)` for `LayeredGenerator`: with probability `style_mixing_probability`
        a crossover per synthesis network in 0..blocks-2 of the blocks drawing `resolution` (so the
        second style draws at least the last of them; default R), else crossovers past the last
        block (no mixing)."""
        g = self.generator
        blocks = g.blocks_at(resolution or self.resolution)
        mix = tf.random.stateless_uniform([], decision_seed) < self.settings.style_mixing_probability
        z2 = tf.random.stateless_normal([batch, self.z_dim], tf.random.experimental.stateless_fold_in(z_seed, 1))
        drawn = tf.random.stateless_uniform([g.num_styles], tf.random.experimental.stateless_fold_in(z_seed, 2),
                                            minval=0, maxval=max(1, blocks - 1), dtype=tf.int32)
        return z2, tf.where(mix, drawn, g.num_blocks - 1)

    def _seeds(self, step, z, noise, shift, jitter):
        return {name: self.replica_seed(step, stream) for name, stream in
                (("z", z), ("noise", noise), ("shift", shift), ("jitter", jitter))}

    # -- segmentation of real images ------------------------------------------------------------
    def latent_of(self, images):
        """What the encoder predicts for images `[b, R, R, 3]`: styles `[b, num_styles, w_dim]`
        (`encoder_target` "w") or a code `[b, z_dim]` ("z")."""
        codes = self.encoder(images)
        if self.settings.encoder_target == "z":
            return codes
        return ops.reshape(codes, (-1, self.generator.num_styles, self.generator.w_dim))

    def styles_of(self, images):
        """The styles `[b, num_styles, w_dim]` G renders images `[b, R, R, 3]` with: the encoder's own,
        or its code through the mapping networks."""
        latent = self.latent_of(images)
        return self.sampler.styles(latent) if self.settings.encoder_target == "z" else latent

    def reconstruct(self, images):
        """G(E(x)) rendered without noise or perturbation: its layers and "composite"."""
        out = dict(self.sampler(styles=self.styles_of(images)))
        out["composite"] = perturbation.composite(out["foreground"], out["mask"], out["background"])
        return out

    def region_masks(self, images, training=False):
        mask = tf.cond(tf.equal(self.segmentation_route, ENCODER_ROUTE),
                       lambda: self.reconstruct(images)["mask"],
                       lambda: self.segmenter(images))
        return ops.concatenate([mask, 1.0 - mask], axis=-1)

    # -- training phases ------------------------------------------------------------------------
    def phase_gradients(self, phase, batches, step):
        if phase == "discriminator":
            return self._discriminator_gradients(self.real_at_level(batches), step)
        if phase == "generator":
            return self._generator_gradients(sum(b["image"].shape[0] for b in batches), step)
        if phase == "encoder":
            return self._encoder_gradients(batches[0]["image"], step)
        if phase == "segmenter":
            return self._segmenter_gradients(step)
        raise ValueError(f"PerturbGAN has no phase {phase!r}; phases are {self.phases}")

    def _discriminator_gradients(self, real, step):
        b = real.shape[0]
        growth = self.growth_args(step)
        fake = tf.stop_gradient(self.render(b, self._seeds(step, _D_Z, _D_NOISE, _D_SHIFT, _D_JITTER),
                                            mixing_seed=self.replica_seed(step, _MIX_DECISION), growth=growth,
                                            phase="discriminator")
                                ["shifted_composite"])
        u = self._drawn("discriminator", "interpolation",
                        lambda: tf.random.stateless_uniform([b], self.replica_seed(step, _D_MIX)))
        variables = self.discriminator.trainable_variables

        def critic(images):
            return self.discriminator(images, alpha=growth.get("alpha"))

        with tf.GradientTape() as tape:
            real_scores = critic(real)
            fake_scores = critic(fake)
            penalty = losses.gradient_penalty(critic, losses.interpolate(real, fake, u))
            per_example = (losses.wasserstein_discriminator_loss(real_scores, fake_scores)
                           + self.settings.gradient_penalty_weight * penalty
                           + self.settings.drift_weight * losses.drift_loss(real_scores))
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, variables, self.discriminator_optimizer)
        metrics = PhaseMetrics(
            losses={"discriminator": per_example, "gradient_penalty": penalty},
            diagnostics={"discriminator/real": real_scores, "discriminator/fake": fake_scores,
                         "discriminator/wasserstein_distance": real_scores - fake_scores})
        return metrics, grads

    def _generator_gradients(self, batch, step):
        variables = self.generator.trainable_variables
        growth = self.growth_args(step)
        with tf.GradientTape() as tape:
            out = self.render(batch, self._seeds(step, _G_Z, _G_NOISE, _G_SHIFT, _G_JITTER),
                              mixing_seed=self.replica_seed(step, _MIX_DECISION), growth=growth,
                              phase="generator")
            scores = self.discriminator(out["shifted_composite"], alpha=growth.get("alpha"))
            adversarial = losses.wasserstein_generator_loss(scores)
            # Both mask terms on the shifted mask, as in the reference code (docs/methods.md §1.9).
            size = losses.mask_size_loss(out["shifted_mask"], self.settings.min_mask_coverage)
            if self.settings.max_mask_coverage is not None:
                # Not in the paper: keeps the mask from taking the whole scene (the inverted
                # solution, background in the mask), like Labels4Free's max-foreground hinge.
                size = size + losses.mask_excess_loss(out["shifted_mask"], self.settings.max_mask_coverage)
            binary = losses.mask_binarization_loss(out["shifted_mask"])
            per_example = (adversarial + self.settings.mask_size_weight * size
                           + self.settings.binarization_weight * binary)
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, variables, self.generator_optimizer)
        metrics = PhaseMetrics(
            losses={"generator_adversarial": adversarial, "mask_size": size,
                    "mask_binarization": binary, "generator_total": per_example},
            mask_coverage=losses.mask_coverage(out["mask"]),
            diagnostics={"mask/binariness": losses.mask_binariness(out["mask"])})
        return metrics, grads

    def _encoder_gradients(self, real, step):
        variables = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            rebuilt = self.reconstruct(real)["composite"]
            reconstruction = ops.mean(ops.abs(rebuilt - real), axis=(1, 2, 3))
            feature = ops.mean(ops.square(self.discriminator.features(rebuilt)
                                          - tf.stop_gradient(self.discriminator.features(real))),
                               axis=(1, 2, 3))
            per_example = (self.settings.reconstruction_weight * reconstruction
                           + self.settings.feature_weight * feature)
            latent = tf.zeros_like(per_example)
            if self.settings.synthetic_latent_weight:
                # Generated images have known latents: regress them too (not in the poster's loss).
                z = tf.random.stateless_normal([real.shape[0], self.z_dim],
                                               self.replica_seed(step, _E_Z))
                styles = tf.stop_gradient(self.sampler.styles(z))
                drawn = self.sampler(styles=styles)
                images = perturbation.composite(drawn["foreground"], drawn["mask"], drawn["background"])
                target = styles if self.settings.encoder_target == "w" else z
                error = ops.square(self.latent_of(tf.stop_gradient(images)) - target)
                latent = ops.mean(ops.reshape(error, (ops.shape(error)[0], -1)), axis=1)
                per_example = per_example + self.settings.synthetic_latent_weight * latent
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, variables, self.encoder_optimizer)
        metrics = PhaseMetrics(losses={"reconstruction_l1": reconstruction, "discriminator_features": feature,
                                       "synthetic_latent": latent, "encoder_total": per_example})
        return metrics, grads

    def _segmenter_gradients(self, step):
        out = self.render(self.segmenter_batch_size, self._seeds(step, _S_Z, _S_NOISE, _S_SHIFT, _S_JITTER),
                          perturb=self.settings.distill_on_shifted, generator=self.sampler)
        return self.segmenter.gradients(out["shifted_composite"], out["shifted_mask"],
                                        self.segmenter_optimizer)

    # -- summaries ------------------------------------------------------------------------------
    def summary_images(self, images, step):
        b = images.shape[0]
        fixed = {name: tf.constant([self.base_seed, 20_000 + k], tf.int64)
                 for k, name in enumerate(("z", "noise", "shift", "jitter"))}
        growth = self.growth_args(step)
        out = self.render(b, fixed, generator=self.sampler, growth=growth)
        factor = self.resolution // growth.get("resolution", self.resolution)
        named = {name: out[name] if factor == 1 else upsample_nearest(out[name], factor)
                 for name in ("background", "foreground", "mask", "composite", "shifted_composite")}
        if not self.adversarial_stage:
            named["real"] = images
            if self.stage_name == "encoder":
                named["reconstruction"] = self.reconstruct(images)["composite"]
            named["real_mask"] = self.region_masks(images)[..., :1]
        return named

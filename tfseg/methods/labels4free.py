"""Labels4Free (Abdal et al. 2021): segmentation from a frozen StyleGAN2 and a tiny alpha network.

A StyleGAN2 generator G is split into a foreground generator G_fg (G itself, truncated by psi) and
a background generator G_bg (the same weights with the 4x4 activations zeroed, so no coarse layout
and no object survives). An alpha network A reads G_fg's finest features and outputs a soft mask;
the composite alpha * fg + (1 - alpha) * bg must fool a discriminator. Only A and D are trained.
Because fg and bg are independent, the only way for A to make the composite look real is to keep
the object of fg and let bg show elsewhere (docs/methods.md §3).

Training runs in three stages (one `tfseg.train` command, each stage resumable):
1. "stylegan2": StyleGAN2 on the data set: non-saturating logistic loss, lazy R1, an exponential
   moving average (EMA) of G. Skipped (0 steps) when starting from a converted checkpoint
   (`pretrained_dir`, written by `tools/convert_stylegan2.py`).
2. "alpha": with the EMA generator frozen, A and a discriminator (fresh, or stage 1's / the
   converted one) on composites: binarization, minimum-foreground hinge, optional
   maximum-foreground hinge, lazy R1 on D (docs/methods.md §3.4).
3. "segmenter": the shared `DistilledSegmenter` on generated (composite, alpha) pairs. It is what
   segments real photos (`region_masks`), since A only segments images G draws.

Randomness is stateless (`replica_seed`) and every noise map is passed to the generator
explicitly, so a resumed run draws exactly what an uninterrupted one would, on any number of
replicas. Stage 1 has StyleGAN2's path-length regularisation (`path_length_weight`, 2 by default;
its running mean is checkpointed) and style mixing (`style_mixing_probability`, 0.9 by default),
both on by default; the CPU configs (demo_labels4free.gin and those including it) switch both off.
Not implemented: a separately trained background generator.

Against the authors' stage-2 loop (Labels4Free's train.py; tests/test_reference_labels4free.py
checks one and ten iterations): their lazy R1 step also descends D's logit of the first real
image (`alpha_r1_logit_weight`, 1 in the paper configs, 0 by default); their minibatch-stddev
group is min(per-GPU batch 2, 4) = 2 (`mbstd_group` in the paper configs); their EMA of the
alpha network is never read nor saved, so there is none here. `latent_masks` gives A's mask for
latent codes (the export's `serve_latent` signature; what `tools/convert_labels4free.py` runs
serve besides the distilled segmenter).
"""
import json
import os

import dataclasses
import functools
from typing import Optional

import gin
import tensorflow as tf
from absl import logging
from keras import ops

from tfseg import losses
from tfseg.errors import ConfigError
from tfseg.methods.base import Method, Periodic, PhaseMetrics, Stage
from tfseg.methods import distillation, ema
from tfseg.methods.distillation import DistilledSegmenter
from tfseg.methods import optimizers
from tfseg.methods.optimizers import gan_adam
from tfseg.modeling import stylegan2 as sg2
from tfseg.modeling.alpha_network import NUM_BLOCKS, AlphaNetwork

# Random streams of `replica_seed` (< 16), one per phase; each is split into the draws of a render.
_SG_D, _SG_G, _ALPHA_D, _ALPHA, _SEGMENTER, _SG_PATH_LENGTH = 0, 1, 2, 3, 4, 5
_W_AVG_SEED = 7
_PATH_LENGTH_DECAY, _PATH_LENGTH_BATCH_SHRINK = 0.01, 2  # StyleGAN2's
DISTILL_SOURCES = ("composite", "foreground")
ALPHA_DISCRIMINATORS = ("fresh", "stylegan2")


@gin.configurable("labels4free", module="tfseg.methods")
@dataclasses.dataclass(frozen=True)
class Labels4FreeSettings:
    """Labels4Free's hyper-parameters (gin: `tfseg.methods.labels4free.<field>`); reference values as
    defaults. The trainer calls it with `resolution` and `seed`; `build()` makes the method.

    Attributes:
        resolution: image side S (set by the trainer).
        z_dim, w_dim, mapping_layers, channel_base, max_channels: StyleGAN2's sizes (config-f:
            512, 512, 8, 32768, 512); ignored with `pretrained_dir`.
        discriminator_channel_base, discriminator_max_channels: D's widths (None: as G).
        mbstd_group: D's minibatch-stddev group, per replica: min(per-replica batch, mbstd_group)
            samples (the authors' per-GPU batch of 2 gives 2). Also overrides the group a converted
            discriminator's config.json records.
        pretrained_dir: a folder written by `tools/convert_stylegan2.py`; its generator (and
            discriminator) replace stage 1, whose budget should then be 0.
        learning_rate: stage 1 Adam lr of G and D (StyleGAN2: 0.002).
        r1_gamma, r1_interval: lazy R1 weight and interval, both stages (10, 16; 0 disables).
        alpha_r1_logit_weight: stage 2's lazy R1 step also minimises this weight times D's logit of
            the first real image of the (per-replica) batch, as the authors' train.py does
            (`+ 1.0 * real_pred[0]`, where rosinality has 0 *); 0 (default) is plain R1.
        pytorch_adam_epsilon: the Adams of G, D, A and stage 2's D add epsilon (1e-8) to the
            bias-corrected sqrt(v), as PyTorch's Adam in the authors' code does, instead of to sqrt(v)
            (Keras), which on the first steps is a 10x larger epsilon (1e-8 / sqrt(1 - beta_2^t)):
            it moves weights whose gradients are ~1e-7 differently (measured: alpha network's
            weights 8e-3 apart from theirs after one step without it, 1e-6 with it).
        ema_decay: per-step decay of G's EMA (rosinality: 0.5 ** (32 / 10000) = 0.9978).
        path_length_weight, path_length_interval: stage 1's lazy path-length regularisation of G
            (StyleGAN2: 2, every 4th step, on half the batch, running mean with decay 0.01): as in
            the references a G step of its own (phase "path_length", a `Periodic` one) after G's
            adversarial step, with G's Adam c-ratio interval / (interval + 1). On by default; 0
            disables it (the CPU configs were measured without it). The running mean is
            checkpointed (`path_length_mean`; the references restart it from 0), so a resumed run
            continues as an uninterrupted one (exactly on one replica; several keep a mean each, and
            a resumed run starts every replica at their average).
        style_mixing_probability: stage 1's style mixing (StyleGAN2: 0.9): the chance that a D or G
            step draws two codes and switches from the first's styles to the second's at a random
            layer. The CPU configs that train stage 1 were measured without it (0).
        truncation: psi of G_fg around w-bar (per data set: 1.0, 0.5 cat, 0.3 car).
        background_truncation: psi of G_bg (1.0 in training).
        zero_4x4: how G_bg is made: "output" (S = 256, 1024 models) or "input" (S = 512 car).
        shared_latent: fg and bg from the same z (the reference's training) or independent z.
        alpha_discriminator: "fresh" (random init, the paper's "weak" D) or "stylegan2" (stage 1's
            or the converted D: the car recipe's `--use_disc`).
        alpha_learning_rate: nominal lr of stage 2 (A uses 4/5 of it, D 16/17).
        adversarial_weight: w_adv (`sat_weight`).
        mask_loss_weight: lambda on binarization + minimum-foreground hinge (`loss_multiplier`).
        min_foreground_coverage: phi_fg (0.25).
        min_background_coverage, background_coverage_weight: phi_bg and w_bg of the optional
            maximum-foreground hinge (`bg_coverage_wt`; 0 in the paper reproductions).
        alpha_blocks: how many of the finest synthesis blocks A reads (6).
        segmenter_width, segmenter_residual_blocks, segmenter_learning_rate: the distilled
            segmenter (stage 3).
        distill_on: distil on "composite" images or on the "foreground" G_fg draws.
        export_latent_signature: the SavedModel of `tfseg.export` also has `serve_latent`: z
            `[b, z_dim]` -> A's mask and G_fg's image (`latent_masks`); it then holds the generator
            too. `tools/convert_labels4free.py` turns it on.
        seed: seeds weights and every random draw.
    """
    resolution: int
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    max_channels: int = 512
    discriminator_channel_base: Optional[int] = None
    discriminator_max_channels: Optional[int] = None
    mbstd_group: int = 4
    pretrained_dir: Optional[str] = None
    learning_rate: float = 0.002
    r1_gamma: float = 10.0
    r1_interval: int = 16
    alpha_r1_logit_weight: float = 0.0
    ema_decay: float = 0.9978
    pytorch_adam_epsilon: bool = False
    style_mixing_probability: float = 0.9
    path_length_weight: float = 2.0
    path_length_interval: int = 4
    truncation: float = 1.0
    background_truncation: float = 1.0
    zero_4x4: str = "output"
    shared_latent: bool = True
    alpha_discriminator: str = "fresh"
    alpha_learning_rate: float = 2e-4
    adversarial_weight: float = 1.0
    mask_loss_weight: float = 3.0
    min_foreground_coverage: float = 0.25
    min_background_coverage: float = 0.0
    background_coverage_weight: float = 0.0
    alpha_blocks: int = NUM_BLOCKS
    segmenter_width: int = 32
    segmenter_residual_blocks: int = 2
    segmenter_learning_rate: float = 1e-3
    distill_on: str = "composite"
    export_latent_signature: bool = False
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("alpha_discriminator", ALPHA_DISCRIMINATORS), ("distill_on", DISTILL_SOURCES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"tfseg.methods.labels4free.{name} must be one of {allowed}, "
                                  f"got {getattr(self, name)!r}")

    def build(self):
        return Labels4Free(self)


class Labels4Free(Method):
    """Labels4Free's networks, optimizers and three stages, built from `Labels4FreeSettings`."""

    def __init__(self, settings):
        super().__init__(settings, name="labels4free")
        s = settings
        g_config, d_config = self._network_configs()
        self.z_dim = g_config["z_dim"]
        self.generator = sg2.Generator(**g_config, name="generator")
        # The EMA copy is the generator stages 2 and 3 use (and the one published checkpoints hold).
        self.generator_ema = sg2.Generator(**g_config, name="generator_ema")
        self.discriminator = sg2.Discriminator(**d_config, name="discriminator")
        # A fresh D is a network of its own (checkpointed apart from stage 1's D); otherwise
        # `alpha_discriminator` is stage 1's D (see the property).
        self.fresh_discriminator = (sg2.Discriminator(**d_config, name="alpha_discriminator")
                                    if s.alpha_discriminator == "fresh" else None)
        self.alpha_network = AlphaNetwork(min(s.alpha_blocks, len(self.generator.blocks)),
                                          name="alpha_network")
        self.segmenter = DistilledSegmenter(s.segmenter_width, s.segmenter_residual_blocks,
                                            name="segmenter")
        r1_ratio = s.r1_interval / (s.r1_interval + 1.0) if s.r1_interval else 1.0
        path_length_ratio = (s.path_length_interval / (s.path_length_interval + 1.0)
                             if self._path_length_on() else 1.0)
        adam = functools.partial(gan_adam, pytorch_epsilon=s.pytorch_adam_epsilon)
        self.generator_optimizer = adam(s.learning_rate, lazy_ratio=path_length_ratio)
        self.discriminator_optimizer = adam(s.learning_rate, lazy_ratio=r1_ratio)
        # Stage 2: the reference's ratios (4/5 on A is a leftover of g_reg_every = 4, kept).
        self.alpha_optimizer = adam(s.alpha_learning_rate, lazy_ratio=4.0 / 5.0)
        self.alpha_discriminator_optimizer = adam(s.alpha_learning_rate, lazy_ratio=r1_ratio)
        self.segmenter_optimizer = gan_adam(s.segmenter_learning_rate)
        self.stage_name = "stylegan2"
        #: Whether the export adds the `serve_latent` signature (`latent_masks`).
        self.serves_latents = bool(s.export_latent_signature)

    def _network_configs(self):
        """The generator's and the discriminator's constructor arguments: from the settings, or
        fixed by a converted checkpoint (`pretrained_dir`, whose sizes override the gin widths)."""
        s = self.settings
        g_config = dict(resolution=s.resolution, z_dim=s.z_dim, w_dim=s.w_dim,
                        mapping_layers=s.mapping_layers, channel_base=s.channel_base,
                        max_channels=s.max_channels)
        d_config = dict(resolution=s.resolution,
                        channel_base=s.discriminator_channel_base or s.channel_base,
                        max_channels=s.discriminator_max_channels or s.max_channels,
                        mbstd_group=s.mbstd_group)
        if not s.pretrained_dir:
            return g_config, d_config
        config = read_pretrained_config(s.pretrained_dir, s.resolution)
        if s.alpha_discriminator == "stylegan2" and not config["discriminator"]:
            raise ConfigError(f"alpha_discriminator='stylegan2' needs a discriminator in "
                              f"{s.pretrained_dir}; convert the checkpoint with its 'd'")
        converted_d = config["discriminator"]
        if converted_d:
            converted_d = dict(converted_d, mbstd_group=s.mbstd_group)   # the setting wins
        return config["generator"], converted_d or d_config

    @property
    def alpha_discriminator(self):
        """The D of stage 2: a fresh one, or stage 1's (the converted one with `pretrained_dir`)."""
        return self.fresh_discriminator if self.fresh_discriminator is not None else self.discriminator

    # -- structure ------------------------------------------------------------------------------
    phases = ("discriminator", "r1", "generator", "path_length", "alpha_discriminator", "alpha_r1", "alpha",
              "segmenter")
    # The segmenter predicts the foreground layer's mask: region 0 is the object.
    foreground_by_construction = True
    partial_gradient_phases = ("r1", "alpha_r1", "path_length")
    # Named in the message that refuses a checkpoint of another layout (tfseg.training.checkpointing).
    checkpoint_hint = ("Labels4Free runs with path-length regularisation made before its running mean was "
                       "checkpointed (path_length_mean) need --gin_bindings=\"tfseg.methods.labels4free."
                       "path_length_weight=0\"; a stage 1 not yet over then trains on without the penalty")

    def stages(self):
        # Lazy R1 (StyleGAN2's order): on every r1_interval-th step, after D's logistic step, a D
        # step of its own on the penalty alone; likewise the path-length penalty after G's step.
        # Validation scores the distilled segmenter only: before stage 3 it is untrained.
        s = self.settings
        lazy = (lambda name: (Periodic(name, s.r1_interval),)) if s.r1_gamma and s.r1_interval else (lambda name: ())
        path_length = (Periodic("path_length", s.path_length_interval),) if self._path_length_on() else ()
        return (Stage("stylegan2", ("discriminator", *lazy("r1"), "generator", *path_length), 1,
                      evaluates=False),
                Stage("alpha", ("alpha_discriminator", *lazy("alpha_r1"), "alpha"), 1, evaluates=False),
                Stage("segmenter", ("segmenter",), 0, evaluates=True))

    def _path_length_on(self):
        return bool(self.settings.path_length_weight and self.settings.path_length_interval)

    def begin_stage(self, name):
        self.stage_name = name
        if name != "stylegan2" and not self.settings.pretrained_dir and self.settings.truncation != 1.0:
            # w-bar of a generator trained here: the mean of 4096 mapped z (deterministic, so a
            # resumed run recomputes the same value). Converted checkpoints carry their own.
            self.generator_ema.compute_w_avg(4096, seed=self.base_seed * 1000 + _W_AVG_SEED)

    def build_for_training(self, global_batch_size):
        r = self.resolution
        self.segmenter_batch_size = distillation.samples_per_replica(global_batch_size)
        sg2.build_generator(self.generator, 2)
        sg2.build_generator(self.generator_ema, 2)
        images = tf.zeros([2, r, r, 3])
        self.discriminator(images)
        self.alpha_discriminator(images)
        _, features = self.generator_ema(tf.zeros([2, self.z_dim]), return_features=True,
                                         noise=self._zero_noise())
        self.alpha_network(features)
        self.segmenter(images)
        if self.settings.pretrained_dir:
            self._load_pretrained()
        else:
            ema.copy(self._ema_pairs())  # the EMA starts at G's initial weights
        if self._path_length_on():
            # The running mean of G's path lengths (StyleGAN2): each replica keeps its own, as each of
            # the reference's GPUs does (a mirrored variable would need a cross-replica sync inside the
            # step's control flow, which tf.distribute forbids); read across replicas it is their mean.
            # An attribute of the model, so checkpoints hold it ("model/path_length_mean", saved as the
            # replicas' mean, restored into each): a resumed run continues the mean an uninterrupted
            # one has (the references restart it from 0). Made only when the penalty is on, so runs
            # without it keep their checkpoint layout.
            self.path_length_mean = tf.Variable(
                0.0, trainable=False, name="path_length_mean", synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.MEAN)
        self.build_optimizers()

    def _load_pretrained(self):
        """Copies a converted checkpoint into G, its EMA and D (a resumed run then restores its own)."""
        directory = self.settings.pretrained_dir
        for generator in (self.generator, self.generator_ema):
            generator.load_weights(os.path.join(directory, sg2.GENERATOR_WEIGHTS))
        path = os.path.join(directory, sg2.DISCRIMINATOR_WEIGHTS)
        if os.path.exists(path):
            self.discriminator.load_weights(path)
        logging.info("Labels4Free: generator%s loaded from %s",
                     " and discriminator" if os.path.exists(path) else "", directory)

    def _ema_pairs(self):
        return ema.weight_pairs(self.generator_ema, self.generator)

    def phase_optimizers(self):
        return {"generator": (self.generator_optimizer, self.generator.trainable_variables),
                "discriminator": (self.discriminator_optimizer, self.discriminator.trainable_variables),
                "alpha": (self.alpha_optimizer, self.alpha_network.trainable_variables),
                "alpha_discriminator": (self.alpha_discriminator_optimizer,
                                        self.alpha_discriminator.trainable_variables),
                "r1": (self.discriminator_optimizer, self.discriminator.trainable_variables),
                "path_length": (self.generator_optimizer, self.generator.trainable_variables),
                "alpha_r1": (self.alpha_discriminator_optimizer, self.alpha_discriminator.trainable_variables),
                "segmenter": (self.segmenter_optimizer, self.segmenter.trainable_variables)}

    # -- generation -----------------------------------------------------------------------------
    def _zero_noise(self):
        return [tf.zeros([1, r, r, 1]) for r in self.generator.noise_resolutions]

    def make_noise(self, batch, seed):
        """Explicit per-layer N(0, 1) noise maps `[batch, r, r, 1]` from a stateless seed `[2]`."""
        resolutions = self.generator.noise_resolutions
        seeds = tf.random.experimental.stateless_split(seed, len(resolutions))
        return [tf.random.stateless_normal([batch, r, r, 1], seeds[i])
                for i, r in enumerate(resolutions)]

    def sample(self, generator, batch, seed, mixing_probability=0.0):
        """Images `[batch, R, R, 3]` of `generator` for z and noise drawn from a seed `[2]`; with
        `mixing_probability` > 0, style mixing (`mixed_styles`) on that share of the calls."""
        z_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        z = tf.random.stateless_normal([batch, self.z_dim], z_seed)
        noise = self.make_noise(batch, noise_seed)
        if not mixing_probability:
            return generator(z, noise=noise)
        ws = self.mixed_styles(generator, z, tf.random.experimental.stateless_fold_in(seed, 1), mixing_probability)
        return generator(ws, noise=noise, input_is_latent=True)

    @staticmethod
    def mixed_styles(generator, z, seed, probability):
        """StyleGAN2's style mixing: per-layer styles `[b, num_ws, w_dim]`, those of z up to a random
        layer in 1..num_ws-1 and those of a second code after it, with `probability` (else z's)."""
        seeds = tf.random.experimental.stateless_split(seed, 3)
        ws = generator.map(z)
        other = generator.map(tf.random.stateless_normal(tf.shape(z), seeds[0]))
        mix = tf.random.stateless_uniform([], seeds[1]) < probability
        crossover = tf.random.stateless_uniform([], seeds[2], minval=1, maxval=generator.num_ws, dtype=tf.int32)
        crossover = tf.where(mix, crossover, generator.num_ws)
        first = tf.range(generator.num_ws) < crossover
        return tf.where(first[None, :, None], ws, other)

    def render_draws(self, batch, seed):
        """The random draws of one `render_layers` call: z, the background's z and the two sets of
        noise maps, from a stateless seed `[2]` (split in four)."""
        seeds = tf.random.experimental.stateless_split(seed, 4)
        z = tf.random.stateless_normal([batch, self.z_dim], seeds[0])
        # Training shares z between fg and bg (the reference); the test script draws them apart.
        z_bg = z if self.settings.shared_latent else tf.random.stateless_normal([batch, self.z_dim], seeds[1])
        return {"z": z, "z_background": z_bg, "noise": self.make_noise(batch, seeds[2]),
                "background_noise": self.make_noise(batch, seeds[3])}

    def render_layers(self, batch, seed):
        """Draws G_fg, G_bg, alpha and the composite from the frozen EMA generator.

        Args:
            batch: number of samples.
            seed: stateless seed `[2]`; split into z (fg, bg) and the two sets of noise maps
                (`render_draws`).
        Returns:
            dict of "foreground", "background", "composite" `[b, R, R, 3]` and "alpha"
            `[b, R, R, 1]`; alpha carries gradients to A only.
        """
        return self.render_from(**self.render_draws(batch, seed))

    def render_from(self, z, z_background, noise, background_noise):
        """`render_layers` for given draws (`render_draws`' keys)."""
        generator = self.generator_ema
        fg, features = generator(z, truncation_psi=self.settings.truncation, noise=noise,
                                 return_features=True)
        bg = generator(z_background, truncation_psi=self.settings.background_truncation,
                       noise=background_noise, zero_4x4=self.settings.zero_4x4)
        fg, bg = tf.stop_gradient(fg), tf.stop_gradient(bg)
        features = tf.nest.map_structure(tf.stop_gradient, features)
        alpha = self.alpha_network(features)
        return {"foreground": fg, "background": bg, "alpha": alpha,
                "composite": alpha * fg + (1.0 - alpha) * bg}

    def latent_masks(self, z):
        """A's mask of the images G_fg draws from latent codes, as the authors' samplers compute it:
        the EMA generator with its stored noise maps (rosinality `randomize_noise=False`) and
        `truncation` around its w-bar.

        Args:
            z: `[b, z_dim]`.
        Returns:
            `(alpha [b, R, R, 1] in (0, 1), the foreground images [b, R, R, 3])`.
        """
        images, features = self.generator_ema(z, truncation_psi=self.settings.truncation,
                                              randomize_noise=False, return_features=True)
        return self.alpha_network(features), images

    # -- segmentation of real images ------------------------------------------------------------
    def region_masks(self, images, training=False):
        mask = self.segmenter(images)
        return ops.concatenate([mask, 1.0 - mask], axis=-1)

    # -- training phases ------------------------------------------------------------------------
    def phase_gradients(self, phase, batches, step):
        if phase == "discriminator":
            real = batches[0]["image"]
            fake = self.sample(self.generator, real.shape[0], self.replica_seed(step, _SG_D),
                               self.settings.style_mixing_probability)
            return self._discriminator_gradients(self.discriminator, self.discriminator_optimizer, real, fake)
        if phase == "r1":
            return self._r1_gradients(self.discriminator, self.discriminator_optimizer, batches[0]["image"])
        if phase == "generator":
            return self._generator_gradients(batches[0]["image"].shape[0], step)
        if phase == "path_length":
            return self._path_length_gradients(batches[0]["image"].shape[0], step)
        if phase == "alpha_r1":
            return self._r1_gradients(self.alpha_discriminator, self.alpha_discriminator_optimizer,
                                      batches[0]["image"], self.settings.alpha_r1_logit_weight)
        if phase == "alpha_discriminator":
            real = batches[0]["image"]
            fake = self.render_layers(real.shape[0], self.replica_seed(step, _ALPHA_D))["composite"]
            return self._discriminator_gradients(self.alpha_discriminator, self.alpha_discriminator_optimizer,
                                                 real, fake)
        if phase == "alpha":
            return self._alpha_gradients(batches[0]["image"].shape[0], step)
        if phase == "segmenter":
            return self._segmenter_gradients(step)
        raise ValueError(f"Labels4Free has no phase {phase!r}; phases are {self.phases}")

    def _discriminator_gradients(self, discriminator, optimizer, real, fake):
        """The logistic D loss on real and generated images (R1 is a phase of its own: `_r1_gradients`).
        `optimizer` is the phase's (the one `phase_optimizers` applies with: its loss scale counts)."""
        fake = tf.stop_gradient(fake)
        variables = discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real_scores = discriminator(real)
            fake_scores = discriminator(fake)
            adversarial = losses.logistic_discriminator_loss(real_scores, fake_scores)
            total = tf.nn.compute_average_loss(adversarial)
        grads = optimizers.gradients(tape, total, variables, optimizer)
        metrics = PhaseMetrics(losses={"discriminator": adversarial},
                               diagnostics={"discriminator/real": real_scores,
                                            "discriminator/fake": fake_scores})
        return metrics, grads

    def _r1_gradients(self, discriminator, optimizer, real, logit_weight=0.0):
        """Lazy R1, the references' way: (gamma / 2) * interval * R1 on the real batch, its own D step,
        run every `r1_interval`-th step (a `Periodic` phase); the interval scaling and Adam's
        c-ratio (`lazy_ratio` of D's optimizer) are StyleGAN2's. `logit_weight` adds that weight
        times D's logit of the replica's first real image (the authors' stage-2 R1 step,
        `alpha_r1_logit_weight`); replicas average it, as DDP averages the authors' GPUs."""
        s = self.settings
        with tf.GradientTape() as tape:
            r1, scores = losses.r1_penalty(discriminator, real, with_scores=True)
            total = tf.nn.compute_average_loss(0.5 * s.r1_gamma * s.r1_interval * r1)
            if logit_weight:
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                total = total + logit_weight * scores[0] / replicas
        grads = optimizers.gradients(tape, total, discriminator.trainable_variables, optimizer)
        return PhaseMetrics(losses={"r1": r1}), grads

    def _generator_gradients(self, batch, step):
        variables = self.generator.trainable_variables
        s = self.settings
        with tf.GradientTape() as tape:
            fake = self.sample(self.generator, batch, self.replica_seed(step, _SG_G),
                               s.style_mixing_probability)
            adversarial = losses.logistic_generator_loss(self.discriminator(fake))
            total = tf.nn.compute_average_loss(adversarial)
        grads = optimizers.gradients(tape, total, variables, self.generator_optimizer)
        return PhaseMetrics(losses={"generator": adversarial}), grads

    def _path_length_gradients(self, batch, step):
        """Lazy path-length regularisation, a G step of its own every `path_length_interval`-th step
        (a `Periodic` phase): weight * interval * (length - running mean)^2, as the references."""
        s = self.settings
        running = self.path_length_mean
        with tf.GradientTape() as tape:
            penalty, mean = self._path_length_penalty(batch, self.replica_seed(step, _SG_PATH_LENGTH),
                                                      running)
            total = tf.nn.compute_average_loss(s.path_length_weight * s.path_length_interval * penalty)
        # A non-finite step keeps the old mean (the trainer undoes the step's weights; a NaN mean would
        # make every later penalty NaN).
        mean = tf.stop_gradient(mean)
        running.assign(tf.where(tf.math.is_finite(mean), mean, running))
        grads = optimizers.gradients(tape, total, self.generator.trainable_variables,
                                     self.generator_optimizer)
        return PhaseMetrics(losses={"path_length": penalty}), grads

    def _path_length_penalty(self, batch, seed, running):
        """(path length - its running mean)^2 on half the batch, as StyleGAN2.
        Returns `(the penalty broadcast to [batch] (a per-example metric of the phase), the new mean)`."""
        shrunk = max(1, batch // _PATH_LENGTH_BATCH_SHRINK)
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 2), 4)
        z = tf.random.stateless_normal([shrunk, self.z_dim], seeds[0])
        ws = self.mixed_styles(self.generator, z, seeds[1], self.settings.style_mixing_probability)
        lengths = losses.path_lengths(self.generator, ws, self.make_noise(shrunk, seeds[2]), seeds[3])
        mean = running + _PATH_LENGTH_DECAY * (tf.reduce_mean(lengths) - running)
        penalty = tf.reduce_mean(tf.square(lengths - mean))  # through the new mean too, as rosinality
        return tf.fill([batch], penalty), mean

    def alpha_losses(self, alpha, scores):
        """Per-example terms of A's objective (docs/methods.md §3.4).

        Args:
            alpha: `[b, R, R, 1]` in (0, 1).
            scores: `[b]` D's logits on the composites.
        Returns:
            dict of `[b]` tensors: "adversarial", "binarization", "min_foreground",
            "max_foreground" and "total" = w_adv L_adv + lambda (L_bin + L_fg) + w_bg L_bg.
        """
        terms = {"adversarial": losses.logistic_generator_loss(scores),
                 "binarization": losses.mask_binarization_loss(alpha),
                 "min_foreground": losses.mask_size_loss(alpha, self.settings.min_foreground_coverage),
                 # L_bg = max(0, phi_bg - (1 - mean alpha)) = max(0, mean alpha - (1 - phi_bg)).
                 "max_foreground": losses.mask_excess_loss(alpha,
                                                           1.0 - self.settings.min_background_coverage)}
        terms["total"] = (self.settings.adversarial_weight * terms["adversarial"]
                          + self.settings.mask_loss_weight * (terms["binarization"] + terms["min_foreground"])
                          + self.settings.background_coverage_weight * terms["max_foreground"])
        return terms

    def _alpha_gradients(self, batch, step):
        variables = self.alpha_network.trainable_variables
        with tf.GradientTape() as tape:
            out = self.render_layers(batch, self.replica_seed(step, _ALPHA))
            terms = self.alpha_losses(out["alpha"], self.alpha_discriminator(out["composite"]))
            total = tf.nn.compute_average_loss(terms["total"])
        grads = optimizers.gradients(tape, total, variables, self.alpha_optimizer)
        metrics = PhaseMetrics(losses={f"alpha_{name}": value for name, value in terms.items()},
                               mask_coverage=losses.mask_coverage(out["alpha"]),
                               diagnostics={"mask/binariness": losses.mask_binariness(out["alpha"])})
        return metrics, grads

    def _segmenter_gradients(self, step):
        out = self.render_layers(self.segmenter_batch_size, self.replica_seed(step, _SEGMENTER))
        return self.segmenter.gradients(out[self.settings.distill_on], out["alpha"], self.segmenter_optimizer)

    # The last phase of a step that updates G; the EMA follows it, once per step (as the
    # references accumulate once after both G updates). Set by `begin_step` while a step is traced.
    _last_generator_phase = "generator"

    def begin_step(self, phases):
        self._last_generator_phase = "path_length" if "path_length" in phases else "generator"

    def apply_phase(self, phase, grads):
        super().apply_phase(phase, grads)
        if phase == self._last_generator_phase:
            self.update_ema()

    def update_ema(self):
        """ema <- decay * ema + (1 - decay) * G, for every trained variable of G (`methods.ema`)."""
        ema.update(self._ema_pairs(), self.settings.ema_decay)

    # -- summaries ------------------------------------------------------------------------------
    def summary_images(self, images, step):
        b = images.shape[0]
        fixed = tf.constant([self.base_seed, 20_000], tf.int64)
        out = self.render_layers(b, fixed)
        named = {}
        if self.stage_name == "stylegan2":
            named["generator"] = self.sample(self.generator, b, fixed)
        named.update({"foreground": out["foreground"], "background": out["background"],
                      "alpha": out["alpha"], "composite": out["composite"]})
        if self.stage_name == "segmenter":
            named["real"] = images
            named["real_mask"] = self.region_masks(images)[..., :1]
        return named


def read_pretrained_config(directory, resolution):
    """The `config.json` of a converted checkpoint, checked against the run's resolution.

    Raises:
        ConfigError: no converted checkpoint in `directory`, or a different resolution.
    """
    path = os.path.join(directory, sg2.CONFIG_FILE)
    if not os.path.exists(path):
        raise ConfigError(
            f"tfseg.methods.labels4free.pretrained_dir = '{directory}' holds no {sg2.CONFIG_FILE}. "
            "Convert a rosinality StyleGAN2 checkpoint first: python tools/convert_stylegan2.py "
            f"--checkpoint=<model>.pt --out={directory}")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config["generator"]["resolution"] != resolution:
        raise ConfigError(f"the converted generator in {directory} draws "
                          f"{config['generator']['resolution']} px images, but "
                          f"tfseg.training.TrainConfig.resolution = {resolution}")
    return config

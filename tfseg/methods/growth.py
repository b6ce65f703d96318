"""Progressive growing (Karras et al. 2018, as PerturbGAN's reference trains its StyleGANs).

The adversarial stage is split into one stage per resolution, from `start` (8 px in the reference)
up to the final resolution R, each trained on 2 x `phase_images` real images: the first half fades
the new resolution in (alpha rises linearly from 0 to 1 over `phase_images` images, the
reference's `alpha = min(1, (used_images + 1) / phase)`; no fade at the first resolution), the second
half trains it at alpha = 1. Each resolution may have its own batch (a multiple of the run's batch:
one step consumes that many batches of the input stream) and its own learning rate, the reference's
`--sched` tables.

Everything here is a function of the step, so a run stopped mid-fade resumes with the same alpha;
the networks blend their outputs with it (`tfseg.modeling.stylegan`).
"""
from typing import NamedTuple

import tensorflow as tf

from tfseg.errors import ConfigError
from tfseg.methods.base import Stage
from tfseg.modeling.resolutions import power_of_two_log2
from tfseg.modeling.stylegan import growth_resolutions


def _is_resolution(value):
    """Whether `value` is a size the networks have (a power of two >= 4)."""
    try:
        power_of_two_log2(value, 4, "StyleGAN")
    except (ValueError, TypeError):
        return False
    return isinstance(value, int) and not isinstance(value, bool)


class Level(NamedTuple):
    """One resolution of the growth: its stage's name, batch multiple and learning rate."""
    resolution: int
    stage_name: str
    batch_multiple: int
    learning_rate: float
    fades_in: bool


class GrowthSchedule:
    """The resolutions, stages, alpha and learning rate of progressive growing.

    Args:
        start: the first resolution (a power of two, 8 <= start <= resolution).
        resolution: the final resolution R.
        phase_images: real images of one fade-in (and of one stable phase).
        batch_multiples: `{resolution: k}`: the batch at that resolution is k x the run's batch
            (others: 1; resolutions the run does not train at are ignored, also below).
        learning_rates: `{resolution: lr}` (others: `default_learning_rate`).
        default_learning_rate: the method's learning rate.
        stage_prefix: stage names are `<prefix>_<resolution>`.
        phases: the phases of each growth stage.
        binding: the gin prefix of the settings, for error messages.
    """

    def __init__(self, start, resolution, phase_images, batch_multiples, learning_rates,
                 default_learning_rate, stage_prefix, phases, binding):
        if not (_is_resolution(start) and 8 <= start <= resolution):
            raise ConfigError(f"{binding}.progressive_start must be a power of two between 8 and the "
                              f"resolution ({resolution}), got {start}")
        if not isinstance(phase_images, int) or phase_images < 1:
            raise ConfigError(f"{binding}.progressive_phase_images must be a whole number >= 1, got {phase_images!r}")
        self.resolutions = growth_resolutions(resolution, start) + [resolution]
        for name, table, valid, wanted in (
                ("progressive_batch_multiples", batch_multiples,
                 lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "whole numbers >= 1"),
                ("progressive_learning_rates", learning_rates,
                 lambda v: isinstance(v, (int, float)) and v > 0, "numbers > 0")):
            # A table may name resolutions this run does not reach (the reference's tables go to 1024).
            unknown = sorted(r for r in table if not _is_resolution(r))
            if unknown:
                raise ConfigError(f"{binding}.{name} names {unknown}, which are not resolutions (powers "
                                  f"of two); progressive growing trains at {self.resolutions}")
            bad = {r: v for r, v in table.items() if not valid(v)}
            if bad:
                raise ConfigError(f"{binding}.{name} values must be {wanted}, got {bad}")
        self.phase_images = phase_images
        self.phases = tuple(phases)
        self.levels = [Level(r, f"{stage_prefix}_{r}", batch_multiples.get(r, 1),
                             float(learning_rates.get(r, default_learning_rate)), i > 0)
                       for i, r in enumerate(self.resolutions)]
        self._by_name = {level.stage_name: level for level in self.levels}

    def level_of(self, stage_name):
        """The `Level` a stage trains, or None for a stage that is not part of the growth."""
        return self._by_name.get(stage_name)

    def stages(self):
        """One `Stage` per resolution, each with a fixed budget of 2 x `phase_images` images."""
        return tuple(Stage(level.stage_name, self.phases, level.batch_multiple, evaluates=False,
                           images=2 * self.phase_images, note=self._note(level))
                     for level in self.levels)

    def _note(self, level):
        fade = f"fade-in over {self.phase_images} images" if level.fades_in else "no fade-in"
        return f"{level.resolution} px, lr {level.learning_rate:g}, {fade}"

    def first_steps(self, global_batch):
        """`{stage_name: first step}`: the growth stages are the first of the run, in this order."""
        first, out = 0, {}
        for stage in self.stages():
            out[stage.name] = first
            first += stage.fixed_steps(global_batch)
        return out

    def alpha(self, level, step, global_batch):
        """The fade-in weight of the new resolution at global step `step` (a number or a tensor,
        steps counted from 0): 1 for a level without fade-in, else min(1, images seen in the level,
        counting this step's, / `phase_images`)."""
        if not level.fades_in:
            return 1.0
        first = self.first_steps(global_batch)[level.stage_name]
        batch = global_batch * level.batch_multiple
        seen = (step - first + 1) * batch
        if isinstance(seen, (int, float)):
            return min(1.0, max(0.0, seen / self.phase_images))
        return tf.clip_by_value(tf.cast(seen, tf.float32) / float(self.phase_images), 0.0, 1.0)

"""`TrainConfig`: every knob of a run that is not a network's or the data's, declared once, here."""
import dataclasses
from typing import Any, Dict, Optional

import gin
import numpy as np

from tfseg.errors import ConfigError
from tfseg.evaluation.evaluator import RANKING_METRICS
from tfseg.training import precision as precision_lib


@gin.configurable(module="tfseg.training")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run that is not a network's or the data's (gin: `tfseg.training.TrainConfig.<field>`).

    Frozen: a run's settings do not change while it trains (`dataclasses.replace` makes a variant).
    Each value is checked when the config is made, before any network is built.

    Attributes:
        method: a method's settings class, e.g. `@tfseg.methods.redo`; called with `resolution` and
            `seed`, its `build()` makes the method.
        resolution: image side R used by data and networks.
        batch_size: global batch, split across replicas.
        num_steps: length of the run in training steps (of each stage not in `stage_steps`).
        stage_steps: steps per stage for methods trained in stages, `{stage name: steps}`; 0 skips a
            stage.
        log_every: steps between progress lines and scalar summaries.
        eval_every: steps between validation evaluations, image grids and best-checkpoint updates.
        checkpoint_every: steps between checkpoints (also written at the end and on Ctrl-C).
        eval_examples: validation images scored at each evaluation (None: all).
        eval_batch_size: batch size of evaluation.
        jit_compile: "auto" (XLA on GPU/TPU only), "true" or "false".
        collapse_threshold: restart the run if the smaller region's mean coverage falls below this on
            both the last training batch and validation (0, the default, disables it; a method whose
            runs may collapse binds it in its base config).
        collapse_before_step: ... at an evaluation at or before this step.
        max_restarts: give up restarting after this many.
        keep_checkpoints: how many recent checkpoints to keep.
        seed: seeds weights, codes and data order.
        skip_nonfinite: undo a step whose losses or gradients are not finite (keeps a copy of every
            variable; see `tfseg.training.nonfinite`).
        max_nonfinite_steps: that many non-finite steps in a row restore the last checkpoint.
        max_nonfinite_restores: past that many such restores the run stops with an error.
        exact_resume: on resume, advance the data stream past the batches already trained on, so a
            resumed run ends with the weights of an uninterrupted one (costs one pass of reading).
        foreground_region: which output region is the object; None chooses it: on a labelled
            validation split by fg IoU, else region 0 for a method whose mask layer is the object by
            construction, else the region that touches the image border least on a batch of
            training photos.
        optimize_graphs: let TensorFlow's graph optimiser (Grappler: constant folding, op fusion)
            rewrite the step before its first run. Off in smoke runs (`gin_configs/smoke.gin`): for a
            run of seconds it costs more than it saves; results do not change beyond float rounding.
        precision: "float32", "mixed_bfloat16" or "mixed_float16" (16-bit compute, float32
            variables, masks and losses; float16 with dynamic loss scaling): `tfseg.training.precision`.
            Training only; evaluation and export run in float32.
        selection_metric: the validation score that chooses the best checkpoint (and the test split's
            model), one of `tfseg.evaluation.evaluator.RANKING_METRICS`: "fg_iou" (fixed polarity, the
            default), or e.g. "redo_iou", which reproduction configs of ReDO use.
    """
    method: Any = gin.REQUIRED
    resolution: int = gin.REQUIRED
    batch_size: int = gin.REQUIRED
    num_steps: Optional[int] = None
    stage_steps: Optional[Dict[str, int]] = None
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    eval_examples: Optional[int] = 512
    eval_batch_size: int = 64
    jit_compile: str = "auto"
    collapse_threshold: float = 0.0
    collapse_before_step: int = 7000
    max_restarts: int = 5
    keep_checkpoints: int = 3
    seed: int = 0
    skip_nonfinite: bool = True
    max_nonfinite_steps: int = 10
    max_nonfinite_restores: int = 2
    exact_resume: bool = True
    foreground_region: Optional[int] = None
    optimize_graphs: bool = True
    precision: str = "float32"
    selection_metric: str = "fg_iou"

    def __post_init__(self):
        object.__setattr__(self, "stage_steps", dict(self.stage_steps or {}))
        self._check()

    def _check(self):
        """Raises ConfigError naming the binding for a value that cannot work."""
        def check(name, ok, wanted):
            value = getattr(self, name)
            if value is gin.REQUIRED:
                raise ConfigError(f"tfseg.training.TrainConfig.{name} is not set: bind it to {wanted}.")
            try:
                good = ok(value)
            except TypeError:
                good = False
            if not good:
                raise ConfigError(f"tfseg.training.TrainConfig.{name} = {value!r}: must be {wanted}.")

        def whole(low, none_ok=False):
            return lambda v: (v is None and none_ok) or (
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low)

        check("resolution", whole(4), "a whole number of pixels >= 4")
        check("batch_size", whole(1), "a whole number >= 1")
        check("num_steps", whole(0, none_ok=True), "a whole number >= 0, or None with stage_steps")
        for name in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "keep_checkpoints",
                     "max_nonfinite_steps"):
            check(name, whole(1), "a whole number >= 1")
        for name in ("max_restarts", "max_nonfinite_restores", "collapse_before_step", "seed"):
            check(name, whole(0), "a whole number >= 0")
        check("eval_examples", whole(1, none_ok=True), "a whole number >= 1, or None for all")
        check("collapse_threshold", lambda v: not isinstance(v, bool) and 0 <= float(v) <= 1,
              "a number in [0, 1]")
        check("stage_steps", lambda v: all(whole(0)(n) for n in v.values()),
              "a dict of stage name -> whole number of steps >= 0")
        check("foreground_region", whole(0, none_ok=True), "None (chosen for you) or a region index >= 0")
        for name in ("skip_nonfinite", "exact_resume", "optimize_graphs"):
            check(name, lambda v: isinstance(v, bool), "True or False")
        check("precision", lambda v: v in precision_lib.POLICIES,
              f"one of {', '.join(repr(p) for p in precision_lib.POLICIES)}")
        check("selection_metric", lambda v: v in RANKING_METRICS,
              f"one of {', '.join(repr(m) for m in RANKING_METRICS)}")

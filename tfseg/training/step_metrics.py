"""A training step's reports, typed on the host: losses, mask coverage, the smaller region's share.

A compiled step returns flat `{name: [global batch]}` arrays (`PhaseMetrics.flat` of every phase);
`StepMetrics.from_step` reads them back by the names `tfseg.methods.base` defines, so the duties of
the loop (console, TensorBoard, collapse detection) read fields, never name prefixes.
"""
import dataclasses
from typing import Optional

import numpy as np

from tfseg.methods.base import LOSS_PREFIX, MASK_COVERAGE


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """Means over the global batch of one logged step.

    Attributes:
        losses: `{name: mean}` of every phase's losses (names without the `loss/` prefix).
        mask_coverage, mask_coverage_min: mean and smallest share of an image in the object
            region, or None when no phase of the stage reports masks.
        smaller_region, smaller_region_min: the same for `min(coverage, 1 - coverage)`, the share of
            the smaller region: near 0, the masks have collapsed to one region.
        diagnostics: `{TensorBoard name: mean}` of everything else (e.g. "mask/binariness").
    """
    losses: dict
    mask_coverage: Optional[float] = None
    mask_coverage_min: Optional[float] = None
    smaller_region: Optional[float] = None
    smaller_region_min: Optional[float] = None
    diagnostics: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_step(cls, arrays):
        """From the flat `{name: array}` a compiled step returned (per-example values)."""
        arrays = {name: np.asarray(value, np.float64) for name, value in arrays.items()}
        losses = {name[len(LOSS_PREFIX):]: float(np.mean(value)) for name, value in arrays.items()
                  if name.startswith(LOSS_PREFIX)}
        diagnostics = {name: float(np.mean(value)) for name, value in arrays.items()
                       if not name.startswith(LOSS_PREFIX) and name != MASK_COVERAGE}
        coverage = arrays.get(MASK_COVERAGE)
        if coverage is None or coverage.size == 0:
            return cls(losses, diagnostics=diagnostics)
        smaller = np.minimum(coverage, 1.0 - coverage)
        return cls(losses, float(np.mean(coverage)), float(np.min(coverage)),
                   float(np.mean(smaller)), float(np.min(smaller)), diagnostics)

    def console_losses(self):
        """The losses a progress line shows: all but the totals (TensorBoard has those)."""
        return {name: value for name, value in self.losses.items() if not name.endswith("total")}

    def scalars(self):
        """`{TensorBoard name: value}`: losses under `loss/`, mask shares under `mask/`."""
        out = {LOSS_PREFIX + name: value for name, value in self.losses.items()}
        if self.mask_coverage is not None:
            out.update({MASK_COVERAGE: self.mask_coverage, MASK_COVERAGE + "_min": self.mask_coverage_min,
                        "mask/smaller_region": self.smaller_region,
                        "mask/smaller_region_min": self.smaller_region_min})
        out.update(self.diagnostics)
        return out

"""Generation-quality metrics (IS, IC-LPIPS variants, KID, FID), reproducible and usable offline.

``compute_generation_metrics`` returns a dict keyed by the constants in :mod:`.defaults`; weights are
found or prepared by :mod:`.weights` and recorded (name + sha256) in every result.
"""

from anobench.benchmarks.metrics.api import aggregate, compute_generation_metrics
from anobench.benchmarks.metrics.defaults import DEFAULTS, IC_LPIPS_VARIANTS, METRIC_NAMES

__all__ = ["DEFAULTS", "IC_LPIPS_VARIANTS", "METRIC_NAMES", "aggregate", "compute_generation_metrics"]

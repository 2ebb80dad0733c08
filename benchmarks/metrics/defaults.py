"""Result keys, defaults and the named IC-LPIPS variants (one table each, torch-fidelity style).

Example:
    >>> from anobench.benchmarks.metrics.defaults import IC_LPIPS_VARIANTS
    >>> IC_LPIPS_VARIANTS["anomalydiffusion"].net, IC_LPIPS_VARIANTS["anomalydiffusion"].max_per_cluster
    ('vgg', 50)
"""

from __future__ import annotations

from dataclasses import dataclass

# Metric names (CLI ``--metrics`` values and result keys).
KEY_IS = "is"
KEY_IC_LPIPS = "ic_lpips"
KEY_KID = "kid"
KEY_FID = "fid"
METRIC_NAMES = (KEY_IS, KEY_IC_LPIPS, KEY_KID, KEY_FID)
DEFAULT_METRICS = (KEY_IS, KEY_IC_LPIPS, KEY_KID)

# Keys of the result dictionary.
KEY_PER_TYPE = "per_type"  # {category: {defect: {metric: value}}}
KEY_PER_CATEGORY = "per_category"  # {category: {metric: value}}
KEY_OVERALL = "overall"  # {metric: value}
KEY_SETTINGS = "settings"
KEY_WEIGHTS = "weights"  # {weights name: {"path", "sha256", ...}}
KEY_UNAVAILABLE = "unavailable"  # {metric: reason}
# Per-type extras next to the metric values (``per_type`` rows, the genmetrics ``per_defect`` blocks).
KEY_N_GENERATED = "n_generated"
KEY_N_REAL_REFERENCE = "n_real_reference"  # real anomalies KID/FID compared with
KEY_IS_STD = "is_std"
KEY_KID_STD = "kid_std"
KEY_IC_LPIPS_CLUSTER_SCORES = "ic_lpips_cluster_scores"
KEY_IC_LPIPS_CLUSTER_SIZES = "ic_lpips_cluster_sizes"

DEFAULTS: dict[str, object] = {
    "metrics": DEFAULT_METRICS,
    "split_preset": "strict",
    "seed": 0,
    "ic_lpips_variant": "anomalydiffusion",
    # IS: torch-fidelity defaults (isc_splits 10, samples_shuffle True, rng_seed 2020), raw files.
    "is_resize": 0,  # 256 = SeaS ("resize all images to 256x256 before calculating the IS")
    # KID: torch-fidelity defaults, the subset size shrunk to the smaller of the two sets.
    "kid_subsets": 100,
    "kid_subset_size": 1000,
    "kid_reference": "all",  # the real anomalies of the type: "all" of them or only the "test" split
    "batch_size": 8,  # LPIPS batch size on CPU
}


@dataclass(frozen=True)
class ICLPIPSVariant:
    """One published IC-LPIPS recipe: backbone, per-cluster cap and image size."""

    name: str
    net: str  # "vgg" or "alex"
    max_per_cluster: int
    size: int
    source: str


IC_LPIPS_VARIANTS = {
    v.name: v
    for v in (
        ICLPIPSVariant(
            "anomalydiffusion", "vgg", 50, 256, "AnomalyDiffusion cal_ic_lpips.py / DualAnoDiff eval"
        ),
        ICLPIPSVariant("dfmgan", "alex", 200, 256, "DFMGAN metrics/lpips.py (Clustered LPIPS)"),
        ICLPIPSVariant("seas", "vgg", 140, 256, "SeaS utils/metrics/metrics_lpips.py"),
    )
}

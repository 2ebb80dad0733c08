"""The metric catalogue: every key a benchmark stage writes, and what tables, gate and CLI need to know of it.

One :class:`Metric` per key, in :data:`CATALOGUE` (torch-fidelity style: named constants, one
table). An entry says which stages write the key (``downstream``, ``detector``, ``classify``,
``genmetrics``) and where in a result JSON (``metrics``, the cell's values the gate and the report
read, and/or ``per_defect``, the per-defect-type blocks), its group, which way is better
(``higher``, ``lower``, or ``none`` for a descriptive statistic, which is never gated), its display
name and format, and the settings that select a variant of it. The keys themselves are constants
where the values are computed (``downstream/metrics.py``, ``generation/quality.py``,
``benchmarks/metrics/defaults.py``); the catalogue imports them.

Variants keep their key; the result records which one was computed:

* ``pixel_f1max``: ``evaluation.pixel_f1`` / ``anobench score --pixel-f1`` (``exact`` or
  ``grid-0.05``), recorded as ``pixel_f1_mode``;
* ``pixel_aupro``: always the exact curve; the MVTec script's 100-threshold approximation is the
  library function ``downstream.metrics.aupro_sampled`` and no stage writes it;
* ``ic_lpips``: ``genmetrics.ic_lpips_variant`` / ``--ic-lpips-variant``, recorded under
  ``settings.ic_lpips_variant``; ``is``/``kid``/``fid``: ``is_resize`` and ``kid_reference``.

Users of the catalogue: the report's tables, figures and page (groups, order, labels, formats),
the regression gate (direction; descriptive metrics are not gated) and the CLI summaries of ``run``,
``score``, ``metrics``, ``check`` and ``inspect``.

Adding a metric touches one place besides its computation:

1. compute it and write it under a named key constant defined next to the computation (in
   ``metrics`` and/or in the ``per_defect`` blocks of the stage's result);
2. add one ``Metric(...)`` entry to :data:`CATALOGUE`: its position there is its place in every
   table (groups in :data:`GROUPS` order, metrics in catalogue order), its ``direction`` decides
   how the gate compares it (``DESCRIPTIVE``: not gated);
3. run ``pytest tests/test_catalogue.py``: it runs a tiny grid of every stage and fails on any
   written key that step 2 missed, or any entry whose stage or place no longer writes it.

Example:
    >>> from anobench.benchmarks.metrics.catalogue import LOWER, metric
    >>> metric("kid").direction == LOWER, metric("kid").label, metric("mask_area").gated
    (True, 'KID', False)
    >>> metric("mask_area").format(0.0123), metric("image_auroc").format(0.91234)
    ('1.23%', '0.912')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.defaults import (
    IC_LPIPS_VARIANTS,
    KEY_FID,
    KEY_FID_EFFNET,
    KEY_IC_LPIPS,
    KEY_IC_LPIPS_ANOMALY,
    KEY_IC_LPIPS_CLUSTER_SCORES,
    KEY_IC_LPIPS_CLUSTER_SIZES,
    KEY_IS,
    KEY_IS_STD,
    KEY_KID,
    KEY_KID_EFFNET,
    KEY_KID_O2MAG,
    KEY_KID_STD,
    KEY_MASK_ADHERENCE,
    KEY_MASK_ADHERENCE_AP,
    KEY_N_GENERATED,
    KEY_N_REAL_REFERENCE,
    KEY_NN_DISTANCE,
    KEY_TYPE_FIDELITY,
    KEY_TYPE_FIDELITY_REGION,
)
from anobench.benchmarks.runner.stage_names import CLASSIFY, DETECTOR, DOWNSTREAM, GENMETRICS
from anobench.downstream.metrics import (
    CLS_ACCURACY,
    IMAGE_AP,
    IMAGE_AUROC,
    IMAGE_F1MAX,
    PIXEL_AP,
    PIXEL_AUPRO,
    PIXEL_AUROC,
    PIXEL_F1MAX,
    PIXEL_IOU,
    PIXEL_MIOU,
)
from anobench.generation.quality import (
    AREA_MEAN,
    AREA_MEDIAN,
    AREA_P5,
    AREA_P95,
    COMPONENT_BINS,
    COMPONENTS,
    COMPONENTS_MEAN,
    DEFECT_N,
    EMPTY_FRACTION,
    INSIDE_OBJECT,
    MASK_AREA,
    MASK_COMPONENTS,
    MASK_EMPTY,
    MASK_ON_OBJECT,
)

#: Which way is better. ``DESCRIPTIVE`` statistics have none and are never gated.
HIGHER, LOWER, DESCRIPTIVE = "higher", "lower", "none"
#: Where a key sits in a stage's result JSON.
CELL, PER_DEFECT = "metrics", "per_defect"

#: Groups, in table order: key (used in file names) -> section title.
GENERATION, PAIR_QUALITY, MASKS, DETECTION, LOCALIZATION, CLASSIFICATION = (
    "generation", "pair_quality", "masks", "detection", "localization", "classification",
)  # fmt: skip
GROUPS = {
    GENERATION: "Generation quality",
    PAIR_QUALITY: "Per-pair quality",
    MASKS: "Mask statistics",
    DETECTION: "Detection",
    LOCALIZATION: "Localization",
    CLASSIFICATION: "Classification",
}


@dataclass(frozen=True)
class Metric:
    """One metric key: who writes it, its group, its better direction and how to show it."""

    key: str
    label: str
    group: str
    direction: str
    stages: tuple[str, ...]
    places: tuple[str, ...] = (CELL,)
    digits: int = 3
    percent: bool = False
    headline: bool = False  # shown in the terminal summary of ``anobench run``
    note: str = ""  # what it is; the settings that choose its variant

    def __post_init__(self) -> None:
        if self.group not in GROUPS or self.direction not in (HIGHER, LOWER, DESCRIPTIVE):
            raise ValueError(
                f"metric {self.key}: unknown group {self.group!r} or direction {self.direction!r}"
            )

    @property
    def gated(self) -> bool:
        """True when the regression gate compares it (it has a better direction)."""
        return self.direction != DESCRIPTIVE

    def worse_by(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` in the better direction (negative: better)."""
        if not self.gated:
            raise ValueError(f"{self.key} is descriptive: it has no better direction")
        return baseline - value if self.direction == HIGHER else value - baseline

    def format(self, value: Any) -> str:
        """``value`` in this metric's display format (``-`` for a missing value).

        Example:
            >>> metric("ic_lpips_cluster_sizes").format([3, 2]), metric("components").format({"0": 1, "1": 4})
            ('3/2', '1/4/0/0/0')
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, dict):  # the components histogram
            return "/".join(str(value.get(b, 0)) for b in COMPONENT_BINS)
        if isinstance(value, list | tuple):
            return "/".join(self.format(v) for v in value)
        if self.percent:
            return f"{100 * value:.{self.digits}f}%"
        return f"{value:.{self.digits}f}"


_SEG, _GEN = (DOWNSTREAM, DETECTOR), (GENMETRICS,)  # who writes it
_CELL, _DEFECT, _BOTH = (CELL,), (PER_DEFECT,), (CELL, PER_DEFECT)  # where in the result JSON
_RESIZE = "genmetrics.is_resize / --is-resize: 0 raw files (DualAnoDiff), 256 (SeaS)"
_REFERENCE = "genmetrics.kid_reference / --kid-reference: all real anomalies of the type or the test split's"

#: Every metric key, in table order (grouped by ``GROUPS`` order).
# fmt: off
CATALOGUE: tuple[Metric, ...] = (
    # generation quality (category value = mean over its defect types; per-type extras in per_defect)
    Metric(KEY_IS, "IS", GENERATION, HIGHER, _GEN, _BOTH,
           note=f"Inception Score (torch-fidelity, 10 splits); {_RESIZE}"),
    Metric(KEY_IS_STD, "IS std", GENERATION, DESCRIPTIVE, _GEN, _DEFECT, note="IS std over the 10 splits"),
    Metric(KEY_IC_LPIPS, "IC-LPIPS", GENERATION, HIGHER, _GEN, _BOTH,
           note="intra-cluster LPIPS diversity; variant: genmetrics.ic_lpips_variant / --ic-lpips-variant "
           f"({', '.join(IC_LPIPS_VARIANTS)}), recorded as settings.ic_lpips_variant"),
    Metric(KEY_IC_LPIPS_CLUSTER_SCORES, "IC-LPIPS per cluster", GENERATION, DESCRIPTIVE, _GEN, _DEFECT),
    Metric(KEY_IC_LPIPS_CLUSTER_SIZES, "IC-LPIPS cluster sizes", GENERATION, DESCRIPTIVE, _GEN, _DEFECT,
           digits=0),
    Metric(KEY_KID, "KID", GENERATION, LOWER, _GEN, _BOTH, digits=4,
           note=f"Kernel Inception Distance; {_REFERENCE}; {_RESIZE}"),
    Metric(KEY_KID_STD, "KID std", GENERATION, DESCRIPTIVE, _GEN, _DEFECT, digits=4,
           note="KID std over its subsets"),
    Metric(KEY_FID, "FID", GENERATION, LOWER, _GEN, _BOTH, digits=2,
           note=f"Frechet Inception Distance; {_REFERENCE}; {_RESIZE}"),
    Metric(KEY_N_GENERATED, "Generated images", GENERATION, DESCRIPTIVE, _GEN, _DEFECT, digits=0),
    Metric(KEY_N_REAL_REFERENCE, "Real reference images", GENERATION, DESCRIPTIVE, _GEN, _DEFECT, digits=0,
           note="the real anomalies KID/FID compare with"),
    # per-pair quality (genmetrics.pair_quality; benchmarks/metrics/pair_quality.py): category value =
    # mean over its defect types; each has a reference value on the held-out real anomalies
    Metric(KEY_MASK_ADHERENCE, "Mask adherence", PAIR_QUALITY, HIGHER, _GEN, _BOTH,
           note="pixel AUROC of a PatchCore (EfficientNet-Lite0) map against the pair's own mask"),
    Metric(KEY_MASK_ADHERENCE_AP, "Mask adherence AP", PAIR_QUALITY, HIGHER, _GEN, _BOTH,
           note="the same map's pixel AP"),
    Metric(KEY_TYPE_FIDELITY, "Type fidelity", PAIR_QUALITY, HIGHER, _GEN, _BOTH,
           note="fraction of pairs whose nearest real anomaly (EfficientNet-Lite0) has the pair's type"),
    Metric(KEY_TYPE_FIDELITY_REGION, "Type fidelity (region)", PAIR_QUALITY, HIGHER, _GEN, _BOTH,
           note="the same on the square around each image's own mask, generated and real alike"),
    Metric(KEY_NN_DISTANCE, "NN distance", PAIR_QUALITY, LOWER, _GEN, _BOTH, digits=2,
           note="feature distance to the nearest real anomaly of the type"),
    Metric(KEY_KID_EFFNET, "KID (EffNet-Lite0)", PAIR_QUALITY, LOWER, _GEN, _BOTH, digits=4),
    Metric(KEY_FID_EFFNET, "FID (EffNet-Lite0)", PAIR_QUALITY, LOWER, _GEN, _BOTH, digits=2),
    Metric(KEY_KID_O2MAG, "KID x1000 (O2MAG)", PAIR_QUALITY, LOWER, _GEN, _BOTH, digits=2,
           note="torchvision Inception features; unavailable unless its weights are local"),
    Metric(KEY_IC_LPIPS_ANOMALY, "IC-LPIPS(a)", PAIR_QUALITY, HIGHER, _GEN, _BOTH,
           note="IC-LPIPS on the anomaly region's crop (SeaS)"),
    # mask statistics: category means over defect types (metrics), each type's row (per_defect "mask")
    Metric(MASK_AREA, "Mask area", MASKS, DESCRIPTIVE, _GEN, _CELL, digits=2, percent=True,
           note="mean mask area (fraction of the image)"),
    Metric(MASK_COMPONENTS, "Mask components", MASKS, DESCRIPTIVE, _GEN, _CELL,
           note="mean 8-connected components per mask"),
    Metric(MASK_EMPTY, "Empty masks", MASKS, DESCRIPTIVE, _GEN, _CELL, digits=1, percent=True),
    Metric(MASK_ON_OBJECT, "Mask on object", MASKS, DESCRIPTIVE, _GEN, _CELL, digits=1, percent=True,
           note="mean fraction of a mask inside the object foreground (object categories only)"),
    Metric(DEFECT_N, "Pairs", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=0),
    Metric(AREA_MEAN, "Area mean", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=2, percent=True),
    Metric(AREA_MEDIAN, "Area median", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=2, percent=True),
    Metric(AREA_P5, "Area p5", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=2, percent=True),
    Metric(AREA_P95, "Area p95", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=2, percent=True),
    Metric(COMPONENTS_MEAN, "Components mean", MASKS, DESCRIPTIVE, _GEN, _DEFECT),
    Metric(COMPONENTS, "Components 0/1/2/3/4+", MASKS, DESCRIPTIVE, _GEN, _DEFECT,
           note="how many masks have 0, 1, 2, 3, 4+ components"),
    Metric(EMPTY_FRACTION, "Empty masks", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=1, percent=True),
    Metric(INSIDE_OBJECT, "On object", MASKS, DESCRIPTIVE, _GEN, _DEFECT, digits=1, percent=True),
    # the segmenter (downstream) and the unsupervised detectors, on the held-out real test split
    Metric(IMAGE_AUROC, "Image AUROC", DETECTION, HIGHER, _SEG, _BOTH, headline=True),
    Metric(IMAGE_AP, "Image AP", DETECTION, HIGHER, _SEG, _BOTH),
    Metric(IMAGE_F1MAX, "Image F1-max", DETECTION, HIGHER, _SEG, _CELL, note="over every distinct score"),
    Metric(PIXEL_AUROC, "Pixel AUROC", LOCALIZATION, HIGHER, _SEG, _BOTH, headline=True),
    Metric(PIXEL_AP, "Pixel AP", LOCALIZATION, HIGHER, _SEG, _BOTH),
    Metric(PIXEL_F1MAX, "Pixel F1-max", LOCALIZATION, HIGHER, _SEG, _CELL,
           note="variant: evaluation.pixel_f1 / --pixel-f1 (exact, grid-0.05), recorded as pixel_f1_mode"),
    Metric(PIXEL_AUPRO, "AU-PRO", LOCALIZATION, HIGHER, _SEG, _BOTH,
           note="exact PRO curve up to FPR 0.3 (downstream.metrics.aupro_sampled: the MVTec script's)"),
    Metric(PIXEL_IOU, "Pixel IoU", LOCALIZATION, HIGHER, _SEG, _CELL,
           note="anomalous-pixel IoU at the split's best threshold"),
    Metric(PIXEL_MIOU, "mIoU", LOCALIZATION, HIGHER, _SEG, _CELL,
           note="SeaS's IoU: per anomalous image at its best threshold, averaged"),
    Metric(CLS_ACCURACY, "Classification accuracy", CLASSIFICATION, HIGHER, (CLASSIFY,), _CELL,
           note="over all held-out real anomalies; single-defect categories write none"),
)
# fmt: on
METRICS: dict[str, Metric] = {m.key: m for m in CATALOGUE}


def metric(key: str) -> Metric:
    """The catalogue entry of ``key`` (a metric name, or a gate key ``stage/generator/category/metric``).

    Raises:
        UserError: the key is not catalogued.
    """
    name = key.rsplit("/", 1)[-1]
    if name not in METRICS:
        raise UserError(
            f"metric {name!r} is not in the metric catalogue ({__name__}); add an entry there "
            "(see its module docstring)"
        )
    return METRICS[name]


def ordered(keys: Iterable[str]) -> list[str]:
    """The catalogued ones among ``keys``, in catalogue (table) order.

    Example:
        >>> ordered(["pixel_auroc", "is", "unknown", "image_auroc"])
        ['is', 'image_auroc', 'pixel_auroc']
    """
    present = set(keys)
    return [m.key for m in CATALOGUE if m.key in present]


def grouped(keys: Iterable[str]) -> dict[str, list[Metric]]:
    """The catalogued ones among ``keys`` by group, in table order (empty groups left out)."""
    present = set(ordered(keys))
    groups = {g: [m for m in CATALOGUE if m.group == g and m.key in present] for g in GROUPS}
    return {g: metrics for g, metrics in groups.items() if metrics}


def written_by(stage: str, place: str = CELL) -> list[Metric]:
    """The metrics ``stage`` writes at ``place`` (``CELL`` or ``PER_DEFECT``), in table order."""
    return [m for m in CATALOGUE if stage in m.stages and place in m.places]


def headline(stage: str) -> list[str]:
    """The keys of ``stage`` shown in terminal summaries."""
    return [m.key for m in written_by(stage) if m.headline]


def format_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with each catalogued metric's value in its display format; other fields unchanged.

    Example:
        >>> format_row({"category": "nut", "kid": 0.01234, "mask_empty": 0.5})
        {'category': 'nut', 'kid': '0.0123', 'mask_empty': '50.0%'}
    """
    return {k: METRICS[k].format(v) if k in METRICS else v for k, v in row.items()}

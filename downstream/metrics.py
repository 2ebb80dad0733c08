"""Detection, localisation and classification metrics with named keys, in vectorised numpy.

Every ranking metric is computed from one descending sort of the scores (as sklearn's
``_binary_clf_curve`` does), so all pixel metrics of a test split cost one sort of its pixels
(:class:`SortedPixels`), and the per-defect metrics reuse it.

Definitions (``P`` positives, thresholds = every distinct score, predicted positive = score >= t):

* ``*_auroc``: area under the ROC curve (trapezoids through (0, 0), every threshold, (1, 1)); equals
  ``sklearn.metrics.roc_auc_score``.
* ``*_ap``: average precision ``sum_k (R_k - R_{k-1}) P_k``; equals ``average_precision_score``.
* ``*_f1max``: the largest F1 over the thresholds. ``exact`` (default) takes every distinct score,
  as ``precision_recall_curve`` does; ``grid-0.05`` reproduces the reference scripts' pixel F1:
  thresholds 0, 0.05, ..., 1.0 and predicted positive = score **>** t (meaningful for probabilities).
  Image F1-max is always exact (the reference scripts use ``precision_recall_curve`` there).
* ``pixel_aupro``: area under the per-region-overlap curve up to FPR 0.3, divided by 0.3 (1.0 is
  perfect). Regions are the 8-connected components of each ground-truth mask; PRO(t) is the mean
  over all regions of the fraction of the region's pixels with score >= t; FPR(t) is over all
  normal pixels of the split (good images and the background of anomalous ones). The curve is
  exact: one point per distinct score (no threshold sub-sampling), joined linearly, and linearly
  interpolated at FPR = 0.3. The MVTec reference script samples 100 thresholds at quantiles of the
  normal pixels' scores instead, which approximates the same curve; :func:`aupro_sampled`
  reproduces it (differences are typically below 0.01).
* ``pixel_iou``: intersection over union of the anomalous pixels at the best threshold, one threshold
  for the whole split (``max_t TP(t) / (FP(t) + P)``); equals ``sklearn.metrics.jaccard_score`` of
  ``score >= t`` at that threshold.
* ``pixel_miou``: as SeaS reports "IoU" (its LFD evaluation): per anomalous test image (non-empty mask),
  the IoU of that image at its own best threshold, averaged over those images.
* ``cls_accuracy``: correct predictions over **all** test images.

Example:
    >>> import numpy as np
    >>> from anobench.downstream.metrics import segmentation_metrics, IMAGE_AUROC
    >>> maps = np.zeros((2, 4, 4)); maps[1, 0, 0] = 1.0
    >>> masks = np.zeros((2, 4, 4), bool); masks[1, 0, 0] = True
    >>> segmentation_metrics(maps, masks, scores=np.array([0.0, 1.0]))[IMAGE_AUROC]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from anobench.downstream.errors import DownstreamInputError

IMAGE_AUROC = "image_auroc"
IMAGE_AP = "image_ap"
IMAGE_F1MAX = "image_f1max"
PIXEL_AUROC = "pixel_auroc"
PIXEL_AP = "pixel_ap"
PIXEL_F1MAX = "pixel_f1max"
PIXEL_AUPRO = "pixel_aupro"
PIXEL_IOU = "pixel_iou"
PIXEL_MIOU = "pixel_miou"
CLS_ACCURACY = "cls_accuracy"

SEGMENTATION_KEYS = (IMAGE_AUROC, IMAGE_AP, IMAGE_F1MAX, PIXEL_AUROC, PIXEL_AP, PIXEL_F1MAX, PIXEL_AUPRO,
                     PIXEL_IOU, PIXEL_MIOU)  # fmt: skip
# The reference scripts' model-selection criterion (sum of these four on the test split).
SELECTION_KEYS = (IMAGE_AUROC, PIXEL_AUROC, PIXEL_AP, PIXEL_AUPRO)
F1_MODES = ("exact", "grid-0.05")
AUPRO_FPR_LIMIT = 0.3


def descending_order(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices sorting ``scores`` (flattened) high to low, and the scores in that order."""
    scores = np.asarray(scores).ravel()
    order = np.argsort(scores)[::-1]
    return order, scores.take(order)


def _group_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """The last sorted position of each group of equal scores (one entry per distinct score)."""
    return np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]


def binary_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at every distinct score, highest score first.

    Args:
        scores: any shape; flattened.
        labels: binary, same number of elements.

    Returns:
        ``(tps, fps, thresholds)``: at ``thresholds[k]``, ``tps[k]``/``fps[k]`` positives/negatives
        have a score >= ``thresholds[k]``.
    """
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order, sorted_scores = descending_order(scores)
    ends = _group_ends(sorted_scores)
    tps_all = np.cumsum(labels.take(order), dtype=np.int64)
    tps = tps_all[ends]
    fps = ends + 1 - tps
    return tps, fps, sorted_scores[ends]


def _require_both_classes(tps: np.ndarray, fps: np.ndarray, what: str) -> None:
    if len(tps) == 0 or tps[-1] == 0 or fps[-1] == 0:
        raise DownstreamInputError(
            f"{what}: needs both normal and anomalous samples (positives={int(tps[-1]) if len(tps) else 0}, "
            f"negatives={int(fps[-1]) if len(fps) else 0})"
        )


def _rates(counts: np.ndarray) -> np.ndarray:
    """``[0, counts / counts[-1]]`` written in one pass (curves have a point per distinct score)."""
    rates = np.empty(len(counts) + 1)
    rates[0] = 0.0
    np.divide(counts, counts[-1], out=rates[1:])
    return rates


def auroc_from_curve(tps: np.ndarray, fps: np.ndarray) -> float:
    """Area under the ROC curve given :func:`binary_curve` counts."""
    return float(np.trapezoid(_rates(tps), _rates(fps)))


def ap_from_curve(tps: np.ndarray, fps: np.ndarray) -> float:
    """Average precision (sklearn's definition, no interpolation) given :func:`binary_curve` counts."""
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(_rates(tps)) * precision))


def f1max_from_curve(tps: np.ndarray, fps: np.ndarray) -> float:
    """Largest F1 over every threshold, given :func:`binary_curve` counts."""
    return float(np.max(2.0 * tps / (tps + fps + tps[-1])))


def iou_max_from_curve(tps: np.ndarray, fps: np.ndarray) -> float:
    """Largest IoU ``TP / (TP + FP + FN)`` over every threshold, given :func:`binary_curve` counts."""
    return float(np.max(tps / (fps + tps[-1])))


def mean_image_iou(maps: np.ndarray, masks: np.ndarray) -> float:
    """SeaS's mIoU: each anomalous image's IoU at its own best threshold, averaged (see module doc)."""
    per_image = [
        iou_max_from_curve(*binary_curve(m, g)[:2]) for m, g in zip(maps, masks, strict=True) if g.any()
    ]
    if not per_image:
        raise DownstreamInputError("pixel mIoU: no test image has anomalous pixels")
    return float(np.mean(per_image))


def f1max_on_grid(
    scores: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None
) -> float:
    """Largest F1 of ``score > t`` over ``thresholds`` (default 0, 0.05, ..., 1.0, the reference grid)."""
    grid = np.linspace(0.0, 1.0, 21) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    ascending = np.sort(scores)
    positive_scores = np.sort(scores[labels])
    predicted = len(scores) - np.searchsorted(ascending, grid, side="right")
    tp = len(positive_scores) - np.searchsorted(positive_scores, grid, side="right")
    denominator = (predicted + len(positive_scores)).astype(np.float64)
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (equals ``sklearn.metrics.roc_auc_score``)."""
    tps, fps, _ = binary_curve(scores, labels)
    _require_both_classes(tps, fps, "AUROC")
    return auroc_from_curve(tps, fps)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (equals ``sklearn.metrics.average_precision_score``)."""
    tps, fps, _ = binary_curve(scores, labels)
    _require_both_classes(tps, fps, "AP")
    return ap_from_curve(tps, fps)


def f1max(scores: np.ndarray, labels: np.ndarray, mode: str = "exact") -> float:
    """F1-max in ``mode`` ``exact`` (every distinct score) or ``grid-0.05`` (the reference grid)."""
    if mode not in F1_MODES:
        raise DownstreamInputError(f"F1 mode {mode!r}: choose one of {', '.join(F1_MODES)}")
    if mode == "grid-0.05":
        return f1max_on_grid(scores, labels)
    tps, fps, _ = binary_curve(scores, labels)
    _require_both_classes(tps, fps, "F1-max")
    return f1max_from_curve(tps, fps)


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected ground-truth regions, numbered 1.. across all images (0 = normal pixel).

    Returns:
        ``(labels, sizes)``: ``labels`` has the shape of ``masks``; ``sizes[i]`` is the pixel count of
        region ``i + 1``.
    """
    masks = np.asarray(masks).astype(bool)
    labels = np.zeros(masks.shape, dtype=np.int64)
    structure = np.ones((3, 3), dtype=bool)
    offset = 0
    for i, mask in enumerate(masks):
        image_labels, count = ndimage.label(mask, structure=structure)
        labels[i] = np.where(image_labels > 0, image_labels + offset, 0)
        offset += count
    sizes = np.bincount(labels.ravel(), minlength=offset + 1)[1:]
    return labels, sizes


@dataclass(frozen=True)
class SortedPixels:
    """The pixels of a test split sorted once, highest score first, with what every pixel metric needs.

    One sort serves the pixel AUROC/AP/F1-max, the PRO curve, and (through :meth:`restrict`)
    the same metrics on any subset of the images, e.g. one defect type against the good images.
    Inside a group of equal scores the order is arbitrary, which changes no count and a PRO sum
    by at most float rounding.

    Example:
        >>> import numpy as np
        >>> maps = np.array([[[0.9, 0.1]], [[0.2, 0.3]]])
        >>> masks = np.array([[[True, False]], [[False, False]]])
        >>> pixels = SortedPixels.sort(maps, masks)
        >>> pixels.scores.tolist(), pixels.restrict(np.array([False, True])).scores.tolist()
        ([0.9, 0.3, 0.2, 0.1], [0.3, 0.2])
    """

    scores: np.ndarray  # (P,) descending
    labels: np.ndarray  # (P,) bool: anomalous pixel
    regions: np.ndarray  # (P,) int32: ground-truth region number, 0 = normal pixel
    images: np.ndarray  # (P,) int32: image index
    sizes: np.ndarray  # (R,) pixel count of region i + 1
    region_images: np.ndarray  # (R,) image index of region i + 1

    @classmethod
    def sort(cls, maps: np.ndarray, masks: np.ndarray) -> SortedPixels:
        """Sort the pixels of ``maps`` (N, H, W) with their ``masks`` and 8-connected regions."""
        maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
        regions, sizes = label_regions(masks)
        order, sorted_scores = descending_order(maps)
        sorted_regions = regions.ravel().take(order).astype(np.int32)
        images = (order // max(1, maps[0].size)).astype(np.int32)
        anomalous = sorted_regions > 0
        region_images = np.zeros(len(sizes), dtype=np.int32)
        region_images[sorted_regions[anomalous] - 1] = images[anomalous]
        return cls(sorted_scores, anomalous, sorted_regions, images, sizes, region_images)

    def restrict(self, keep_images: np.ndarray) -> SortedPixels:
        """The same sorted pixels, of the images where ``keep_images`` (N,) is True (renumbered)."""
        keep_images = np.asarray(keep_images, dtype=bool)
        keep = np.flatnonzero(keep_images[self.images])  # positions: one pass, then cheap gathers
        kept_regions = keep_images[self.region_images]
        new_region = np.r_[0, np.cumsum(kept_regions)].astype(np.int32)
        new_image = (np.cumsum(keep_images) - 1).astype(np.int32)
        return SortedPixels(
            self.scores.take(keep),
            self.labels.take(keep),
            new_region.take(self.regions.take(keep)),
            new_image.take(self.images.take(keep)),
            self.sizes[kept_regions],
            new_image[self.region_images[kept_regions]],
        )

    @cached_property
    def _ends_and_tps(self) -> tuple[np.ndarray, np.ndarray]:
        ends = _group_ends(self.scores)
        return ends, np.cumsum(self.labels, dtype=np.int64)[ends]

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tps, fps, thresholds)`` as :func:`binary_curve` returns them for these pixels."""
        ends, tps = self._ends_and_tps
        return tps, ends + 1 - tps, self.scores[ends]

    def pro_curve(self, fpr_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact PRO curve ``(fpr, pro)`` from (0, 0) to (1, 1).

        With ``fpr_limit``, the curve stops at its first point past FPR ``fpr_limit`` (all that
        :func:`area_to_limit` needs; the points kept are the same).
        """
        ends, tps = self._ends_and_tps
        fps = ends + 1 - tps
        n_normal = int(fps[-1]) if len(fps) else 0
        if len(self.sizes) == 0 or n_normal == 0:
            raise DownstreamInputError(
                f"AU-PRO: needs anomalous regions and normal pixels "
                f"(regions={len(self.sizes)}, normal pixels={n_normal})"
            )
        if fpr_limit is not None:
            keep = min(len(ends), int(np.searchsorted(fps, fpr_limit * n_normal, side="right")) + 1)
            ends, fps = ends[:keep], fps[:keep]
        # Each anomalous pixel adds 1 / (its region's size * number of regions) to PRO when it is
        # detected; each normal pixel adds 1 / n_normal to FPR.
        step = np.r_[0.0, 1.0 / (self.sizes.astype(np.float64) * len(self.sizes))]
        pro = np.cumsum(step[self.regions[: ends[-1] + 1]])[ends]
        return np.r_[0.0, fps / n_normal], np.r_[0.0, pro]


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap curve ``(fpr, pro)`` from (0, 0) to (1, 1), one point per score."""
    return SortedPixels.sort(maps, masks).pro_curve()


def area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the polyline (x ascending) from x=0 to x=``limit``, interpolating at ``limit``."""
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if xs[-1] < limit and np.count_nonzero(~inside):
        # first point past the limit: interpolate linearly (the curve is flat in x when x repeats)
        j = np.flatnonzero(~inside)[0]
        y_limit = ys[-1] + (y[j] - ys[-1]) * (limit - xs[-1]) / (x[j] - xs[-1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y_limit]
    return float(np.trapezoid(ys, xs))


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (1.0 = perfect localisation)."""
    return aupro_from_curve(*pro_curve(maps, masks), fpr_limit)


def aupro_from_curve(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Normalised AU-PRO of a :func:`pro_curve`."""
    return min(1.0, area_to_limit(fpr, pro, fpr_limit) / fpr_limit)  # rounding can exceed 1 by 1e-15


def aupro_sampled(
    maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 100, fpr_limit: float = AUPRO_FPR_LIMIT
) -> float:
    """AU-PRO as the MVTec (3D-)AD reference script computes it, for reproducing published numbers.

    ``num_thresholds`` thresholds are taken at evenly spaced positions ``p`` of the sorted normal
    pixel scores, with FPR = 1 - (p + 1) / n_normal (exact without ties) and PRO = mean over
    regions of the fraction of the region's pixels scoring **above** the threshold; the points are
    joined linearly from (1, 1) down. :func:`aupro` is the same curve without sub-sampling.
    """
    maps = np.asarray(maps)
    regions, sizes = label_regions(masks)
    flat_regions, scores = regions.ravel(), maps.ravel()
    normal = np.sort(scores[flat_regions == 0])
    if len(sizes) == 0 or len(normal) == 0:
        raise DownstreamInputError("AU-PRO: needs anomalous regions and normal pixels")
    positions = np.linspace(0, len(normal) - 1, num_thresholds).astype(np.int64)
    anomalous = flat_regions > 0
    region_of, region_scores = flat_regions[anomalous] - 1, scores[anomalous]
    pro = np.array(
        [
            np.mean(np.bincount(region_of[region_scores > normal[p]], minlength=len(sizes)) / sizes)
            for p in positions
        ]
    )
    fpr = 1.0 - (positions + 1) / len(normal)
    # ascending FPR, starting from the highest threshold; (1, 1) closes the curve as the reference does
    return min(1.0, area_to_limit(np.r_[fpr[::-1], 1.0], np.r_[pro[::-1], 1.0], fpr_limit) / fpr_limit)


def classification_accuracy(
    predicted: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray
) -> float:
    """Fraction of correct predictions over all test images."""
    predicted, target = np.asarray(predicted), np.asarray(target)
    if predicted.shape != target.shape or predicted.size == 0:
        raise DownstreamInputError(
            f"accuracy: {predicted.size} predictions for {target.size} targets; need the same non-zero count"
        )
    return float(np.mean(predicted == target))


def segmentation_metrics(
    maps: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    pixel_f1: str = "exact",
    labels: np.ndarray | None = None,
    pixels: SortedPixels | None = None,
    keys: Sequence[str] = SEGMENTATION_KEYS,
) -> dict[str, float]:
    """Image- and pixel-level metrics of one test split (those named in ``keys``, in that order).

    Args:
        maps: (N, H, W) anomaly maps (higher = more anomalous).
        masks: (N, H, W) binary ground truth.
        scores: (N,) image anomaly scores.
        pixel_f1: ``exact`` or ``grid-0.05`` (see the module docstring).
        labels: (N,) image labels (True = anomalous). Default: the mask is non-empty. Pass them
            when known from the folders: a tiny defect can vanish from a down-sized mask.
        pixels: ``SortedPixels.sort(maps, masks)`` when already computed (one sort of the pixels
            serves a split and, through :meth:`SortedPixels.restrict`, its subsets).
        keys: the metrics to compute (a subset of ``SEGMENTATION_KEYS``); the others cost nothing.
    """
    maps, masks, scores = np.asarray(maps), np.asarray(masks).astype(bool), np.asarray(scores).ravel()
    if maps.ndim != 3 or maps.shape != masks.shape or len(scores) != len(maps):
        raise DownstreamInputError(
            f"metrics: maps {maps.shape}, masks {masks.shape} and scores {scores.shape} must be "
            "(N, H, W), (N, H, W) and (N,)"
        )
    if pixel_f1 not in F1_MODES:
        raise DownstreamInputError(f"pixel F1 mode {pixel_f1!r}: choose one of {', '.join(F1_MODES)}")
    labels = masks.reshape(len(masks), -1).any(axis=1) if labels is None else np.asarray(labels, dtype=bool)
    if labels.shape != scores.shape:
        raise DownstreamInputError(f"metrics: {labels.shape[0]} image labels for {len(scores)} scores")
    itps, ifps, _ = binary_curve(scores, labels)
    _require_both_classes(itps, ifps, "image metrics")
    pixels = SortedPixels.sort(maps, masks) if pixels is None else pixels
    ptps, pfps, _ = pixels.curve()
    _require_both_classes(ptps, pfps, "pixel metrics")
    compute = {
        IMAGE_AUROC: lambda: auroc_from_curve(itps, ifps),
        IMAGE_AP: lambda: ap_from_curve(itps, ifps),
        IMAGE_F1MAX: lambda: f1max_from_curve(itps, ifps),
        PIXEL_AUROC: lambda: auroc_from_curve(ptps, pfps),
        PIXEL_AP: lambda: ap_from_curve(ptps, pfps),
        PIXEL_F1MAX: lambda: (
            f1max_from_curve(ptps, pfps) if pixel_f1 == "exact" else f1max_on_grid(maps, masks)
        ),
        PIXEL_AUPRO: lambda: aupro_from_curve(*pixels.pro_curve(AUPRO_FPR_LIMIT)),
        PIXEL_IOU: lambda: iou_max_from_curve(ptps, pfps),
        PIXEL_MIOU: lambda: mean_image_iou(maps, masks),
    }
    return {key: compute[key]() for key in keys}


def selection_score(metrics: dict[str, float]) -> float:
    """The reference scripts' selection criterion: image AUROC + pixel AUROC + pixel AP + AU-PRO."""
    return float(sum(metrics[key] for key in SELECTION_KEYS))

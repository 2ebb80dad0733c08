"""The held-out real test split, loaded once, and the scoring of anomaly maps on it.

Example:
    >>> from anobench.downstream.evaluation import HeldOutSplit  # doctest: +SKIP
    >>> split = HeldOutSplit.load(test_good, {"scratch": [(image, mask), ...]}, size=256)  # doctest: +SKIP
    >>> pixels = split.sort_pixels(maps)  # one sort of the test pixels, for both calls  # doctest: +SKIP
    >>> split.score(maps, scores, pixels=pixels)["pixel_aupro"]  # doctest: +SKIP
    >>> split.score_per_defect(maps, scores, pixels)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.metrics import (
    IMAGE_AP,
    IMAGE_AUROC,
    PIXEL_AP,
    PIXEL_AUPRO,
    PIXEL_AUROC,
    SortedPixels,
    segmentation_metrics,
)
from anobench.downstream.training import SegmenterConfig, load_images, load_masks, predict_tensor

GOOD = "good"
# Per-defect rows (that defect's images against all good ones) keep the metrics a curve needs.
PER_DEFECT_KEYS = (IMAGE_AUROC, IMAGE_AP, PIXEL_AUROC, PIXEL_AP, PIXEL_AUPRO)


@dataclass
class HeldOutSplit:
    """Test images (uint8, resized), binary masks and per-image defect names (``good`` for normals)."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    masks: np.ndarray  # (N, S, S) bool
    defects: list[str]
    names: list[str]  # "<defect>/<file name>"

    @classmethod
    def load(
        cls,
        test_good: Sequence[Path],
        test_anomalies: dict[str, Sequence[tuple[Path, Path]]],
        size: int,
    ) -> HeldOutSplit:
        """Read ``test_good`` (empty masks) and ``test_anomalies`` (per defect, (image, mask) pairs)."""
        if not test_good or not any(test_anomalies.values()):
            raise DownstreamInputError(
                f"test split: needs good and anomalous images ({len(test_good)} good, "
                f"{sum(len(v) for v in test_anomalies.values())} anomalous)"
            )
        pairs = [(d, image, mask) for d in sorted(test_anomalies) for image, mask in test_anomalies[d]]
        images = load_images([*test_good, *(image for _, image, _ in pairs)], size)
        masks = np.zeros((len(images), size, size), dtype=bool)
        masks[len(test_good) :] = load_masks([mask for _, _, mask in pairs], size).numpy()
        defects = [GOOD] * len(test_good) + [d for d, _, _ in pairs]
        names = [f"{GOOD}/{Path(p).name}" for p in test_good] + [f"{d}/{Path(p).name}" for d, p, _ in pairs]
        return cls(images, masks, defects, names)

    @property
    def labels(self) -> np.ndarray:
        """Image labels: True for the anomalous images."""
        return np.array([d != GOOD for d in self.defects])

    def score(
        self,
        maps: np.ndarray,
        scores: np.ndarray,
        pixel_f1: str = "exact",
        pixels: SortedPixels | None = None,
    ) -> dict[str, float]:
        """Every segmentation metric of ``maps`` (N, S, S) and image ``scores`` (N,) on this split.

        ``pixels``: :meth:`sort_pixels` of ``maps`` when already computed.
        """
        return segmentation_metrics(
            maps, self.masks, scores, pixel_f1=pixel_f1, labels=self.labels, pixels=pixels
        )

    def sort_pixels(self, maps: np.ndarray) -> SortedPixels:
        """The test pixels of ``maps`` sorted once, for :meth:`score`, :meth:`score_per_defect` and plots."""
        return SortedPixels.sort(maps, self.masks)

    def score_per_defect(
        self,
        maps: np.ndarray,
        scores: np.ndarray,
        pixels: SortedPixels | None = None,
    ) -> dict[str, dict[str, float]]:
        """Per defect type: its images against all good images (the keys in ``PER_DEFECT_KEYS``).

        ``pixels`` (:meth:`sort_pixels` of ``maps``, computed here when None) is restricted to
        each subset instead of sorting it again.
        """
        pixels = self.sort_pixels(maps) if pixels is None else pixels
        defects, labels = np.array(self.defects), self.labels
        out = {}
        for defect in sorted(set(self.defects) - {GOOD}):
            keep = (defects == defect) | (defects == GOOD)
            out[defect] = segmentation_metrics(
                maps[keep],
                self.masks[keep],
                scores[keep],
                labels=labels[keep],
                pixels=pixels.restrict(keep),
                keys=PER_DEFECT_KEYS,
            )
        return out


def predict_split(
    model: nn.Module, split: HeldOutSplit, config: SegmenterConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The segmenter's anomaly maps and image scores on ``split``."""
    return predict_tensor(model, split.images, config.eval_batch_size, config.pool_kernel)

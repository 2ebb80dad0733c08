"""Score a trained segmenter on the held-out real test split.

Example:
    >>> from downstream.evaluation import evaluate_segmenter  # doctest: +SKIP
    >>> evaluate_segmenter(model, test_good, test_anomalies, config)["image_auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from downstream.metrics import segmentation_metrics
from downstream.segmenter import DiscriminativeUNet
from downstream.training import SegmenterConfig, load_masks, predict_maps


def evaluate_segmenter(
    model: DiscriminativeUNet,
    test_good: Sequence[Path],
    test_anomalies: Sequence[tuple[Path, Path]],
    config: SegmenterConfig,
) -> dict[str, float]:
    """Metrics on ``test_good`` (empty masks) plus ``test_anomalies`` ((image, mask) pairs)."""
    images = [*test_good, *(image for image, _ in test_anomalies)]
    maps, scores = predict_maps(model, images, config.image_size, pool_kernel=config.pool_kernel)
    size = config.image_size
    masks = np.zeros((len(images), size, size), dtype=bool)
    if test_anomalies:
        masks[len(test_good) :] = load_masks([mask for _, mask in test_anomalies], size).numpy()
    return segmentation_metrics(maps, masks, scores)

"""Detection and localisation metrics with named keys.

Example:
    >>> import numpy as np
    >>> from downstream.metrics import segmentation_metrics, IMAGE_AUROC
    >>> maps = np.zeros((2, 4, 4)); maps[1, 0, 0] = 1.0
    >>> masks = np.zeros((2, 4, 4), bool); masks[1, 0, 0] = True
    >>> segmentation_metrics(maps, masks, scores=np.array([0.0, 1.0]))[IMAGE_AUROC]
    1.0
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

IMAGE_AUROC = "image_auroc"
IMAGE_AP = "image_ap"
PIXEL_AUROC = "pixel_auroc"
PIXEL_AP = "pixel_ap"


def segmentation_metrics(maps: np.ndarray, masks: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image- and pixel-level metrics.

    Args:
        maps: (N, H, W) anomaly maps.
        masks: (N, H, W) binary ground truth; an image is anomalous when its mask is non-empty.
        scores: (N,) image anomaly scores.
    """
    masks = masks.astype(bool)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    pixels, truth = maps.ravel(), masks.ravel()
    return {
        IMAGE_AUROC: float(roc_auc_score(labels, scores)),
        IMAGE_AP: float(average_precision_score(labels, scores)),
        PIXEL_AUROC: float(roc_auc_score(truth, pixels)),
        PIXEL_AP: float(average_precision_score(truth, pixels)),
    }

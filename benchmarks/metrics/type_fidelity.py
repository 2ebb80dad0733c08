"""Defect-type fidelity: whether a generated image looks like real anomalies of its own defect type.

Each generated image's nearest neighbour (Euclidean, pooled EfficientNet-Lite0 features, see
:mod:`.effnet_features`) among the category's held-out real anomalies of every type gives a predicted
type; a pair scores 1 when it is its own type. ``type_fidelity`` of a type is the accuracy over its
pairs (the category/set means average the types). Reference: leave-one-out on the real anomalies
(each real anomaly's nearest OTHER real anomaly).

``type_fidelity_region`` is the same on the defect region: every image, generated and real, is cut
to the square around its own mask (:func:`region_box`) before the features. On a texture the whole
image's features are mostly the texture's, and the held-out real anomalies of the embedded
categories find their own type only 52-76 % of the time that way (chance: 33 %); on their regions
76-95 % (measured on the embedded brick / gravel / nut, 21 held-out anomalies each, 128 px crops).

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.type_fidelity import nearest_types, region_box
    >>> real = np.array([[0.0], [1.0], [10.0]]); types = ["a", "a", "b"]
    >>> nearest_types(np.array([[0.2], [9.0]]), real, types)
    ['a', 'b']
    >>> nearest_types(real, real, types, leave_one_out=True)
    ['a', 'a', 'a']
    >>> m = np.zeros((64, 64), bool); m[30:34, 10:20] = True
    >>> region_box(m)  # 1.5 x the box's longer side, at least a quarter of the image, inside it
    (24, 40, 7, 23)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from anobench.benchmarks.metrics.defaults import PAIR_DEFAULTS
from anobench.benchmarks.metrics.ic_lpips_anomaly import load_pair, mask_box


def nearest_types(
    features: np.ndarray, real: np.ndarray, real_types: Sequence[str], *, leave_one_out: bool = False
) -> list[str]:
    """The defect type of each row's nearest real anomaly (``leave_one_out``: rows ARE ``real``)."""
    if len(real) < (2 if leave_one_out else 1):
        raise ValueError(f"type fidelity needs at least {2 if leave_one_out else 1} real anomalies")
    distances = cdist(features, real)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    return [real_types[i] for i in distances.argmin(1)]


def region_box(
    mask: np.ndarray,
    margin: float = float(PAIR_DEFAULTS["region_margin"]),  # type: ignore[arg-type]
    min_side: float = float(PAIR_DEFAULTS["region_min_side"]),  # type: ignore[arg-type]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive: the defect region of a bool mask.

    A square on the centre of the mask's bounding box, ``margin`` times its longer side and at least
    ``min_side`` times the image's shorter side, moved inside the image (cut only where the image
    is smaller). An empty mask has no region: the whole image.
    """
    height, width = mask.shape
    box = mask_box(mask)
    if box is None:
        return 0, height, 0, width
    top, bottom, left, right = box
    side = max(margin * max(bottom - top, right - left), min_side * min(height, width))
    side = min(math.ceil(side), height, width)

    def place(start: int, stop: int, limit: int) -> tuple[int, int]:
        low = min(max(round((start + stop - side) / 2), 0), limit - side)
        return low, low + side

    (top, bottom), (left, right) = place(top, bottom, height), place(left, right, width)
    return top, bottom, left, right


def region_crops(pairs: Sequence[tuple[Path, Path]], size: int) -> torch.Tensor:
    """Each image's defect region (:func:`region_box` of its mask), uint8 (N, 3, size, size), bilinear."""
    out = torch.empty((len(pairs), 3, size, size), dtype=torch.uint8)
    for i, (image, mask) in enumerate(pairs):
        rgb, binary = load_pair(image, mask)
        top, bottom, left, right = region_box(binary)
        crop = Image.fromarray(rgb[top:bottom, left:right]).resize((size, size), Image.BILINEAR)
        out[i] = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)
    return out

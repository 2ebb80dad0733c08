"""Mask extraction from the generated anomaly part (the ``fg`` image).

The part branch draws the anomaly on a mid-grey background (its training target was
``image * mask`` in [-1, 1]), so the default extractor thresholds the distance from mid-grey
(max over channels, in [-1, 1] units), removes speckles morphologically and drops connected
components below a minimum area. The released code uses U2-Net saliency (> 0.5 after per-image
min-max normalisation); its architecture is not part of this package yet, so asking for it is a
clear error rather than a silent fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def threshold_mask(part: np.ndarray, threshold: float = 0.2, min_area: float = 0.0005) -> np.ndarray:
    """Boolean mask of the pixels of ``part`` (H x W x 3 uint8) that differ from mid-grey.

    Args:
        part: the generated anomaly-part image.
        threshold: max |channel| distance from mid-grey, in [-1, 1] units (0.2 ~ 25 grey levels).
        min_area: drop connected components smaller than this fraction of the image.

    Example:
        >>> part = np.full((8, 8, 3), 128, np.uint8); part[2:5, 2:5] = 250
        >>> int(threshold_mask(part).sum())
        9
    """
    from scipy import ndimage

    distance = np.abs(part.astype(np.float32) / 127.5 - 1.0).max(axis=-1)
    mask = distance > threshold
    square = np.ones((3, 3), bool)
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, square), square)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= min_area * mask.size) + 1
        mask = np.isin(labels, keep)
    return mask


class U2NetMaskExtractor:
    """U2-Net saliency masks from a local weights file (``u2net.pth``), as the released code.

    Raises:
        GenerationInputError: always for now, naming the reason (missing file, or the U2-Net
            architecture not implemented in this version).
    """

    def __init__(self, weights: str | Path) -> None:
        from generation.errors import GenerationInputError

        path = Path(weights).expanduser()
        if not path.is_file():
            raise GenerationInputError(
                f"u2net_weights={str(weights)!r}: file not found; give the path to u2net.pth"
            )
        raise GenerationInputError(
            f"u2net_weights={str(weights)!r}: U2-Net mask extraction is not implemented in this version of "
            "anobench (the architecture is not ported yet); use mask_extractor='threshold'"
        )


def mask_extractor(kind: str, threshold: float, min_area: float, u2net_weights: str | None = None):
    """A function part image -> bool mask for ``kind`` (``threshold`` or ``u2net``)."""
    if kind == "u2net":
        return U2NetMaskExtractor(u2net_weights or "")
    return lambda part: threshold_mask(part, threshold, min_area)

"""Mask extraction from the generated anomaly part (the ``fg`` image).

The part branch draws the anomaly on a mid-grey background (its training target was
``image * mask`` in [-1, 1]), so the default extractor thresholds the distance from mid-grey
(max over channels, in [-1, 1] units), removes speckles morphologically and drops connected
components below a minimum area.

The released code instead runs U2-Net (xuebinqin/U-2-Net, ``u2net_test.py``) on each part and
binarises its saliency map at 0.5: :class:`U2NetMaskExtractor` reproduces that pipeline with the
official ``u2net.pth`` / ``u2netp.pth`` (architecture in :mod:`anobench.generation.dualanodiff.u2net`):
resize to 320 x 320 (skimage, as ``RescaleT(320)``), divide by the image's max and normalise with
the ImageNet mean/std (``ToTensorLab(flag=0)``), take the first output (the fused map), min-max
normalise it per image, save it as 8-bit grey and resize it (PIL bilinear) back to the part's
size, then keep grey / 255 > threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

U2NET_SIZE = 320  # RescaleT(320) in u2net_test.py
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


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


def u2net_input(part: np.ndarray, size: int = U2NET_SIZE) -> np.ndarray:
    """``RescaleT(size)`` + ``ToTensorLab(flag=0)`` of ``part`` (H x W x 3 or H x W uint8): 3 x size x size.

    skimage's resize (bilinear, anti-aliased when shrinking, to [0, 1]), division by the image's
    max, then (x - mean) / std per channel (grey images use the red channel's statistics).
    """
    from skimage import transform

    image = np.asarray(part)
    grey = image.ndim == 2 or image.shape[-1] == 1
    image = image.reshape(image.shape[:2] + (1,)) if grey else image[..., :3]
    image = transform.resize(image, (size, size), mode="constant")
    peak = image.max()
    image = image / peak if peak > 0 else image  # an all-black part stays 0 (upstream divides by 0)
    if grey:
        image = np.repeat(image, 3, axis=-1)
        normalised = (image - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    else:
        normalised = (image - IMAGENET_MEAN) / IMAGENET_STD
    return normalised.transpose(2, 0, 1).astype(np.float32)


def saliency_to_grey(prediction: np.ndarray, height: int, width: int) -> np.ndarray:
    """``normPRED`` + ``save_output`` of one map: min-max to [0, 1], 8-bit, PIL bilinear to W x H.

    A constant map (upstream: 0 / 0) gives all zeros.
    """
    from PIL import Image

    prediction = np.asarray(prediction, np.float32)
    low, high = float(prediction.min()), float(prediction.max())
    norm = (prediction - low) / (high - low) if high > low else np.zeros_like(prediction)
    grey = Image.fromarray((norm * 255).astype(np.float32)).convert("L")
    return np.asarray(grey.resize((width, height), resample=Image.BILINEAR))


class U2NetMaskExtractor:
    """U2-Net saliency masks from a local weights file, as the released DualAnoDiff code.

    Args:
        weights: the official ``u2net.pth`` or ``u2netp.pth`` (or a ``.safetensors`` copy).
        threshold: a pixel is anomalous where the normalised saliency (grey / 255) exceeds it.
        device: torch device (None: CUDA when available, else CPU).

    Raises:
        GenerationInputError: missing, unreadable or mismatching weights file (from
            :func:`anobench.generation.dualanodiff.u2net.load_u2net`).

    Example:
        >>> extract = U2NetMaskExtractor("u2net.pth")  # doctest: +SKIP
        >>> mask = extract(part)  # H x W bool, same size as part  # doctest: +SKIP
    """

    def __init__(self, weights: str | Path, threshold: float = 0.5, device: str | None = None) -> None:
        import torch

        from anobench.generation.dualanodiff.u2net import load_u2net

        self.threshold = float(threshold)
        self.input_size = U2NET_SIZE  # the network's input side, 320 as released
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_u2net(weights).to(self.device).eval()

    def saliency(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The 8-bit saliency maps (what ``u2net_test.py`` saves), each at its part's size."""
        import torch

        if not len(parts):
            return []
        batch = torch.from_numpy(np.stack([u2net_input(p, self.input_size) for p in parts])).to(self.device)
        with torch.no_grad():
            fused = self.model(batch)[0][:, 0].float().cpu().numpy()
        return [saliency_to_grey(m, p.shape[0], p.shape[1]) for m, p in zip(fused, parts, strict=True)]

    def batch(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Boolean masks for several parts (one network call)."""
        return [grey / 255.0 > self.threshold for grey in self.saliency(parts)]

    def __call__(self, part: np.ndarray) -> np.ndarray:
        """Boolean H x W mask of one part image (H x W x 3 uint8)."""
        return self.batch([part])[0]


def mask_extractor(
    kind: str,
    threshold: float,
    min_area: float,
    u2net_weights: str | None = None,
    u2net_threshold: float = 0.5,
    device: str | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function part image -> bool mask for ``kind`` (``threshold`` or ``u2net``).

    ``threshold`` and ``min_area`` configure the threshold extractor; ``u2net`` uses
    ``u2net_weights``, ``u2net_threshold`` (saliency, 0.5 as released) and ``device``.
    """
    if kind == "u2net":
        return U2NetMaskExtractor(u2net_weights or "", u2net_threshold, device)
    return lambda part: threshold_mask(part, threshold, min_area)

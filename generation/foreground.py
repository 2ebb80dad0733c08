"""Object foreground estimation for object categories (where may an anomaly go, where did it land).

MVTec-style object images show one object on a plain, fairly uniform background. The foreground
is estimated without any model: the colour distance of every pixel to the median colour of the
image border, smoothed, thresholded with Otsu (never below the border's own noise level), then
cleaned by a small morphological opening. Used by the baselines (paste inside the object) and by
the mask-quality report (fraction of each mask inside the object).

Example:
    >>> import numpy as np
    >>> image = np.zeros((64, 64, 3), np.uint8); image[16:48, 16:48] = 200
    >>> fg = estimate_foreground(image)
    >>> bool(fg[32, 32]), bool(fg[2, 2])
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from anobench.generation.base import load_rgb


def estimate_foreground(image: np.ndarray, border: int | None = None) -> np.ndarray:
    """Object pixels of one image (H x W bool); all False when the image has no distinct object.

    Args:
        image: H x W x 3 uint8 image of an object on a plain background.
        border: width in pixels of the border strip that defines the background colour
            (default: 1/32 of the shorter side, at least 2).
    """
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    b = border or max(2, min(h, w) // 32)
    ring = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                           img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)])  # fmt: skip
    background = np.median(ring, axis=0)
    distance = ndimage.gaussian_filter(
        np.linalg.norm(img - background, axis=-1), sigma=max(1.0, min(h, w) / 128)
    )
    if float(distance.max() - distance.min()) < 1e-6:
        return np.zeros((h, w), bool)
    ring_noise = float(np.percentile(np.linalg.norm(ring - background, axis=-1), 99))
    foreground = distance > max(float(threshold_otsu(distance)), ring_noise)
    return ndimage.binary_opening(foreground, iterations=max(1, min(h, w) // 128))


def foreground_prior(
    normal_images: Sequence[str | Path], size: tuple[int, int] | None = None, limit: int = 16
) -> np.ndarray:
    """Majority vote of :func:`estimate_foreground` over up to ``limit`` normal images (evenly spaced).

    Args:
        normal_images: defect-free images of one object category.
        size: (height, width) of the returned map (default: the first image's size).
        limit: how many images to use at most.

    Returns:
        H x W bool: the pixels that are object in at least half of the images.
    """
    if not normal_images:
        raise ValueError("foreground_prior needs at least one normal image")
    step = max(1, len(normal_images) // limit)
    votes: np.ndarray | None = None
    picked = list(normal_images)[::step][:limit]
    for path in picked:
        fg = estimate_foreground(load_rgb(path)).astype(np.float32)
        if votes is not None and fg.shape != votes.shape:
            fg = resize_mask(fg > 0.5, votes.shape).astype(np.float32)
        votes = fg if votes is None else votes + fg
    assert votes is not None
    prior = votes >= len(picked) / 2
    return prior if size is None or prior.shape == tuple(size) else resize_mask(prior, size)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width)."""
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(im) > 127


__all__ = ["estimate_foreground", "foreground_prior", "resize_mask"]

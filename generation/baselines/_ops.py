"""Image operations shared by the rule-based baselines (all seeded through a numpy Generator)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from anobench.generation.base import load_rgb
from anobench.generation.foreground import estimate_foreground

Rng = np.random.Generator
OPENCV_CLONE_EROSION = 3  # pixels cv2.seamlessClone erodes its mask by before solving


class NormalBank:
    """The normal training images (loaded lazily, a bounded cache) and their object foregrounds."""

    def __init__(self, paths: Sequence[Path], size: int | None, cache: int = 64) -> None:
        if not paths:
            raise ValueError("no normal training images")
        self.paths = list(paths)
        self.size = size
        self._image = lru_cache(maxsize=cache)(self._load)
        self._foreground = lru_cache(maxsize=cache)(self._estimate)

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> np.ndarray:
        image = load_rgb(self.paths[index], self.size)
        image.setflags(write=False)
        return image

    def _estimate(self, index: int) -> np.ndarray:
        fg = estimate_foreground(self._image(index))
        fg.setflags(write=False)
        return fg

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` (read-only H x W x 3 uint8)."""
        return self._image(index)

    def region(self, index: int, restrict: bool) -> np.ndarray | None:
        """Where anomalies may go on image ``index``: its object foreground, or None (anywhere).

        Falls back to None when ``restrict`` is False or no object is found.
        """
        if not restrict:
            return None
        fg = self._foreground(index)
        return fg if fg.any() else None


def random_placement(
    rng: Rng, patch_mask: np.ndarray, region: np.ndarray | None, shape: tuple[int, int], tries: int = 50,
    min_inside: float = 0.95,
) -> tuple[int, int]:  # fmt: skip
    """Top-left corner for a patch so that at least ``min_inside`` of its mask lies in ``region``.

    Without a region any position that keeps the patch inside the image is valid. Otherwise up
    to ``tries`` random positions are drawn and the first good one (or else the best) is returned.
    """
    ph, pw = patch_mask.shape
    h, w = shape
    if ph > h or pw > w:
        raise ValueError(f"patch {ph}x{pw} does not fit into the image {h}x{w}")
    if region is None:
        return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    area = max(int(patch_mask.sum()), 1)
    best, best_inside = (0, 0), -1.0
    # Draw positions around object pixels first: random corners rarely hit a small object.
    ys, xs = np.nonzero(region)
    for _ in range(tries):
        k = int(rng.integers(len(ys)))
        top = int(np.clip(ys[k] - ph // 2, 0, h - ph))
        left = int(np.clip(xs[k] - pw // 2, 0, w - pw))
        inside = float((patch_mask & region[top : top + ph, left : left + pw]).sum()) / area
        if inside >= min_inside:
            return top, left
        if inside > best_inside:
            best, best_inside = (top, left), inside
    return best


def feather_paste(
    target: np.ndarray, patch: np.ndarray, alpha: np.ndarray, top: int, left: int
) -> np.ndarray:
    """Alpha-blend ``patch`` (h x w x 3) into a copy of ``target`` at (top, left); alpha in [0, 1]."""
    out = target.astype(np.float32).copy()
    h, w = alpha.shape
    window = out[top : top + h, left : left + w]
    window[...] = alpha[..., None] * patch.astype(np.float32) + (1 - alpha[..., None]) * window
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def feathered_alpha(region: np.ndarray, sigma: float, core: np.ndarray | None = None) -> np.ndarray:
    """A soft alpha from a bool ``region``: Gaussian-blurred edges, kept at 1 on ``core`` (default: none)."""
    alpha = region.astype(np.float32)
    if sigma > 0:
        alpha = ndimage.gaussian_filter(alpha, sigma)
    if core is not None:
        alpha = np.maximum(alpha, core)
    return alpha.clip(0, 1).astype(np.float32)


def poisson_paste(
    target: np.ndarray, patch: np.ndarray, mask: np.ndarray, top: int, left: int, mixed: bool = False
) -> np.ndarray:
    """Poisson-blend ``patch`` into ``target`` at (top, left) (OpenCV seamless cloning).

    Only the pixels of ``mask`` (h x w bool) change, and the gradients of the whole patch inside
    ``mask`` are kept: OpenCV erodes the mask it is given by 3 pixels before solving, so it gets
    the mask dilated by as much (outside the patch its source is the target itself, whose own
    gradients then change nothing). The patch is placed exactly at (top, left): OpenCV centres the
    mask's bounding box on the point it is given, which is computed here.
    """
    h, w = target.shape[:2]
    inside = np.zeros((h, w), bool)
    inside[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
    # seamlessClone needs the mask away from the image border.
    inside[[0, -1], :] = False
    inside[:, [0, -1]] = False
    if not inside.any():
        return target.copy()
    grown = ndimage.binary_dilation(inside, iterations=OPENCV_CLONE_EROSION)
    grown[[0, -1], :] = False
    grown[:, [0, -1]] = False
    clone_mask = grown.astype(np.uint8) * 255
    source = target.copy()
    source[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    x, y, bw, bh = cv2.boundingRect(clone_mask)
    flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    # OpenCV writes into the mask it is given (seen with opencv 5.0): it gets its own array.
    blended = cv2.seamlessClone(
        source[..., ::-1].copy(), target[..., ::-1].copy(), clone_mask, (x + bw // 2, y + bh // 2), flag
    )
    out = target.copy()
    out[inside] = blended[..., ::-1][inside]
    return out


def rotate(array: np.ndarray, angle: float, order: int) -> np.ndarray:
    """Rotate by ``angle`` degrees, growing the canvas so that nothing is cut (zeros outside)."""
    return ndimage.rotate(array, angle, axes=(1, 0), reshape=True, order=order, mode="constant", cval=0)


def trim(patch: np.ndarray, mask: np.ndarray, *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Crop ``patch``, ``mask`` and ``extra`` arrays to the bounding box of ``mask``."""
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return (patch[box], mask[box], *(e[box] for e in extra))


def color_jitter(
    rng: Rng, image: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float
) -> np.ndarray:
    """torchvision-style colour jitter: factors drawn from [1 - x, 1 + x], hue shift from [-hue, hue]."""
    out = image.astype(np.float32)
    out = out * rng.uniform(1 - brightness, 1 + brightness)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    grey = out.mean(axis=-1, keepdims=True)
    out = (out - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
    out = np.clip(out, 0, 255).astype(np.uint8)
    if hue > 0:
        hsv = np.asarray(Image.fromarray(out).convert("HSV")).copy()
        shift = int(round(rng.uniform(-hue, hue) * 255))
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        out = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    return out


def _gamma(rng: Rng, im: Image.Image) -> Image.Image:
    arr = np.asarray(im).astype(np.float32) / 255
    return Image.fromarray((np.power(arr, rng.uniform(0.5, 2.0)) * 255).astype(np.uint8))


def _brightness(rng: Rng, im: Image.Image) -> Image.Image:
    arr = np.asarray(im).astype(np.float32) * rng.uniform(0.8, 1.2)
    return Image.fromarray(np.clip(arr + rng.uniform(-30, 30), 0, 255).astype(np.uint8))


def _hue(rng: Rng, im: Image.Image) -> Image.Image:
    return Image.fromarray(color_jitter(rng, np.asarray(im), 0.0, 0.0, 0.5, 0.15))


# DRAEM's augmentation pool for the anomaly source, rebuilt on PIL (3 of them are applied).
TEXTURE_AUGMENTATIONS = (
    _gamma,
    _brightness,
    _hue,
    lambda rng, im: ImageOps.solarize(im, threshold=int(rng.integers(32, 128))),
    lambda rng, im: ImageOps.posterize(im, bits=int(rng.integers(4, 8))),
    lambda rng, im: ImageOps.invert(im),
    lambda rng, im: ImageOps.autocontrast(im),
    lambda rng, im: ImageOps.equalize(im),
    lambda rng, im: im.rotate(float(rng.uniform(-45, 45)), resample=Image.BILINEAR, fillcolor=None),
)


def augment_texture(rng: Rng, image: np.ndarray, count: int = 3) -> np.ndarray:
    """Apply ``count`` distinct random augmentations of DRAEM's pool, in random order."""
    im = Image.fromarray(image)
    for k in rng.choice(len(TEXTURE_AUGMENTATIONS), size=count, replace=False):
        im = TEXTURE_AUGMENTATIONS[int(k)](rng, im)
    return np.asarray(im.convert("RGB"))

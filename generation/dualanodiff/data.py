"""Training data of the dual fine-tune: (whole image, part image) pairs and the BCM background.

As the released ``DreamBoothDataset``: the image and its mask get the same geometry (random
horizontal/vertical flips, then resize to the training resolution, mask re-binarised at 0.5);
the whole target is the image in [-1, 1]; the part target is ``image * mask`` in that space, so
everything outside the mask is 0 = mid-grey. The BCM background condition is the image with its
object foreground blacked out.

The released code takes object foregrounds from U2-Net: its 8-bit saliency map, inverted, is the
alpha with which the image is pasted on black (:func:`soft_background`), so the foreground fades to
black softly; we do the same when U2-Net weights are given (the saliency is computed on the image
at the training resolution, the release computes it at the source size and resizes). Without
them the object foreground is estimated from the category's normal images
(:func:`estimate_background_colour`, :func:`object_foreground`): the background colour is the
median of the normal images' border pixels and every pixel farther than a threshold from it
(cleaned morphologically) is object. Texture categories have no object there: their background
condition is the whole image (with U2-Net they go through the saliency, as in the release).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from anobench.generation.base import load_rgb, read_mask, resize_mask


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """B x 3 x H x W in [-1, 1] -> B x H x W x 3 uint8 (rounded)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def load_soft_mask(path: str | Path, size: int) -> torch.Tensor:
    """Mask resized bilinearly and binarised at 0.5 (as the released code), 1 x H x W float."""
    return torch.from_numpy(resize_mask(read_mask(path), size, soft=True).astype(np.float32))[None]


def estimate_background_colour(normal_images: list[Path], size: int, limit: int = 16) -> np.ndarray:
    """Median RGB of the border pixels of (up to ``limit``) normal images."""
    border = []
    for path in normal_images[:limit]:
        im = load_rgb(path, size).astype(np.float32)
        border += [im[0], im[-1], im[:, 0], im[:, -1]]
    return np.median(np.concatenate(border), axis=0)


def object_foreground(
    image: np.ndarray, background_colour: np.ndarray, threshold: float = 40.0
) -> np.ndarray:
    """Boolean object mask: pixels farther than ``threshold`` (RGB L2) from the background colour."""
    from scipy import ndimage

    far = np.linalg.norm(image.astype(np.float32) - background_colour, axis=-1) > threshold
    far = ndimage.binary_opening(far, iterations=1)
    far = ndimage.binary_closing(far, iterations=2)
    return ndimage.binary_fill_holes(far)


def background_condition(image: np.ndarray, background_colour: np.ndarray | None) -> np.ndarray:
    """The image with its object foreground black (None colour: a texture, the whole image)."""
    if background_colour is None:
        return image
    return np.where(object_foreground(image, background_colour)[..., None], 0, image).astype(np.uint8)


#: Saliency maps of several H x W x 3 uint8 images: H x W uint8 each (U2-Net's saved output).
Saliency = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def soft_background(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The release's U2-Net background: ``image`` pasted on black through alpha ``255 - saliency``.

    PIL's paste rounds ``image * alpha / 255`` per channel (the released ``Image.paste`` onto an
    RGBA canvas, then RGB).
    """
    from PIL import Image

    alpha = Image.fromarray(255 - np.asarray(saliency, np.uint8))
    canvas = Image.new("RGBA", (image.shape[1], image.shape[0]))
    canvas.paste(Image.fromarray(image), mask=alpha)
    return np.asarray(canvas.convert("RGB"))


def background_conditions(
    images: list[np.ndarray], background_colour: np.ndarray | None, saliency: Saliency | None = None
) -> list[np.ndarray]:
    """BCM conditions of ``images``.

    U2-Net soft backgrounds when ``saliency`` is given, else :func:`background_condition`.
    """
    if saliency is not None:
        return [soft_background(im, s) for im, s in zip(images, saliency(images), strict=True)]
    return [background_condition(im, background_colour) for im in images]


class PairBatch(NamedTuple):
    """One training batch: targets in [-1, 1], per-sample prompts, BCM backgrounds, masks in {0, 1}."""

    wholes: torch.Tensor  # B x 3 x H x W
    parts: torch.Tensor  # B x 3 x H x W
    prompts: list[tuple[str, str]]
    backgrounds: torch.Tensor | None  # B x 3 x H x W (BCM)
    masks: torch.Tensor  # B x 1 x H x W


@dataclass
class PairData:
    """The few-shot training pairs of one model, in memory at the training resolution."""

    images: torch.Tensor  # N x 3 x H x W in [-1, 1]
    masks: torch.Tensor  # N x 1 x H x W in {0, 1}
    prompts: list[tuple[str, str]]  # per sample: (whole prompt, part prompt)
    backgrounds: torch.Tensor | None = None  # N x 3 x H x W in [-1, 1] (BCM)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: list[int], generator: torch.Generator, flips: bool) -> PairBatch:
        """Whole and part targets, prompts, backgrounds and masks of ``indices``, same flips per sample."""
        wholes, parts, backs, masks = [], [], [], []
        for i in indices:
            image, mask = self.images[i], self.masks[i]
            back = self.backgrounds[i] if self.backgrounds is not None else None
            dims = []
            if flips:
                hflip, vflip = (torch.rand(2, generator=generator) < 0.5).tolist()
                dims = [d for d, flip in ((2, hflip), (1, vflip)) if flip]
            if dims:
                image, mask = image.flip(dims), mask.flip(dims)
                back = back.flip(dims) if back is not None else None
            wholes.append(image)
            parts.append(image * mask)
            backs.append(back)
            masks.append(mask)
        background = torch.stack(backs) if self.backgrounds is not None else None
        prompts = [self.prompts[i] for i in indices]
        return PairBatch(torch.stack(wholes), torch.stack(parts), prompts, background, torch.stack(masks))


def load_pair_data(
    samples: list[tuple[Path, Path, tuple[str, str]]],
    resolution: int,
    background_colour: np.ndarray | None = None,
    bcm: bool = False,
    saliency: Saliency | None = None,
) -> PairData:
    """Read (image, mask, prompts) samples; with ``bcm`` also their background conditions.

    See :func:`background_conditions` (U2-Net ``saliency`` when given, else ``background_colour``).
    """
    raw = [load_rgb(image_path, resolution) for image_path, _, _ in samples]
    backgrounds = background_conditions(raw, background_colour, saliency) if bcm else []
    return PairData(
        images=torch.stack([to_tensor(im) for im in raw]),
        masks=torch.stack([load_soft_mask(m, resolution) for _, m, _ in samples]),
        prompts=[s[2] for s in samples],
        backgrounds=torch.stack([to_tensor(b) for b in backgrounds]) if bcm else None,
    )

"""``nsa``: Natural Synthetic Anomalies (Schlüter et al., ECCV 2022): Poisson-blended patches of other images.

A rectangular patch of random size is cut from another normal image (inside the object for object
categories), optionally rescaled, and Poisson-blended (OpenCV seamless cloning) at a random place
of the target image, so it has no sharp seams; the anomaly is whatever changed visibly. As in NSA,
the label comes from the change itself: the mask is the set of pixels whose (lightly smoothed)
mean absolute difference to the original exceeds ``mask_threshold`` grey levels (cleaned by a
morphological opening) and the pixels below it keep their original value, so the mask covers every
change; draws whose change is too small are redrawn. No real anomaly is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from anobench.generation.base import FewShotSet, GeneratedPair, Generator, GeneratorConfig, pair_rngs
from anobench.generation.baselines._ops import NormalBank, poisson_paste, random_placement
from anobench.generation.errors import GenerationInputError
from anobench.generation.registry import register_generator


@dataclass
class NSAConfig(GeneratorConfig):
    """Options of ``nsa``.

    Attributes:
        patch_size: patch side range, as fractions of the image side (drawn per axis).
        rescale: range of the random rescaling of the patch.
        mixed_gradients: Poisson blending with mixed gradients (keeps the target's strong edges).
        mask_threshold: grey levels of change (mean over channels) that make a pixel anomalous.
        min_area_ratio: smallest mask as a fraction of the image; smaller draws are redrawn.
        inside_object: for object categories, take and put patches inside the object's foreground.
        tries: draws before the largest change found is used.
    """

    patch_size: tuple[float, float] = (0.1, 0.4)
    rescale: tuple[float, float] = (0.7, 1.3)
    mixed_gradients: bool = False
    mask_threshold: float = 12.0
    min_area_ratio: float = 0.002
    inside_object: bool = True
    tries: int = 10

    def __post_init__(self) -> None:
        self.patch_size, self.rescale = tuple(self.patch_size), tuple(self.rescale)  # type: ignore[assignment]
        problems = []
        if not 0 < self.patch_size[0] <= self.patch_size[1] <= 1:
            problems.append(f"patch_size={self.patch_size}: must be a range (lo, hi) with 0 < lo <= hi <= 1")
        if not 0 < self.rescale[0] <= self.rescale[1]:
            problems.append(f"rescale={self.rescale}: must be a range (lo, hi) with 0 < lo <= hi")
        if self.mask_threshold <= 0:
            problems.append(f"mask_threshold={self.mask_threshold}: must be > 0")
        if self.tries < 1:
            problems.append(f"tries={self.tries}: must be at least 1")
        if problems:
            raise GenerationInputError(*problems)


@register_generator("nsa")
class NSA(Generator):
    """Natural Synthetic Anomalies: Poisson-blended patches of another normal image; no real anomalies."""

    Config = NSAConfig
    config: NSAConfig

    def fit(self, fewshot: FewShotSet) -> None:
        """Index the normal images; the few-shot anomalies are not used."""
        self.bank = NormalBank(fewshot.normal_images, self.config.image_size)
        self.fewshot = fewshot

    def _draw(
        self, rng: np.random.Generator, target_index: int, restrict: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        target = self.bank.image(target_index)
        h, w = target.shape[:2]
        source_index = int(rng.integers(len(self.bank)))
        if len(self.bank) > 1 and source_index == target_index:
            source_index = (source_index + 1) % len(self.bank)
        source = self.bank.image(source_index)
        if source.shape != target.shape:
            source = np.asarray(Image.fromarray(source).resize((w, h), Image.BILINEAR))
        ph = max(4, round(rng.uniform(*c.patch_size) * h))
        pw = max(4, round(rng.uniform(*c.patch_size) * w))
        # Patches need only be centred on the object: their content then differs from the target's.
        source_region = self.bank.region(source_index, restrict)
        sy, sx = random_placement(rng, np.ones((ph, pw), bool), source_region, (h, w), min_inside=0.5)
        patch = source[sy : sy + ph, sx : sx + pw]
        factor = float(rng.uniform(*c.rescale))
        nh, nw = min(h - 2, max(4, round(ph * factor))), min(w - 2, max(4, round(pw * factor)))
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((nw, nh), Image.BILINEAR))
        box = np.ones((nh, nw), bool)
        ty, tx = random_placement(rng, box, self.bank.region(target_index, restrict), (h, w), min_inside=0.5)
        blended = poisson_paste(target, patch, box, ty, tx, mixed=c.mixed_gradients)
        change = np.abs(blended.astype(np.float32) - target.astype(np.float32)).mean(axis=-1)
        mask = ndimage.gaussian_filter(change, 1.0) > c.mask_threshold
        mask = ndimage.binary_opening(mask, iterations=1)
        target_region = self.bank.region(target_index, restrict)
        if target_region is not None:
            mask &= target_region
        return np.where(mask[..., None], blended, target), mask

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` pairs; pair i uses its own Generator seeded with ``pair_seed(seed, defect, i)``."""
        self._check_defect(defect)
        fewshot = self._require_fit()
        restrict = bool(self.config.inside_object and fewshot.is_object)
        for s, rng in pair_rngs(seed, defect, n):
            index = int(rng.integers(len(self.bank)))
            shape = self.bank.image(index).shape[:2]
            min_pixels = max(1, round(self.config.min_area_ratio * shape[0] * shape[1]))
            best: tuple[np.ndarray, np.ndarray] | None = None
            for _ in range(self.config.tries):
                image, mask = self._draw(rng, index, restrict)
                if best is None or mask.sum() > best[1].sum():
                    best = (image, mask)
                if mask.sum() >= min_pixels:
                    break
            assert best is not None
            if not best[1].any():
                raise GenerationInputError(
                    f"nsa: {fewshot.category}/{defect}: no visible change in {self.config.tries} draws; "
                    "lower mask_threshold or raise tries"
                )
            yield GeneratedPair(image=best[0], mask=best[1], seed=s)

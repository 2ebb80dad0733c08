"""``crop-paste``: the real few-shot anomaly regions cut out by their masks and pasted onto normal images.

The classic Crop&Paste baseline of the anomaly-generation papers (DFMGAN, AnomalyDiffusion,
DualAnoDiff, MAGIC tables): every generated pair is one normal training image with one real
few-shot anomaly pasted at a random valid position, its mask moved with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anobench.generation.base import (
    FewShotSet,
    GeneratedPair,
    Generator,
    GeneratorConfig,
    load_mask,
    load_rgb,
    pair_rngs,
)
from anobench.generation.baselines._ops import (
    NormalBank,
    feather_paste,
    feathered_alpha,
    poisson_paste,
    random_placement,
    rotate,
    trim,
)
from anobench.generation.errors import GenerationInputError
from anobench.generation.registry import register_generator

BLENDS = ("feather", "poisson", "hard")


@dataclass
class CropPasteConfig(GeneratorConfig):
    """Options of ``crop-paste``.

    Attributes:
        margin: pixels of the source image kept around the anomaly (dilation of its mask), blended in.
        blend: ``feather`` (Gaussian-softened alpha), ``poisson`` (seamless cloning) or ``hard``.
        feather_sigma: blur of the alpha edge for ``feather``, in pixels.
        flip: random horizontal/vertical flips of the patch.
        max_rotation: random rotation of the patch in [-x, x] degrees (0: none).
        inside_object: for object categories, place the anomaly inside the object's foreground.
        min_inside: fraction of the anomaly mask that must land inside the object.
        tries: random positions tried before the best one found is used.
    """

    margin: int = 2
    blend: str = "feather"
    feather_sigma: float = 1.5
    flip: bool = True
    max_rotation: float = 0.0
    inside_object: bool = True
    min_inside: float = 0.95
    tries: int = 50

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)}: must be >= 0"
            for name in ("margin", "feather_sigma")
            if getattr(self, name) < 0
        ]
        if self.blend not in BLENDS:
            problems.append(f"blend={self.blend!r}: choose one of {', '.join(BLENDS)}")
        if not 0 <= self.min_inside <= 1:
            problems.append(f"min_inside={self.min_inside}: must be in [0, 1]")
        if self.tries < 1:
            problems.append(f"tries={self.tries}: must be at least 1")
        if problems:
            raise GenerationInputError(*problems)


@dataclass
class _Patch:
    image: np.ndarray  # h x w x 3, the source pixels in the (dilated) bounding box
    mask: np.ndarray  # h x w bool, the anomaly
    region: np.ndarray  # h x w bool, the anomaly plus the margin (what is pasted)


@register_generator("crop-paste")
class CropPaste(Generator):
    """Real few-shot anomalies cut by their masks and pasted onto normal images (feathered or Poisson)."""

    Config = CropPasteConfig
    config: CropPasteConfig

    def fit(self, fewshot: FewShotSet) -> None:
        """Cut one patch per few-shot anomaly (the whole mask of the image, with the margin)."""
        size = self.config.image_size
        self.bank = NormalBank(fewshot.normal_images, size)
        self.patches: dict[str, list[_Patch]] = {}
        for defect, pairs in fewshot.anomalies.items():
            patches = []
            for image_path, mask_path in pairs:
                mask = load_mask(mask_path, size)
                if not mask.any():
                    continue
                region = (
                    ndimage.binary_dilation(mask, iterations=self.config.margin)
                    if self.config.margin
                    else mask
                )
                image, region, mask = trim(load_rgb(image_path, size), region, mask)
                patches.append(_Patch(image=image, mask=mask, region=region))
            if not patches:
                raise GenerationInputError(
                    f"crop-paste: every few-shot mask of {fewshot.category}/{defect} is empty"
                )
            self.patches[defect] = patches
        self.fewshot = fewshot

    def _augment(self, rng: np.random.Generator, patch: _Patch) -> _Patch:
        image, mask, region = patch.image, patch.mask, patch.region
        if self.config.flip:
            for axis in (0, 1):
                if rng.random() < 0.5:
                    image, mask, region = (np.flip(a, axis) for a in (image, mask, region))
        if self.config.max_rotation > 0:
            angle = float(rng.uniform(-self.config.max_rotation, self.config.max_rotation))
            image = rotate(image, angle, order=1)
            mask = rotate(mask.astype(np.uint8), angle, order=0) > 0
            region = rotate(region.astype(np.uint8), angle, order=0) > 0
            image, region, mask = trim(image, region, mask)
        return _Patch(np.ascontiguousarray(image), np.ascontiguousarray(mask), np.ascontiguousarray(region))

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` pairs; pair i uses its own Generator seeded with ``pair_seed(seed, defect, i)``."""
        self._check_defect(defect)
        fewshot = self._require_fit()
        restrict = bool(self.config.inside_object and fewshot.is_object)
        for s, rng in pair_rngs(seed, defect, n):
            patch = self._augment(rng, self.patches[defect][int(rng.integers(len(self.patches[defect])))])
            index = int(rng.integers(len(self.bank)))
            target = self.bank.image(index)
            h, w = target.shape[:2]
            if patch.mask.shape[0] > h or patch.mask.shape[1] > w:  # a rotated patch may outgrow the image
                patch = _Patch(patch.image[:h, :w], patch.mask[:h, :w], patch.region[:h, :w])
            top, left = random_placement(
                rng,
                patch.mask,
                self.bank.region(index, restrict),
                (h, w),
                self.config.tries,
                self.config.min_inside,
            )
            if self.config.blend == "poisson":
                image = poisson_paste(target, patch.image, patch.region, top, left)
            else:
                sigma = self.config.feather_sigma if self.config.blend == "feather" else 0.0
                alpha = feathered_alpha(patch.region, sigma, core=patch.mask)
                image = feather_paste(target, patch.image, alpha, top, left)
            mask = np.zeros((h, w), bool)
            mask[top : top + patch.mask.shape[0], left : left + patch.mask.shape[1]] = patch.mask
            yield GeneratedPair(image=image, mask=mask, seed=s)

"""``cutpaste-scar``: CutPaste's scar variant (Li et al., CVPR 2021), a thin rotated patch of the same image.

A thin rectangle (width 2-16 px, height 10-25 px at 256 px, scaled with the image size) is cut
from a random place of a normal image, colour-jittered, rotated by up to 45 degrees and pasted
back at another random place; the mask is the pasted (rotated) rectangle. No real anomaly is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from anobench.generation.base import FewShotSet, GeneratedPair, Generator, GeneratorConfig, pair_rngs
from anobench.generation.baselines._ops import NormalBank, color_jitter, random_placement, rotate
from anobench.generation.errors import GenerationInputError
from anobench.generation.registry import register_generator


@dataclass
class CutPasteScarConfig(GeneratorConfig):
    """Options of ``cutpaste-scar`` (the paper's values at ``reference_size`` 256).

    Attributes:
        width: scar width range in pixels at ``reference_size``.
        height: scar length range in pixels at ``reference_size``.
        reference_size: image side the ranges refer to; they scale with the shorter image side.
        max_rotation: rotation in [-x, x] degrees.
        jitter: colour-jitter strength (brightness, contrast, saturation factors in [1 - x, 1 + x]).
        hue: hue shift range (fraction of the hue circle).
        inside_object: for object categories, paste the scar inside the object's foreground.
    """

    width: tuple[int, int] = (2, 16)
    height: tuple[int, int] = (10, 25)
    reference_size: int = 256
    max_rotation: float = 45.0
    jitter: float = 0.1
    hue: float = 0.1
    inside_object: bool = True

    def __post_init__(self) -> None:
        self.width, self.height = tuple(self.width), tuple(self.height)  # type: ignore[assignment]
        problems = [
            f"{name}={value}: must be a range (lo, hi) with 1 <= lo <= hi"
            for name, value in (("width", self.width), ("height", self.height))
            if not 1 <= value[0] <= value[1]
        ]
        if problems:
            raise GenerationInputError(*problems)


@register_generator("cutpaste-scar")
class CutPasteScar(Generator):
    """CutPaste scar: a thin rotated, colour-jittered patch of the same normal image; no real anomalies."""

    Config = CutPasteScarConfig
    config: CutPasteScarConfig

    def fit(self, fewshot: FewShotSet) -> None:
        """Index the normal images; the few-shot anomalies are not used."""
        self.bank = NormalBank(fewshot.normal_images, self.config.image_size)
        self.fewshot = fewshot

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` pairs; pair i uses its own Generator seeded with ``pair_seed(seed, defect, i)``."""
        self._check_defect(defect)
        fewshot = self._require_fit()
        restrict = bool(self.config.inside_object and fewshot.is_object)
        c = self.config
        for s, rng in pair_rngs(seed, defect, n):
            index = int(rng.integers(len(self.bank)))
            image = self.bank.image(index)
            h, w = image.shape[:2]
            scale = min(h, w) / c.reference_size
            # At least 2 px wide: a nearest-neighbour rotation of a 1-px line can vanish.
            sw = max(2, round(rng.uniform(c.width[0], c.width[1]) * scale))
            sh = max(2, round(rng.uniform(c.height[0], c.height[1]) * scale))
            sh, sw = min(sh, h), min(sw, w)
            top, left = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
            patch = color_jitter(
                rng, image[top : top + sh, left : left + sw], c.jitter, c.jitter, c.jitter, c.hue
            )
            angle = float(rng.uniform(-c.max_rotation, c.max_rotation))
            patch = rotate(patch, angle, order=1)
            scar = rotate(np.ones((sh, sw), np.uint8), angle, order=0) > 0
            if not scar.any():  # degenerate rotation of a tiny scar: paste it unrotated
                patch, scar = rotate(patch, 0.0, order=1), np.ones((sh, sw), bool)
            scar, patch = scar[:h, :w], patch[:h, :w]
            y, x = random_placement(rng, scar, self.bank.region(index, restrict), (h, w))
            out = image.copy()
            window = out[y : y + scar.shape[0], x : x + scar.shape[1]]
            window[scar] = patch[scar]
            mask = np.zeros((h, w), bool)
            mask[y : y + scar.shape[0], x : x + scar.shape[1]] = scar
            yield GeneratedPair(image=out, mask=mask, seed=s)

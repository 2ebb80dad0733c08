"""``perlin``: DRAEM-style synthetic anomalies (Perlin-noise masks filled with a blended texture).

This generator uses **no real anomaly data**: it only sees the normal training images (and an
optional texture folder). It is the benchmark's ``no-anomaly`` reference row: what a downstream
model reaches when no real defect was ever shown, the bar below which a few-shot generator adds
nothing. Every defect type gets the same distribution of anomalies (seeded per defect).

Recipe (Zavrtanik et al., DRAEM, ICCV 2021): a 2-D Perlin noise with a random number of cells
per axis (2^0 .. 2^5 at the default settings), rotated at random, thresholded at 0.5, gives the
mask; inside it the image becomes ``(1 - beta) * texture + beta * image`` with the opacity
``beta`` drawn uniformly from [0, 0.8]. The texture is a random image of ``texture_dir`` (DTD in
the paper) or, by default, another normal image of the dataset, augmented by three random
operations of DRAEM's pool (gamma, brightness, hue, solarize, posterize, invert, autocontrast,
equalize, rotation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from anobench.generation.base import (
    FewShotSet,
    GeneratedPair,
    Generator,
    GeneratorConfig,
    load_rgb,
    pair_rngs,
)
from anobench.generation.baselines._ops import NormalBank, augment_texture
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import IMAGE_SUFFIXES
from anobench.generation.registry import register_generator


def perlin_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``cells`` lattice cells per axis, roughly in [-1, 1].

    Example:
        >>> noise = perlin_noise(np.random.default_rng(0), (64, 48), (4, 2))
        >>> noise.shape, bool(np.abs(noise).max() <= 1.5)
        ((64, 48), True)
    """
    angles = 2 * np.pi * rng.random((cells[0] + 1, cells[1] + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.arange(shape[0]) * cells[0] / shape[0]
    x = np.arange(shape[1]) * cells[1] / shape[1]
    yi, xi = y.astype(int), x.astype(int)
    yf, xf = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(yf), fade(xf)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return np.sqrt(2) * (top * (1 - u) + bottom * u)


@dataclass
class PerlinConfig(GeneratorConfig):
    """Options of ``perlin`` (DRAEM's values by default).

    Attributes:
        min_scale_exp: smallest number of noise cells per axis, as a power of two.
        max_scale_exp: largest number of noise cells per axis, as a power of two (inclusive).
        threshold: noise level above which a pixel is anomalous.
        max_rotation: random rotation of the noise in [-x, x] degrees.
        beta_max: the texture opacity parameter beta is drawn from [0, beta_max].
        texture_dir: folder of texture images (searched recursively; e.g. DTD's ``images/``);
            None uses the dataset's own normal images.
        augmentations: random augmentations applied to the texture (DRAEM: 3).
        inside_object: for object categories, keep the mask inside the object's foreground.
        min_area_ratio: smallest mask, as a fraction of the image; smaller draws are redrawn.
        tries: redraws before the noise is thresholded at the level that gives ``min_area_ratio``.
    """

    min_scale_exp: int = 0
    max_scale_exp: int = 5
    threshold: float = 0.5
    max_rotation: float = 90.0
    beta_max: float = 0.8
    texture_dir: str | None = None
    augmentations: int = 3
    inside_object: bool = True
    min_area_ratio: float = 0.001
    tries: int = 20

    def __post_init__(self) -> None:
        problems = []
        if self.texture_dir is not None and not Path(self.texture_dir).expanduser().is_dir():
            problems.append(f"texture_dir={self.texture_dir}: not a folder; point it at DTD's images/")
        for name, ok, rule in (
            ("min_scale_exp", self.min_scale_exp >= 0, ">= 0"),
            ("max_scale_exp", self.max_scale_exp >= self.min_scale_exp, ">= min_scale_exp"),
            ("beta_max", 0 <= self.beta_max <= 1, "in [0, 1]"),
            ("augmentations", 0 <= self.augmentations <= 9, "in [0, 9]"),
            ("min_area_ratio", 0 <= self.min_area_ratio < 1, "in [0, 1)"),
            ("tries", self.tries >= 1, "at least 1"),
        ):
            if not ok:
                problems.append(f"{name}={getattr(self, name)}: must be {rule}")
        if problems:
            raise GenerationInputError(*problems)


@register_generator("perlin")
class Perlin(Generator):
    """DRAEM-style Perlin-noise masks filled with a blended texture; uses no real anomalies."""

    Config = PerlinConfig
    config: PerlinConfig

    def fit(self, fewshot: FewShotSet) -> None:
        """Index the normal images and the texture source; the few-shot anomalies are not used."""
        self.bank = NormalBank(fewshot.normal_images, self.config.image_size)
        self.textures: list[Path] = []
        if self.config.texture_dir is not None:
            folder = Path(self.config.texture_dir).expanduser()
            self.textures = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.textures:
                raise GenerationInputError(f"perlin: texture_dir {folder} holds no images")
        self.fewshot = fewshot

    def _texture(self, rng: np.random.Generator, target_index: int, shape: tuple[int, int]) -> np.ndarray:
        if self.textures:
            texture = load_rgb(self.textures[int(rng.integers(len(self.textures)))])
        else:
            # Another normal image than the target (the same one when there is only one).
            k = int(rng.integers(max(len(self.bank) - 1, 1)))
            texture = self.bank.image(k + 1 if len(self.bank) > 1 and k >= target_index else k)
        if texture.shape[:2] != shape:
            texture = np.asarray(Image.fromarray(texture).resize((shape[1], shape[0]), Image.BILINEAR))
        return augment_texture(rng, texture, self.config.augmentations)

    def _mask(
        self, rng: np.random.Generator, shape: tuple[int, int], region: np.ndarray | None
    ) -> np.ndarray:
        c = self.config
        min_pixels = max(1, int(round(c.min_area_ratio * shape[0] * shape[1])))
        allowed = np.ones(shape, bool) if region is None else region
        noise = np.zeros(shape)
        for _ in range(c.tries):
            cells = tuple(2 ** int(rng.integers(c.min_scale_exp, c.max_scale_exp + 1)) for _ in range(2))
            noise = perlin_noise(rng, shape, cells)  # type: ignore[arg-type]
            if c.max_rotation:
                angle = float(rng.uniform(-c.max_rotation, c.max_rotation))
                noise = ndimage.rotate(noise, angle, reshape=False, order=1, mode="reflect")
            mask = (noise > c.threshold) & allowed
            if mask.sum() >= min_pixels:
                return mask
        # Rare (a small object): keep the last noise, thresholded so that it covers min_pixels.
        level = np.sort(noise[allowed])[-min(min_pixels, int(allowed.sum()))]
        return (noise >= level) & allowed

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` pairs; pair i uses its own Generator seeded with ``pair_seed(seed, defect, i)``."""
        self._check_defect(defect)
        fewshot = self._require_fit()
        restrict = bool(self.config.inside_object and fewshot.is_object)
        for s, rng in pair_rngs(seed, defect, n):
            index = int(rng.integers(len(self.bank)))
            image = self.bank.image(index)
            shape = image.shape[:2]
            mask = self._mask(rng, shape, self.bank.region(index, restrict))
            texture = self._texture(rng, index, shape).astype(np.float32)
            beta = float(rng.uniform(0, self.config.beta_max))
            base = image.astype(np.float32)
            blended = np.where(mask[..., None], (1 - beta) * texture + beta * base, base)
            yield GeneratedPair(image=np.clip(np.rint(blended), 0, 255).astype(np.uint8), mask=mask, seed=s)

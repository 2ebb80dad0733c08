"""The generator contract: ``fit(fewshot)``, ``sample(defect, n, seed)``, ``save``/``load``.

A generator is configured by a dataclass (its ``Config``); every parameter is a field with a
default, so a preset can set any of them and the config hash in the manifest identifies the run.

Example:
    >>> from anobench.generation import create_generator
    >>> gen = create_generator("real-fewshot")
    >>> gen.config_hash()  # doctest: +ELLIPSIS
    '...'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FewShotSet:
    """What a generator learns from.

    Attributes:
        category: category name (e.g. ``bottle``).
        normal_images: defect-free training images (``train/good``).
        anomalies: per defect type, the few real (image, mask) pairs the generator may use.
        is_object: True for object categories, False for textures, None when unknown.
    """

    category: str
    normal_images: list[Path]
    anomalies: dict[str, list[tuple[Path, Path]]]
    is_object: bool | None = None

    @property
    def defects(self) -> list[str]:
        """Defect types, in a stable order."""
        return sorted(self.anomalies)


@dataclass
class GeneratedPair:
    """One generated sample: whole image, binary mask and (optionally) the anomaly-part image."""

    image: np.ndarray  # H x W x 3, uint8
    mask: np.ndarray  # H x W, bool
    seed: int
    fg: np.ndarray | None = None  # H x W x 3, uint8

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask).astype(bool)
        if self.image.shape[:2] != self.mask.shape:
            raise ValueError(f"image {self.image.shape[:2]} and mask {self.mask.shape} differ in size")


@dataclass
class GeneratorConfig:
    """Fields every generator has.

    A subclass's ``__post_init__`` checks raise
    :class:`~anobench.generation.errors.GenerationInputError` with one ``field=value: rule`` line
    per problem, so a run config names the key
    (``generation.options.nsa.tries=0: must be at least 1``).
    """

    image_size: int | None = None  # output size in pixels (square); None keeps the source size

    @property
    def smoke_size(self) -> bool:
        """True when these settings make a smoke-size stand-in, not the method at its published scale.

        Tables and the run summary mark such rows
        (:data:`anobench.benchmarks.report.tables.SMOKE_SIZE_MARK`).
        """
        return False


def pair_seed(seed: int, defect: str, index: int) -> int:
    """The seed of pair ``index`` of ``defect`` in a run seeded with ``seed`` (stable across runs)."""
    return zlib.crc32(f"{seed}/{defect}/{index}".encode()) & 0x7FFFFFFF


def pair_rngs(seed: int, defect: str, n: int) -> Iterator[tuple[int, np.random.Generator]]:
    """(pair seed, its own numpy Generator) for pairs ``0..n-1`` of ``defect``.

    Example:
        >>> [s for s, _ in pair_rngs(0, "scratch", 2)] == [pair_seed(0, "scratch", i) for i in range(2)]
        True
    """
    for index in range(n):
        s = pair_seed(seed, defect, index)
        yield s, np.random.default_rng(s)


#: Grey-level PIL modes wider than 8 bit (16-bit PNGs open as ``I;16*`` or ``I``).
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB: the one conversion every dataset image goes through.

    16-bit grey is scaled to 8 bit (``v * 255 // 65535``, not clipped to white); grey, palette
    and 1-bit images are expanded to RGB; the alpha channel of RGBA/LA is dropped (colours kept).

    Example:
        >>> im = Image.fromarray(np.full((2, 2), 65535, np.uint16))
        >>> to_rgb(im).getpixel((0, 0))
        (255, 255, 255)
    """
    if im.mode in _WIDE_GREY_MODES:
        wide = np.asarray(im).astype(np.int64)
        im = Image.fromarray((np.clip(wide, 0, 65535) * 255 // 65535).astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Read any dataset image (PNG, JPG, BMP, TIFF; 8/16-bit, grey, RGBA, palette) as 8-bit RGB."""
    with Image.open(path) as im:
        rgb = to_rgb(im)
        return rgb.copy() if rgb is im else rgb


def mask_values(im: Image.Image) -> np.ndarray:
    """The H x W anomaly mask of an opened mask image: anomalous where its value is > 0.

    One rule for every layout, so {0, 255}, {0, 1} and label-valued masks (VisA) all work: grey
    (8/16-bit, 1-bit) masks use their value, colour and palette masks any of R, G, B (alpha ignored).
    """
    if im.mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        return np.asarray(im.convert("RGB")).max(axis=-1) > 0
    if im.mode == "LA":
        return np.asarray(im)[..., 0] > 0
    return np.asarray(im) > 0


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as H x W bool under :func:`mask_values`' rule (> 0 is anomalous).

    A folder of masks (MVTec LOCO keeps one file per defect region) is their union.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        masks = [read_mask(f) for f in files]
        if not masks:
            raise FileNotFoundError(f"{path}: mask folder holds no mask files")
        return np.logical_or.reduce(masks)
    with Image.open(path) as im:
        return mask_values(im)


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image as H x W x 3 uint8, optionally resized (bilinear) to ``size`` x ``size``."""
    im = read_image(path)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im).copy()


def resize_mask(mask: np.ndarray, size: int | tuple[int, int], *, soft: bool = False) -> np.ndarray:
    """Resize a bool mask to ``size`` (an int: square; else (width, height)).

    ``soft=False``: nearest neighbour; ``soft=True``: the mask as 0/255 grey, bilinear, then
    > 127.5 (the reference evaluation's rule).
    """
    wh = (size, size) if isinstance(size, int) else size
    if (mask.shape[1], mask.shape[0]) == wh:
        return mask
    if not soft:
        return np.asarray(Image.fromarray(mask).resize(wh, Image.NEAREST))
    grey = Image.fromarray(mask.astype(np.uint8) * 255).resize(wh, Image.BILINEAR)
    return np.asarray(grey, dtype=np.float32) / 255.0 > 0.5


def load_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read a mask as H x W bool (:func:`read_mask`), optionally resized (nearest) to ``size`` x ``size``."""
    mask = read_mask(path)
    return mask if size is None else resize_mask(mask, size)


class Generator(ABC):
    """Base class of all generators. Subclasses set ``Config`` and register with a name."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    writes_fg: ClassVar[bool] = False
    # Config options that make fit + sample of a handful of pairs take seconds on a CPU
    # (used by the registry-parametrised tests; learned generators shrink their models here).
    smoke_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: GeneratorConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a config object or keyword options, not both")
        self.config = config if config is not None else self.Config(**options)
        self.fewshot: FewShotSet | None = None
        self.show_progress = True  # long fits (DualAnoDiff training) show bars; the runner may turn them off

    @abstractmethod
    def fit(self, fewshot: FewShotSet) -> None:
        """Learn from the few-shot set (may be a no-op for rule-based generators)."""

    @abstractmethod
    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` pairs of ``defect``; pair i is seeded with :func:`pair_seed` (seed, defect, i)."""

    def save(self, path: str | Path) -> None:
        """Persist what ``fit`` learned (default: the config and the few-shot set's file lists)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"config": dataclasses.asdict(self.config), "fewshot": _fewshot_to_json(self.fewshot)}
        (path / "generator.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Generator:
        """Restore a generator saved with :meth:`save`."""
        state = json.loads((Path(path) / "generator.json").read_text())
        gen = cls(cls.Config(**state["config"]))
        if state["fewshot"] is not None:
            gen.fit(_fewshot_from_json(state["fewshot"]))
        return gen

    def config_hash(self) -> str:
        """Short hash of the generator name and its full config."""
        return config_hash({"generator": self.name, **dataclasses.asdict(self.config)})

    def _require_fit(self) -> FewShotSet:
        if self.fewshot is None:
            raise RuntimeError(f"generator {self.name!r}: call fit() before sample()")
        return self.fewshot

    def _check_defect(self, defect: str) -> list[tuple[Path, Path]]:
        from anobench.generation.errors import GenerationInputError

        fewshot = self._require_fit()
        if defect not in fewshot.anomalies:
            raise GenerationInputError(
                f"defect {defect!r} is not in the few-shot set of {fewshot.category!r}; "
                f"known: {', '.join(fewshot.defects)}"
            )
        return fewshot.anomalies[defect]


def config_hash(payload: Any) -> str:
    """Stable 12-hex-digit hash of a JSON-serialisable payload."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _fewshot_to_json(fewshot: FewShotSet | None) -> dict[str, Any] | None:
    if fewshot is None:
        return None
    return {
        "category": fewshot.category,
        "normal_images": [str(p) for p in fewshot.normal_images],
        "anomalies": {d: [[str(i), str(m)] for i, m in pairs] for d, pairs in fewshot.anomalies.items()},
        "is_object": fewshot.is_object,
    }


def _fewshot_from_json(payload: dict[str, Any]) -> FewShotSet:
    return FewShotSet(
        category=payload["category"],
        normal_images=[Path(p) for p in payload["normal_images"]],
        anomalies={d: [(Path(i), Path(m)) for i, m in pairs] for d, pairs in payload["anomalies"].items()},
        is_object=payload["is_object"],
    )


__all__ = [
    "FewShotSet",
    "GeneratedPair",
    "Generator",
    "GeneratorConfig",
    "config_hash",
    "load_mask",
    "load_rgb",
    "pair_seed",
]

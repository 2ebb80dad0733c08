"""The embedded synthetic dataset: a small dataset built offline, deterministically, in any layout.

Categories:

* ``brick`` and ``gravel``: textures cropped from scikit-image's bundled real photographs;
* ``nut``: a hexagonal nut seen from above, drawn procedurally (an object category).

Every defect is painted through an exact binary mask: pixels outside the mask are the normal
image, so the ground-truth masks are exact by construction.

Example:
    >>> from anobench.benchmarks.data.synth import build_synthetic_dataset
    >>> root = build_synthetic_dataset("/tmp/anobench-synth", seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 128
N_TRAIN_GOOD = 60
N_TEST_GOOD = 10
# Per-defect image counts differ on purpose, so the two split presets round differently
# (12 -> 4 or 5 few-shot images, 10 -> 3, 9 -> 3).
DEFECT_COUNTS = (12, 10, 9)

Rng = np.random.Generator


@dataclass(frozen=True)
class CategorySpec:
    """How one synthetic category is drawn."""

    name: str
    kind: str  # "texture" or "object"
    defects: tuple[str, ...]


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("brick", "texture", ("scratch", "hole", "stain")),
    CategorySpec("gravel", "texture", ("scratch", "hole", "stain")),
    CategorySpec("nut", "object", ("scratch", "stain", "missing")),
)


def category_names() -> list[str]:
    """Names of the embedded categories."""
    return [spec.name for spec in CATEGORIES]


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


# ---------------------------------------------------------------- normal images
@cache
def _texture_source(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)().astype(np.float32)


_TINTS = {"brick": (1.0, 0.72, 0.55), "gravel": (0.85, 0.85, 0.9)}


def _texture_image(name: str, rng: Rng) -> np.ndarray:
    source = _texture_source(name)
    h, w = source.shape
    crop = 2 * IMAGE_SIZE
    y, x = rng.integers(0, h - crop), rng.integers(0, w - crop)
    patch = source[y : y + crop, x : x + crop]
    patch = np.asarray(
        Image.fromarray(patch.astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    )
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain = rng.uniform(0.9, 1.1)
    rgb = patch[..., None].astype(np.float32) * np.array(_TINTS[name], np.float32) * gain
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _hexagon(center: tuple[float, float], radius: float, angle: float) -> list[tuple[float, float]]:
    cx, cy = center
    return [
        (cx + radius * np.cos(angle + k * np.pi / 3), cy + radius * np.sin(angle + k * np.pi / 3))
        for k in range(6)
    ]


def _nut_image(rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """A nut on a dark mat; returns the image and its object-foreground mask."""
    size = IMAGE_SIZE
    noise = rng.normal(0, 4, (size, size, 1))
    background = np.clip(np.array([38, 42, 48], np.float32) + noise, 0, 255)
    center = (size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4))
    radius = size * 0.36 * rng.uniform(0.95, 1.05)
    angle = rng.uniform(0, np.pi / 3)
    fg = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(fg)
    draw.polygon(_hexagon(center, radius, angle), fill=255)
    hole_r = radius * 0.42
    draw.ellipse([center[0] - hole_r, center[1] - hole_r, center[0] + hole_r, center[1] + hole_r], fill=0)
    fg_mask = np.asarray(fg) > 127
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shade = 150 + 60 * ((xx - center[0]) - (yy - center[1])) / (2 * radius)  # metallic gradient
    metal = np.stack([shade, shade * 0.98, shade * 0.93], -1) + rng.normal(0, 3, (size, size, 1))
    image = np.where(fg_mask[..., None], metal, background)
    return np.clip(image, 0, 255).astype(np.uint8), fg_mask


# ---------------------------------------------------------------- defects
def _blob_mask(rng: Rng, center: tuple[float, float], radius: float) -> np.ndarray:
    """An irregular filled blob (a jittered polygon), binary."""
    n = 12
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.2, n)
    pts = [(center[0] + r * np.cos(a), center[1] + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    ImageDraw.Draw(canvas).polygon(pts, fill=255)
    return np.asarray(canvas) > 127


def _pick_center(rng: Rng, region: np.ndarray | None, margin: int) -> tuple[float, float]:
    if region is None:
        return tuple(rng.uniform(margin, IMAGE_SIZE - margin, 2))  # type: ignore[return-value]
    ys, xs = np.nonzero(region[margin:-margin, margin:-margin])
    i = rng.integers(len(ys))
    return float(xs[i] + margin), float(ys[i] + margin)


def _scratch(image: np.ndarray, region: np.ndarray | None, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = _pick_center(rng, region, 24)
    direction = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(4):
        direction += rng.uniform(-0.4, 0.4)
        step = rng.uniform(6, 12)
        x, y = x + step * np.cos(direction), y + step * np.sin(direction)
        points.append((x, y))
    draw.line(points, fill=255, width=int(rng.integers(2, 4)))
    mask = np.asarray(canvas) > 127
    if region is not None:
        mask &= region
    bright = rng.random() < 0.5
    value = np.array([235, 235, 230] if bright else [25, 22, 20], np.float32)
    out = np.where(mask[..., None], value, image)
    return out.astype(np.uint8), mask


def _hole(image: np.ndarray, region: np.ndarray | None, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob_mask(rng, _pick_center(rng, region, 20), rng.uniform(6, 11))
    if region is not None:
        mask &= region
    depth = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    darkness = 0.15 + 0.35 * (1 - np.asarray(depth, np.float32) / 255)  # dark rim to darker centre
    out = np.where(mask[..., None], image * darkness[..., None], image)
    return out.astype(np.uint8), mask


def _stain(image: np.ndarray, region: np.ndarray | None, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob_mask(rng, _pick_center(rng, region, 20), rng.uniform(8, 14))
    if region is not None:
        mask &= region
    colours = ([150, 60, 20], [40, 110, 40], [30, 60, 150])
    colour = np.array(colours[rng.integers(len(colours))], np.float32)
    alpha = rng.uniform(0.55, 0.75)
    out = np.where(mask[..., None], (1 - alpha) * image + alpha * colour, image)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def _missing(
    image: np.ndarray, region: np.ndarray | None, rng: Rng, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk bitten out of the object's rim: the object pixels there become background."""
    assert region is not None
    ys, xs = np.nonzero(region)
    cy, cx = ys.mean(), xs.mean()
    angle = rng.uniform(0, 2 * np.pi)
    outer = np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())
    bite = (cx + outer * 0.95 * np.cos(angle), cy + outer * 0.95 * np.sin(angle))
    mask = _blob_mask(rng, bite, rng.uniform(10, 15)) & region
    out = np.where(mask[..., None], background, image)
    return out.astype(np.uint8), mask


DefectFn = Callable[[np.ndarray, "np.ndarray | None", Rng], tuple[np.ndarray, np.ndarray]]
_DEFECTS: dict[str, DefectFn] = {"scratch": _scratch, "hole": _hole, "stain": _stain}


# ---------------------------------------------------------------- assembly
def _normal(spec: CategorySpec, rng: Rng) -> tuple[np.ndarray, np.ndarray | None]:
    if spec.kind == "object":
        return _nut_image(rng)
    return _texture_image(spec.name, rng), None


def defective_image(spec: CategorySpec, defect: str, rng: Rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal image, defective image, exact mask): the two images differ only inside the mask."""
    while True:  # redraw on the (rare) empty mask
        image, region = _normal(spec, rng)
        if defect == "missing":
            background = np.full_like(image, (38, 42, 48))
            out, mask = _missing(image, region, rng, background)
        else:
            out, mask = _DEFECTS[defect](image, region, rng)
        if mask.sum() >= 8 and np.any(out[mask] != image[mask]):
            return image, out, mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=False)


def build_category(root: Path, spec: CategorySpec, seed: int) -> None:
    """Write one category in MVTec-AD layout under ``root/spec.name``."""
    base = root / spec.name
    rng = np.random.default_rng(_stable_seed(seed, spec.name, "train"))
    for i in range(N_TRAIN_GOOD):
        _save(_normal(spec, rng)[0], base / "train" / "good" / f"{i:03d}.png")
    rng = np.random.default_rng(_stable_seed(seed, spec.name, "test-good"))
    for i in range(N_TEST_GOOD):
        _save(_normal(spec, rng)[0], base / "test" / "good" / f"{i:03d}.png")
    for defect, count in zip(spec.defects, DEFECT_COUNTS, strict=True):
        rng = np.random.default_rng(_stable_seed(seed, spec.name, defect))
        for i in range(count):
            _, image, mask = defective_image(spec, defect, rng)
            _save(image, base / "test" / defect / f"{i:03d}.png")
            _save((mask * 255).astype(np.uint8), base / "ground_truth" / defect / f"{i:03d}_mask.png")


def build_synthetic_dataset(
    out: str | Path, seed: int = 0, categories: list[str] | None = None, layout: str = "mvtec"
) -> Path:
    """Build the embedded dataset under ``out`` in ``layout`` (a registered dataset format).

    The same seed always gives byte-identical files (MVTec layout; other layouts are written from
    it by the format's adapter, e.g. VisA's JPGs and split CSV).
    """
    root = Path(out)
    wanted = set(categories) if categories else None
    specs = [spec for spec in CATEGORIES if wanted is None or spec.name in wanted]
    if layout == "mvtec":
        for spec in specs:
            build_category(root, spec, seed)
    else:
        import tempfile

        from anobench.benchmarks.data.datasets import get_dataset

        adapter = get_dataset(layout)  # an unknown name fails before anything is drawn
        with tempfile.TemporaryDirectory() as tmp:
            source = get_dataset("mvtec")
            for spec in specs:
                build_category(Path(tmp), spec, seed)
            adapter.write([source.read_category(Path(tmp), s.name, validate=False) for s in specs], root)
    (root / ".anobench-synthetic").write_text(f"seed={seed} layout={layout}\n")
    return root


def embedded_dataset(cache_dir: str | Path, seed: int = 0) -> Path:
    """The embedded dataset, built once into ``cache_dir/synthetic-seed<seed>`` and reused."""
    root = Path(cache_dir) / f"synthetic-seed{seed}"
    if not (root / ".anobench-synthetic").exists():
        tmp = root.with_name(root.name + ".partial")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        build_synthetic_dataset(tmp, seed)
        tmp.rename(root)
    return root

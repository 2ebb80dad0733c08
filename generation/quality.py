"""Mask quality of a generated set, and the figure a person looks at first.

Per (category, defect): how many pairs, the mask area ratio distribution (mean, median, p5, p95),
the number of connected components (8-connectivity; mean and a 0/1/2/3/4+ histogram), the
fraction of empty masks and, for object categories when an object foreground is given, the mean
fraction of each non-empty mask that lies inside the object.

Example:
    >>> from anobench.generation.format import read_generated_set
    >>> from anobench.generation.quality import mask_quality, quality_figure
    >>> pairs = read_generated_set("runs/quick/generated/perlin__seed0")  # doctest: +SKIP
    >>> rows = mask_quality(pairs)  # doctest: +SKIP
    >>> quality_figure(pairs, "perlin.png", per_defect=4)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from anobench.generation.base import load_mask, load_rgb
from anobench.generation.foreground import resize_mask
from anobench.generation.format import GeneratedEntry

COMPONENT_BINS = ("0", "1", "2", "3", "4+")

# Per-category summary keys (means over the category's defect types): descriptive statistics with no
# better direction, reported next to IS/IC-LPIPS/KID but not gated.
MASK_AREA, MASK_COMPONENTS, MASK_EMPTY, MASK_ON_OBJECT = (
    "mask_area", "mask_components", "mask_empty", "mask_on_object",
)  # fmt: skip
MASK_METRICS = (MASK_AREA, MASK_COMPONENTS, MASK_EMPTY, MASK_ON_OBJECT)
# Per-(category, defect) statistics: the keys of a :func:`defect_quality` row besides its labels.
DEFECT_N, AREA_MEAN, AREA_MEDIAN, AREA_P5, AREA_P95 = "n", "area_mean", "area_median", "area_p5", "area_p95"
COMPONENTS_MEAN, COMPONENTS, EMPTY_FRACTION, INSIDE_OBJECT = (
    "components_mean", "components", "empty_fraction", "inside_object",
)  # fmt: skip
DEFECT_STATISTICS = (
    DEFECT_N, AREA_MEAN, AREA_MEDIAN, AREA_P5, AREA_P95,
    COMPONENTS_MEAN, COMPONENTS, EMPTY_FRACTION, INSIDE_OBJECT,
)  # fmt: skip
EIGHT_CONNECTED = np.ones((3, 3), bool)


def component_count(mask: np.ndarray) -> int:
    """Connected components of a bool mask (8-connectivity)."""
    return int(ndimage.label(mask, structure=EIGHT_CONNECTED)[1])


def defect_quality(
    entries: Sequence[GeneratedEntry], foreground: np.ndarray | None = None
) -> dict[str, object]:
    """The statistics of one defect type's pairs (see the module docstring).

    Args:
        entries: the pairs of one (category, defect).
        foreground: H x W bool object foreground (resized to each mask); None for textures.
    """
    areas, components, inside = [], [], []
    for entry in entries:
        mask = load_mask(entry.mask)
        areas.append(float(mask.mean()))
        components.append(component_count(mask))
        if foreground is not None and mask.any():
            fg = foreground if foreground.shape == mask.shape else resize_mask(foreground, mask.shape)
            inside.append(float((mask & fg).sum() / mask.sum()))
    area = np.asarray(areas)
    counts = np.asarray(components)
    hist = np.bincount(np.minimum(counts, len(COMPONENT_BINS) - 1), minlength=len(COMPONENT_BINS))
    first = entries[0]
    return {
        "category": first.category,
        "defect": first.defect,
        DEFECT_N: len(entries),
        AREA_MEAN: float(area.mean()),
        AREA_MEDIAN: float(np.median(area)),
        AREA_P5: float(np.percentile(area, 5)),
        AREA_P95: float(np.percentile(area, 95)),
        COMPONENTS_MEAN: float(counts.mean()),
        COMPONENTS: {b: int(c) for b, c in zip(COMPONENT_BINS, hist, strict=True)},
        EMPTY_FRACTION: float((area == 0).mean()),
        INSIDE_OBJECT: float(np.mean(inside)) if inside else None,
    }


def mask_quality(
    generated: Mapping[tuple[str, str], Sequence[GeneratedEntry]],
    foregrounds: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, object]]:
    """:func:`defect_quality` of every (category, defect) of a set read by ``read_generated_set``.

    Args:
        generated: the pairs per (category, defect).
        foregrounds: object foreground per category (object categories only; see
            :func:`anobench.generation.foreground.foreground_prior`).
    """
    foregrounds = foregrounds or {}
    return [defect_quality(entries, foregrounds.get(cat)) for (cat, _), entries in sorted(generated.items())]


def mask_summary(rows: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Means over defect types of :func:`defect_quality` rows (``MASK_ON_OBJECT`` only where known).

    Example:
        >>> rows = [{"area_mean": 0.1, "components_mean": 1.0, "empty_fraction": 0.0, "inside_object": None},
        ...         {"area_mean": 0.3, "components_mean": 2.0, "empty_fraction": 0.5, "inside_object": None}]
        >>> mask_summary(rows)
        {'mask_area': 0.2, 'mask_components': 1.5, 'mask_empty': 0.25}
    """
    summary = {
        MASK_AREA: float(np.mean([r[AREA_MEAN] for r in rows])),
        MASK_COMPONENTS: float(np.mean([r[COMPONENTS_MEAN] for r in rows])),
        MASK_EMPTY: float(np.mean([r[EMPTY_FRACTION] for r in rows])),
    }
    inside = [r[INSIDE_OBJECT] for r in rows if r[INSIDE_OBJECT] is not None]
    if inside:
        summary[MASK_ON_OBJECT] = float(np.mean(inside))
    return summary


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted red and its outline drawn."""
    out = image.astype(np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * np.array([255, 0, 0], np.float32)
    outline = mask & ~ndimage.binary_erosion(mask, structure=EIGHT_CONNECTED)
    out[outline] = (255, 40, 40)
    return out.astype(np.uint8)


def quality_figure(
    generated: Mapping[tuple[str, str], Sequence[GeneratedEntry]],
    out: str | Path,
    per_defect: int = 4,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: one row per (category, defect), ``per_defect`` samples of image | mask | overlay.

    Samples are evenly spaced over each defect's pairs (deterministic).
    """
    keys = sorted(generated)
    cols = 3 * per_defect
    fig = Figure(figsize=(1.25 * cols, 1.45 * len(keys) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), cols, squeeze=False)
    for row, key in enumerate(keys):
        entries = generated[key]
        picks = np.linspace(0, len(entries) - 1, num=min(per_defect, len(entries))).round().astype(int)
        for k in range(per_defect):
            panels = axes[row, 3 * k : 3 * k + 3]
            for ax in panels:
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if k >= len(picks):
                continue
            entry = entries[int(picks[k])]
            image, mask = load_rgb(entry.image), load_mask(entry.mask)
            panels[0].imshow(image)
            panels[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
            panels[2].imshow(_overlay(image, mask))
            panels[0].set_title(f"#{entry.index} image", fontsize=7)
            panels[1].set_title(f"mask {mask.mean():.2%}", fontsize=7)
            panels[2].set_title("overlay", fontsize=7)
        axes[row, 0].set_ylabel(f"{key[0]}\n{key[1]}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(out)
    return out


__all__ = ["COMPONENT_BINS", "component_count", "defect_quality", "mask_quality", "quality_figure"]

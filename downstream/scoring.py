"""Score any detector's anomaly maps stored on disk (what ``anobench score`` runs).

Layout: one map per test image, ``<maps>/<defect>/<stem>.<ext>`` where ``<defect>`` is ``good``
or the defect folder name and ``<stem>`` the test image's file name without extension (``000``);
``<maps>/<category>/test/<defect>/...`` (MVTec's own evaluation layout) and
``<maps>/<category>/<defect>/...`` are found too. Formats: ``.npy`` (2-D float array), ``.tif``/
``.tiff`` (float or integer) and ``.png``; 8-bit and 16-bit integer maps are scaled to [0, 1]
(by 255 and 65535), float maps are used as they are.

Image scores are the max of the ``pool_kernel`` x ``pool_kernel`` mean-pooled map (the
protocol's rule; ``pool_kernel=1`` is the plain maximum), or given in a scores file: JSON
``{"<defect>/<stem>": score}`` or CSV lines ``<defect>/<stem>,<score>``.

Example:
    >>> from anobench.downstream.scoring import score_map_folder  # doctest: +SKIP
    >>> score_map_folder(test_good, test_anomalies, "maps/")["metrics"]["pixel_aupro"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.evaluation import GOOD, HeldOutSplit
from anobench.downstream.segmenter import image_scores
from anobench.generation.base import read_mask

MAP_EXTENSIONS = (".npy", ".tiff", ".tif", ".png")
MAX_PROBLEMS = 20


def read_map(path: Path) -> np.ndarray:
    """A 2-D float32 anomaly map from ``.npy``, ``.tif(f)`` or ``.png`` (integers scaled to [0, 1])."""
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as im:
            array = np.asarray(im)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and path.suffix != ".npy":
        if array.shape[-1] > 1 and not np.array_equal(array[..., 0], array[..., 1]):
            raise DownstreamInputError(f"{path}: a colour image; save the map as one channel")
        array = array[..., 0]
    array = np.squeeze(array)
    if array.ndim != 2:
        raise DownstreamInputError(f"{path}: expected a 2-D map, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return array.astype(np.float32)


def find_map_root(maps_dir: Path, category: str) -> Path:
    """The folder holding ``good/`` and the defect folders (see the module docstring)."""
    for candidate in (maps_dir / category / "test", maps_dir / category, maps_dir):
        if (candidate / GOOD).is_dir():
            return candidate
    raise DownstreamInputError(
        f"{maps_dir}: no '{GOOD}/' folder found (looked in {maps_dir / category / 'test'}, "
        f"{maps_dir / category}, {maps_dir}); lay maps out as <maps>/<defect>/<image stem>.npy|png|tiff"
    )


def _map_path(root: Path, defect: str, image: Path) -> Path | None:
    for ext in MAP_EXTENSIONS:
        path = root / defect / f"{image.stem}{ext}"
        if path.is_file():
            return path
    return None


def read_scores_file(path: Path) -> dict[str, float]:
    """Image scores keyed ``<defect>/<stem>`` from JSON or two-column CSV."""
    if not path.is_file():
        raise DownstreamInputError(f"{path}: scores file not found")
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            return {str(k): float(v) for k, v in raw.items()}
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
        if rows and rows[0][0].strip().lower() in ("name", "image"):
            rows = rows[1:]
        return {row[0].strip(): float(row[1]) for row in rows}
    except (ValueError, IndexError, AttributeError, json.JSONDecodeError) as exc:
        raise DownstreamInputError(
            f"{path}: not a scores file ({exc.__class__.__name__}); expected JSON "
            '{"<defect>/<stem>": score} or CSV lines <defect>/<stem>,<score>'
        ) from None


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(array)[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _read_mask(path: Path | None, shape: tuple[int, int], size: int | None) -> np.ndarray:
    if path is None:
        return np.zeros((size, size) if size else shape, dtype=bool)
    mask = read_mask(path)
    return _resize(mask.astype(np.float32), size) > 0.5 if size else mask


def score_map_folder(
    test_good: Sequence[Path],
    test_anomalies_by_defect: dict[str, Sequence[tuple[Path, Path]]],
    maps_root: Path,
    *,
    pixel_f1: str = "exact",
    pool_kernel: int = 21,
    scores_file: Path | None = None,
    resize: int | None = None,
) -> dict[str, Any]:
    """Read one map per test image from ``maps_root`` and compute every segmentation metric.

    Args:
        test_good: good test images.
        test_anomalies_by_defect: per defect type, (image, mask) pairs.
        maps_root: the folder holding ``good/`` and the defect folders.
        pixel_f1: ``exact`` or ``grid-0.05``.
        pool_kernel: image score = max of the mean-pooled map (ignored with ``scores_file``).
        scores_file: image scores instead of the pooling rule.
        resize: score at ``resize`` x ``resize`` (maps bilinear, masks bilinear then > 0.5, as the
            protocol does); None: maps must have the test images' size.
    """
    entries = [(GOOD, image, None) for image in test_good]
    entries += [
        (d, image, mask)
        for d in sorted(test_anomalies_by_defect)
        for image, mask in test_anomalies_by_defect[d]
    ]
    problems: list[str] = []
    non_finite: list[str] = []
    maps, masks, names, defects = [], [], [], []
    for defect, image, mask in entries:
        path = _map_path(maps_root, defect, image)
        name = f"{defect}/{image.stem}"
        if path is None:
            problems.append(
                f"{maps_root / defect / image.stem}.npy|.png|.tiff: missing map for test image {image}"
            )
            continue
        try:
            amap = read_map(path)
        except DownstreamInputError as exc:
            problems.extend(exc.problems)
            continue
        if not np.isfinite(amap).all():
            non_finite.append(f"{path} ({int((~np.isfinite(amap)).sum())} of {amap.size} values)")
            continue
        with Image.open(image) as im:
            width, height = im.size
        if resize is None and amap.shape != (height, width):
            problems.append(
                f"{path}: map is {amap.shape[1]}x{amap.shape[0]}, the test image is {width}x{height}; "
                "save maps at the image size or pass --resize 256"
            )
            continue
        maps.append(_resize(amap, resize) if resize else amap)
        masks.append(_read_mask(mask, (height, width), resize))
        names.append(name)
        defects.append(defect)
    if non_finite:
        shown = ", ".join(non_finite[:MAX_PROBLEMS]) + (" ..." if len(non_finite) > MAX_PROBLEMS else "")
        problems.insert(
            0,
            f"{len(non_finite)} anomaly map(s) hold NaN or infinite values, which cannot be ranked: {shown}",
        )
    if problems:
        extra = len(problems) - MAX_PROBLEMS
        raise DownstreamInputError(
            *problems[:MAX_PROBLEMS], *([f"... and {extra} more"] if extra > 0 else [])
        )
    if len({m.shape for m in maps}) > 1:
        raise DownstreamInputError(
            f"{maps_root}: maps of different sizes ({sorted({m.shape for m in maps})}); pass --resize 256"
        )
    map_array, mask_array = np.stack(maps), np.stack(masks)
    if scores_file is not None:
        given = read_scores_file(scores_file)
        missing = [n for n in names if n not in given]
        if missing:
            raise DownstreamInputError(
                f"{scores_file}: no score for {len(missing)} images, e.g. {missing[0]}"
            )
        scores = np.array([given[n] for n in names], dtype=np.float64)
        bad = [n for n, v in zip(names, scores, strict=True) if not np.isfinite(v)]
        if bad:
            raise DownstreamInputError(
                f"{scores_file}: NaN or infinite score for {len(bad)} images, e.g. {bad[0]}"
            )
        rule = f"scores file {scores_file.name}"
    else:
        scores = image_scores(torch.from_numpy(map_array), pool_kernel).numpy()
        rule = f"max of the {pool_kernel}x{pool_kernel} mean-pooled map"
    split = HeldOutSplit(torch.empty(0), mask_array, defects, names)
    pixels = split.sort_pixels(map_array)  # one sort of the pixels for both calls
    return {
        "metrics": split.score(map_array, scores, pixel_f1, pixels=pixels),
        "per_defect": split.score_per_defect(map_array, scores, pixels),
        "n_images": len(names),
        "n_anomalous": int(sum(d != GOOD for d in defects)),
        "resolution": list(map_array.shape[1:]),
        "image_score": rule,
        "pixel_f1_mode": pixel_f1,
    }

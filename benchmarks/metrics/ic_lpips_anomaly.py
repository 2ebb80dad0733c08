"""IC-LPIPS on the anomaly region only (SeaS's IC-LPIPS(a)), reusing :mod:`.ic_lpips`.

SeaS reports IC-LPIPS(a), "intra-cluster pairwise LPIPS computed only inside anomaly regions"; its
released ``utils/metrics/metrics_lpips.py`` computes IC-LPIPS on whatever folders it is given (VGG,
256 px, at most 140 per cluster) and does not show how the regions are cut. Here each image (generated
and few-shot real centres alike) is cropped to the bounding box of its mask, then the unchanged
IC-LPIPS recipe ``seas`` runs on the crops. A pair with an empty mask is left out.

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.ic_lpips_anomaly import mask_box
    >>> m = np.zeros((8, 8), bool); m[2:4, 3:6] = True
    >>> mask_box(m)
    (2, 4, 3, 6)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from anobench.benchmarks.metrics.ic_lpips import PathDistance, ic_lpips_type
from anobench.generation.base import load_mask, load_rgb


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), end-exclusive, of a bool mask's bounding box; None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def load_pair(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image (H x W x 3 uint8) and its bool mask at the image's size (nearest)."""
    rgb, binary = load_rgb(image), load_mask(mask)
    if binary.shape != rgb.shape[:2]:
        binary = np.asarray(Image.fromarray(binary).resize(rgb.shape[1::-1], Image.NEAREST))
    return rgb, binary


def write_crops(pairs: Sequence[tuple[Path, Path]], folder: Path) -> list[Path]:
    """Crop each image to its mask's bounding box into ``folder``; pairs with an empty mask are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (image, mask) in enumerate(pairs):
        rgb, binary = load_pair(image, mask)
        box = mask_box(binary)
        if box is None:
            continue
        path = folder / f"{i:05d}.png"
        Image.fromarray(rgb[box[0] : box[1], box[2] : box[3]]).save(path)
        out.append(path)
    return out


def ic_lpips_anomaly_type(
    generated: Sequence[tuple[Path, Path]],
    centres: Sequence[tuple[Path, Path]],
    distance: PathDistance,
    max_per_cluster: int,
    rng: np.random.Generator,
) -> float:
    """IC-LPIPS(a) of one defect type from (image, mask) pairs: the type score of the crops."""
    with tempfile.TemporaryDirectory(prefix="ic-lpips-a-") as tmp:
        gen = write_crops(generated, Path(tmp) / "generated")
        ref = write_crops(centres, Path(tmp) / "centres")
        if not gen or not ref:
            return float("nan")
        return float(ic_lpips_type(gen, ref, distance, max_per_cluster, rng)["score"])

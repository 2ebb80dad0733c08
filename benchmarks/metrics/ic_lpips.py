"""IC-LPIPS (intra-cluster LPIPS) with the published variants, pairwise distances in batches.

Algorithm (AnomalyDiffusion ``cal_ic_lpips.py`` = DualAnoDiff ``eval/compute-ic-lpipis.py``):

1. every image is resized to ``size`` x ``size`` and scaled to [-1, 1];
2. the cluster centres are the few-shot real images of the defect type (strict split: the first
   floor(N/3));
3. each generated image joins the centre at minimum LPIPS distance (ties: the first centre);
4. per cluster: shuffle (seeded), keep at most ``max_per_cluster`` members, mean LPIPS over the
   unordered pairs i < j; a cluster with fewer than 2 members is NaN;
5. type score = mean over the clusters, NaN clusters ignored.

LPIPS(x, y) = sum over layers l of mean over positions of sum_c w_lc (fx_lc - fy_lc)^2, where f are
channel-normalised trunk features. Expanding the square, the distances between all members follow
from one matrix product per layer on features computed once per image (:func:`pairwise_lpips`, used
by :class:`LPIPSDistance`, whose feature cache serves both the cluster assignment and the
within-cluster distances), instead of one network call per pair.

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.ic_lpips import mean_pair_distance
    >>> round(mean_pair_distance(np.array([[0, .2, .4], [.2, 0, .6], [.4, .6, 0]])), 3)
    0.4
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from anobench.generation.base import load_rgb

Features = list[torch.Tensor]  # one (n, C*H*W) float tensor per LPIPS layer


def load_lpips_input(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Images as the reference reads them: PIL ``Resize((size, size))`` (bilinear), ``ToTensor``, [-1, 1]."""
    arrays = np.stack([load_rgb(path, size) for path in paths])  # PIL bilinear, as torchvision's Resize
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255 * 2 - 1


class PathDistance(Protocol):
    """What IC-LPIPS needs from a perceptual distance on image files."""

    def cross(self, rows: Sequence[Path], columns: Sequence[Path]) -> np.ndarray:
        """Distances between every row image and every column image: shape (len(rows), len(columns))."""

    def within(self, paths: Sequence[Path]) -> np.ndarray:
        """Symmetric distance matrix of ``paths``."""


class LPIPSDistance:
    """Batched LPIPS on image files for one ``lpips.LPIPS`` model: features once per image, then matmuls.

    Features are kept per image path (up to ``cache_mb`` megabytes), so the cluster assignment
    (:meth:`cross`) and the within-cluster distances (:meth:`within`) compute each image's
    features once; :meth:`clear` empties the cache (between defect types).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        size: int = 256,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        cache_mb: float = 2048,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.size = size
        self.batch_size = batch_size
        # w_lc of each layer's linear head (1x1 conv, no bias), shape (C, 1, 1).
        self.weights = [lin.model[-1].weight.detach()[0] for lin in self.model.lins]
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: dict[Path, Features] = {}
        self._cached_bytes = 0

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> Features:
        """Channel-normalised trunk features of a batch in [-1, 1], flattened per layer."""
        import lpips

        dtype = next(self.model.parameters()).dtype
        outs = self.model.net(self.model.scaling_layer(images.to(self.device, dtype)))
        return [lpips.normalize_tensor(o).flatten(1) for o in outs]

    def clear(self) -> None:
        """Forget the cached features."""
        self._cache.clear()
        self._cached_bytes = 0

    def _remember(self, paths: Sequence[Path], feats: Features) -> None:
        row_bytes = sum(f[0].numel() * f.element_size() for f in feats)
        for i, path in enumerate(paths):
            if path not in self._cache and self._cached_bytes + row_bytes <= self.cache_bytes:
                self._cache[path] = [f[i : i + 1].clone() for f in feats]
                self._cached_bytes += row_bytes

    def _batches(self, paths: Sequence[Path], desc: str | None) -> Iterator[Features]:
        """Features of ``paths`` in batches of up to ``batch_size``; cached images are not recomputed."""
        starts = range(0, len(paths), self.batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=desc is None):
            batch = paths[start : start + self.batch_size]
            todo = [p for p in batch if p not in self._cache]
            if todo:
                fresh = self.features(load_lpips_input(todo, self.size))
                computed = {p: [f[i : i + 1] for f in fresh] for i, p in enumerate(todo)}
                self._remember(todo, fresh)
            rows = [self._cache[p] if p in self._cache else computed[p] for p in batch]
            yield [torch.cat([r[layer] for r in rows]) for layer in range(len(self.weights))]

    def features_of(self, paths: Sequence[Path]) -> Features:
        """Features of image files, computed in batches."""
        chunks = list(self._batches(paths, None))
        return [torch.cat([c[layer] for c in chunks]) for layer in range(len(self.weights))]

    def cross(self, rows: Sequence[Path], columns: Sequence[Path], desc: str | None = None) -> np.ndarray:
        """Column features are kept; row features are streamed batch by batch (bounded memory)."""
        column_feats = self.features_of(columns)
        out = [pairwise_lpips(f, column_feats, self.weights) for f in self._batches(rows, desc)]
        return torch.cat(out).cpu().numpy()

    def within(self, paths: Sequence[Path]) -> np.ndarray:
        """All pairs of ``paths`` from one feature pass."""
        feats = self.features_of(paths)
        return pairwise_lpips(feats, feats, self.weights).cpu().numpy()


def pairwise_lpips(
    a: Features, b: Features, weights: Sequence[torch.Tensor], chunk: int = 1 << 18
) -> torch.Tensor:
    """sum_l mean_hw sum_c w (fa - fb)^2 for all pairs, as ||fa||_w^2 + ||fb||_w^2 - 2 <fa, fb>_w.

    Accumulated in float64 over chunks of the feature axis (bounded memory), so the expansion adds no
    cancellation error beyond the features' own precision.
    """
    total = torch.zeros(a[0].shape[0], b[0].shape[0], dtype=torch.float64, device=a[0].device)
    for fa, fb, w in zip(a, b, weights, strict=True):
        n_channels = w.shape[0]
        positions = fa.shape[1] // n_channels
        w_flat = w.reshape(n_channels, 1).expand(n_channels, positions).reshape(1, -1)
        layer = torch.zeros_like(total)
        for start in range(0, fa.shape[1], chunk):
            part = slice(start, start + chunk)
            wa = (fa[:, part] * w_flat[:, part]).double()
            ca, cb, cw = fa[:, part].double(), fb[:, part].double(), w_flat[:, part].double()
            layer += (wa * ca).sum(1)[:, None] + (cb * cw * cb).sum(1)[None, :] - 2 * wa @ cb.T
        total += layer.clamp_min(0) / positions
    return total


def select_members(members: Sequence[int], max_members: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle a cluster's members and keep at most ``max_members`` (the reference's subsampling)."""
    members = np.asarray(members, dtype=int)
    return members[rng.permutation(len(members))][:max_members]


def mean_pair_distance(distances: np.ndarray) -> float:
    """Mean over unordered pairs i < j of a symmetric matrix; NaN with fewer than 2 members."""
    n = distances.shape[0]
    return float(distances[np.triu_indices(n, k=1)].mean()) if n >= 2 else math.nan


def type_rng(seed: int, category: str, defect: str) -> np.random.Generator:
    """A generator per (seed, category, defect): results do not depend on the order types are scored in."""
    return np.random.default_rng([seed, zlib.crc32(f"{category}/{defect}".encode())])


def ic_lpips_type(
    generated: Sequence[Path],
    centres: Sequence[Path],
    distance: PathDistance,
    max_per_cluster: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """IC-LPIPS of one defect type: cluster assignment, per-cluster scores and the type score."""
    if not centres:
        raise ValueError("IC-LPIPS needs at least one cluster centre (a few-shot real image)")
    labels = distance.cross(generated, centres).argmin(1)
    clusters = []
    for k in range(len(centres)):
        chosen = select_members(np.flatnonzero(labels == k).tolist(), max_per_cluster, rng)
        score = (
            mean_pair_distance(distance.within([generated[i] for i in chosen]))
            if len(chosen) >= 2
            else math.nan
        )
        clusters.append(score)
    valid = [c for c in clusters if not math.isnan(c)]
    return {
        "score": float(np.mean(valid)) if valid else math.nan,
        "cluster_scores": clusters,
        "cluster_sizes": np.bincount(labels, minlength=len(centres)).tolist(),
    }

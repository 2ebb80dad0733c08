"""Mask adherence: whether the anomaly is where the pair's mask says it is.

An unsupervised detector (PatchCore on the offline ImageNet EfficientNet-Lite0 by default; any
:class:`~anobench.downstream.unsupervised.DetectorConfig`) is fitted once per category on its
``train/good`` images and cached; it maps each generated image, and the pixel AUROC (and AP) of that
map against the pair's own mask is the pair's score (0.5 = the map ignores the mask; NaN for an empty
or full mask). The reference is the same score on the held-out real anomalies.

Cache: ``<cache_dir>/<category>-<name>-<key>.safetensors`` where the key hashes the detector config
(device and batch size excluded), the fit seed (it draws the coreset) and the bytes of every training
image, so a changed image, config or seed refits and every set of the category reuses one fit. The fit
holds an ``fcntl`` lock on ``.<file>.lock`` next to it: concurrent jobs (Dask workers) fit once, the
others wait and load that fit.

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.mask_adherence import adherence
    >>> m = np.zeros((4, 4), bool); m[:2, :2] = True
    >>> adherence(m.astype(float), m)
    {'mask_adherence': 1.0, 'mask_adherence_ap': 1.0}
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anobench.benchmarks.metrics.defaults import KEY_MASK_ADHERENCE, KEY_MASK_ADHERENCE_AP
from anobench.downstream.metrics import auroc, average_precision
from anobench.downstream.training import load_images, load_masks
from anobench.downstream.unsupervised import (
    DetectorConfig,
    detector_maps,
    fit_detector,
    fitted_state,
    restore_detector,
)


def adherence(anomaly_map: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Pixel AUROC and AP of one map against one bool mask (NaN when the mask is empty or full)."""
    labels = mask.ravel().astype(bool)
    if labels.all() or not labels.any():
        return {KEY_MASK_ADHERENCE: math.nan, KEY_MASK_ADHERENCE_AP: math.nan}
    scores = anomaly_map.ravel().astype(np.float64)
    return {
        KEY_MASK_ADHERENCE: auroc(scores, labels),
        KEY_MASK_ADHERENCE_AP: average_precision(scores, labels),
    }


def detector_key(config: DetectorConfig, train_good: Sequence[Path], seed: int = 0) -> str:
    """Hash of the detector config (no device/batch size), the fit seed and the training images' bytes."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("device", "batch_size")}
    settings["backbone_weights"] = config.weights_label
    digest.update(json.dumps({**settings, "seed": seed}, sort_keys=True).encode())
    for path in sorted(Path(p) for p in train_good):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


class CategoryDetector:
    """A detector fitted on one category's ``train/good`` (loaded from the cache when already fitted).

    ``key``: :func:`detector_key` of these arguments when the caller has it already.
    """

    def __init__(
        self,
        config: DetectorConfig,
        category: str,
        train_good: Sequence[Path],
        cache_dir: str | Path | None,
        *,
        seed: int = 0,
        progress: bool = False,
        key: str | None = None,
    ) -> None:
        from safetensors.torch import load_file, save_file

        self.config = config
        self.key = key or detector_key(config, train_good, seed)
        name = f"{category}-{config.name}-{self.key}.safetensors"
        self.cache_path = Path(cache_dir) / name if cache_dir else None
        if self.cache_path is None:
            self.from_cache = False
            self.model = fit_detector(config, train_good, seed=seed, progress=progress)
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        # one fit per key: a concurrent process (another worker's job) waits, then loads its fit
        with open(self.cache_path.with_name(f".{name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.from_cache = self.cache_path.exists()
            if self.from_cache:
                self.model = restore_detector(config, load_file(str(self.cache_path)))
            else:
                self.model = fit_detector(config, train_good, seed=seed, progress=progress)
                tmp = self.cache_path.with_name(f".{name}.{os.getpid()}.tmp")
                save_file(fitted_state(self.model), str(tmp))
                os.replace(tmp, self.cache_path)

    def maps(self, images: Sequence[Path]) -> np.ndarray:
        """Anomaly maps (N, S, S) at the detector's image size S."""
        size = self.config.image_size
        return detector_maps(self.model, self.config, load_images(list(images), size), size)[0]

    def score_pairs(self, images: Sequence[Path], masks: Sequence[Path]) -> list[dict[str, float]]:
        """Mask adherence of each (image, mask) pair, masks resized to the map size."""
        if not images:
            return []
        maps = self.maps(images)
        binary = load_masks(list(masks), self.config.image_size).numpy()
        return [adherence(m, b) for m, b in zip(maps, binary, strict=True)]


__all__ = ["CategoryDetector", "adherence", "detector_key"]

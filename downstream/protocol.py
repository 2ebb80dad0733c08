"""The segmentation protocol end to end: train on generated pairs + normals, select, score, save curves.

This is the API the benchmark runner calls (one call per category, generator and seed).

Selection policies (``SegmenterConfig.selection``):

* ``last-epoch`` (default): the model after the last epoch is scored once on the test split.
* ``best-on-test``: reproduces the reference scripts; after every epoch the model is scored on the
  **test** split and the one with the largest image AUROC + pixel AUROC + pixel AP + AU-PRO is kept.
  This selects on the data it reports, so its numbers are optimistic; the result says so
  (``selection: best-on-test`` and ``selected_epoch``).
* ``generated-val``: a fraction ``val_fraction`` of the generated pairs of every defect type and of
  the normal images is held out (seeded) and not trained on; after every epoch the model is scored
  on that *generated* validation split with the same criterion and the best one is kept. It never
  sees the test split, so its numbers are honest, and it rewards generators whose pairs predict
  their own held-out pairs (a different question from the test split's).

Example:
    >>> from anobench.downstream.protocol import run_segmentation  # doctest: +SKIP
    >>> config = SegmenterConfig(image_size=64, base_width=8, epochs=2)  # doctest: +SKIP
    >>> result = run_segmentation(normals, {"scratch": pairs}, test_good, {"scratch": test_pairs},
    ...                           config, seed=0)  # doctest: +SKIP
    >>> result["metrics"]["pixel_aupro"], result["selection"], result["selected_epoch"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.evaluation import HeldOutSplit, predict_split
from anobench.downstream.metrics import AUPRO_FPR_LIMIT, SortedPixels, selection_score
from anobench.downstream.segmenters import DEFAULT_SEGMENTER, Segmenter, create_segmenter
from anobench.downstream.training import SegmenterConfig, train_segmenter

SCORES_FILE = "scores.npz"
PIXEL_SAMPLE = 200_000  # pixels kept (uniformly at random) for drawing pixel ROC/PR curves later
CURVE_POINTS = 1000  # points kept of the PRO curve (FPR up to the integration limit)


class BestOnTest:
    """Keeps a CPU copy of the model state with the highest ``criterion`` seen so far (ties: earliest).

    Used for both ``best-on-test`` and ``generated-val`` (on a generated validation split).
    """

    def __init__(self) -> None:
        self.best: float = -np.inf
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, model: nn.Module, criterion: float) -> bool:
        """Record ``model`` if ``criterion`` beats the best so far; returns whether it did."""
        if not criterion > self.best:
            return False
        self.best, self.epoch = criterion, epoch
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def restore(self, model: nn.Module) -> None:
        """Load the best state into ``model``."""
        if self.state is not None:
            model.load_state_dict(self.state)


def run_segmentation(
    normal_images: Sequence[Path],
    generated_pairs_by_defect: dict[str, list[tuple[Path, Path]]],
    test_good: Sequence[Path],
    test_anomalies_by_defect: dict[str, list[tuple[Path, Path]]],
    config: SegmenterConfig,
    seed: int = 0,
    *,
    pixel_f1: str = "exact",
    out_dir: Path | None = None,
    progress: bool = True,
    segmenter: Segmenter | None = None,
    real_anomalies: dict[str, list[tuple[Path, Path]]] | None = None,
) -> dict[str, Any]:
    """Train one segmenter and score it on the real test split.

    Args:
        normal_images: defect-free training images (``train/good``).
        generated_pairs_by_defect: per defect type, (image, mask) paths of training pairs. Empty:
            the model sees only normal images (every mask empty), which is the honest meaning of
            "trained with no anomaly data" for this supervised protocol: expect chance-level scores.
        test_good: good test images.
        test_anomalies_by_defect: per defect type, held-out real (image, mask) pairs.
        config: protocol settings (including ``selection``).
        seed: seeds the initialisation and the sampling.
        pixel_f1: ``exact`` or ``grid-0.05``.
        out_dir: when given, ``scores.npz`` (image scores/labels, a pixel sample, the PRO curve) is
            written there for plots; see :func:`save_scores`.
        progress: show a progress bar.
        segmenter: the network (a registered segmenter); None: ``draem-unet``.
        real_anomalies: the real few-shot pairs per defect type (used when ``config.real_fraction > 0``).

    Returns:
        ``metrics`` (named keys), ``per_defect`` metrics, ``segmenter`` (name, options and pretrained
        weights), ``selection``, ``selected_epoch``,
        ``epochs``, ``history`` (per epoch: training loss, and the criterion under ``best-on-test``
        or ``generated-val``), ``recipe`` (the sample shares, augmentation, selection),
        ``train_counts`` and ``scores_file`` (or None).
    """
    segmenter = segmenter or create_segmenter(DEFAULT_SEGMENTER)
    split = HeldOutSplit.load(test_good, test_anomalies_by_defect, config.image_size)
    normal_images, generated_pairs_by_defect = list(normal_images), dict(generated_pairs_by_defect)
    validation = {"best-on-test": split, "last-epoch": None}.get(config.selection)
    if config.selection == "generated-val":
        normal_images, generated_pairs_by_defect, validation = generated_validation(
            normal_images, generated_pairs_by_defect, config, seed
        )
    history: list[dict[str, float]] = []
    tracker = BestOnTest()

    def on_epoch_end(epoch: int, model: nn.Module, loss: float) -> None:
        entry = {"epoch": epoch, "loss": loss}
        if validation is not None:
            maps, scores = predict_split(model, validation, config)
            entry["criterion"] = selection_score(validation.score(maps, scores, pixel_f1))
            tracker.offer(epoch, model, entry["criterion"])
        history.append(entry)

    model = train_segmenter(
        normal_images,
        generated_pairs_by_defect,
        config,
        seed,
        on_epoch_end=on_epoch_end,
        progress=progress,
        segmenter=segmenter,
        real_anomalies=real_anomalies,
    )
    selected_epoch = config.epochs
    if validation is not None:
        tracker.restore(model)
        selected_epoch = tracker.epoch
    maps, scores = predict_split(model, split, config)
    pixels = split.sort_pixels(maps)  # one sort of the test pixels serves every metric below
    result: dict[str, Any] = {
        "metrics": split.score(maps, scores, pixel_f1, pixels=pixels),
        "per_defect": split.score_per_defect(maps, scores, pixels),
        "segmenter": {
            "name": segmenter.name,
            "options": dataclasses.asdict(segmenter.config),
            "weights": segmenter.weights(),
        },
        "selection": config.selection,
        "selected_epoch": selected_epoch,
        "epochs": config.epochs,
        "pixel_f1_mode": pixel_f1,
        "history": history,
        "recipe": {
            "normal_fraction": config.normal_fraction,
            "real_fraction": config.real_fraction,
            "generated_fraction": config.generated_fraction,
            "augment": config.augment,
            "selection": config.selection,
        },
        "train_counts": {
            "normal": len(normal_images),
            **{d: len(p) for d, p in sorted(generated_pairs_by_defect.items())},
        },
        "scores_file": None,
    }
    if out_dir is not None:
        path = save_scores(Path(out_dir) / SCORES_FILE, split, maps, scores, seed, pixels)
        result["scores_file"] = str(path)
    return result


def generated_validation(
    normal_images: list[Path],
    generated: dict[str, list[tuple[Path, Path]]],
    config: SegmenterConfig,
    seed: int,
) -> tuple[list[Path], dict[str, list[tuple[Path, Path]]], HeldOutSplit]:
    """Hold out ``config.val_fraction`` (at least one) of the normals and of each type's generated pairs.

    Returns the training normals, the training pairs and the validation split (seeded shuffle).
    """
    rng = np.random.default_rng([seed, 1])

    def cut(items: list) -> tuple[list, list]:
        if len(items) < 2:
            raise DownstreamInputError(
                f"selection=generated-val: needs at least 2 normal images and 2 generated pairs per "
                f"defect type to hold some out (got {len(items)})"
            )
        order = rng.permutation(len(items))
        n_val = min(len(items) - 1, max(1, round(config.val_fraction * len(items))))
        return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]

    train_normals, val_normals = cut(normal_images)
    train_pairs, val_pairs = {}, {}
    for defect, pairs in sorted(generated.items()):
        train_pairs[defect], val_pairs[defect] = cut(list(pairs))
    validation = HeldOutSplit.load(val_normals, val_pairs, config.image_size)
    return train_normals, train_pairs, validation


def save_scores(
    path: Path,
    split: HeldOutSplit,
    maps: np.ndarray,
    scores: np.ndarray,
    seed: int = 0,
    pixels: SortedPixels | None = None,
) -> Path:
    """Write what ROC/PR/PRO plots need, atomically, as a compressed ``.npz``.

    ``pixels``: ``split.sort_pixels(maps)`` when already computed.

    Arrays: ``image_scores``, ``image_labels``, ``image_defects``, ``image_names``; ``pixel_scores``
    and ``pixel_labels`` (a uniform random sample of ``PIXEL_SAMPLE`` test pixels, seeded);
    ``pro_fpr``/``pro_pro`` (the exact PRO curve up to the integration limit, thinned to
    ``CURVE_POINTS``).
    """
    rng = np.random.default_rng(seed)
    n_pixels = maps.size
    pick = rng.choice(n_pixels, size=min(PIXEL_SAMPLE, n_pixels), replace=False)
    fpr, pro = (split.sort_pixels(maps) if pixels is None else pixels).pro_curve(AUPRO_FPR_LIMIT)
    inside = np.flatnonzero(fpr <= AUPRO_FPR_LIMIT)
    inside = inside[np.unique(np.linspace(0, len(inside) - 1, CURVE_POINTS).astype(int))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        image_scores=scores.astype(np.float64),
        image_labels=split.labels,
        image_defects=np.array(split.defects),
        image_names=np.array(split.names),
        pixel_scores=maps.ravel()[pick].astype(np.float32),
        pixel_labels=split.masks.ravel()[pick],
        pro_fpr=fpr[inside],
        pro_pro=pro[inside],
    )
    os.replace(tmp, path)
    return path

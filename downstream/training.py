"""Train the segmenter on generated pairs plus normal images, and predict anomaly maps.

The reference protocol (AnomalyDiffusion's ``train-localization.py``, reused by DualAnoDiff): one
model per category; each epoch draws ``samples_per_epoch`` samples, a fraction ``normal_fraction``
of them normal training images with empty masks, the rest generated pairs (defect type uniform,
then pair uniform); RGB in [0, 1], resized, no augmentation; focal loss; Adam; MultiStepLR at
80 % / 90 % of the epochs with gamma 0.2.

Example:
    >>> from anobench.downstream.training import SegmenterConfig
    >>> SegmenterConfig().image_size, SegmenterConfig().epochs
    (256, 200)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss, image_scores
from anobench.generation.base import load_rgb, read_mask, resize_mask

SELECTION_POLICIES = ("last-epoch", "best-on-test")


@dataclass
class SegmenterConfig:
    """Every knob of the segmentation protocol; the defaults are the paper protocol."""

    image_size: int = 256
    base_width: int = 64
    epochs: int = 200
    samples_per_epoch: int = 500
    normal_fraction: float = 0.5
    batch_size: int = 16
    lr: float = 1e-4
    lr_milestones: tuple[float, float] = (0.8, 0.9)
    lr_gamma: float = 0.2
    focal_gamma: float = 2.0
    pool_kernel: int = 21
    selection: str = "last-epoch"
    eval_batch_size: int = 16
    device: str = "auto"

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(self.lr_milestones)
        positive = (
            "image_size",
            "base_width",
            "epochs",
            "samples_per_epoch",
            "batch_size",
            "eval_batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise DownstreamInputError(f"segmenter.{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr", "lr_gamma"):
            if getattr(self, name) <= 0:
                raise DownstreamInputError(f"segmenter.{name}={getattr(self, name)}: must be > 0")
        if self.focal_gamma < 0:
            raise DownstreamInputError(f"segmenter.focal_gamma={self.focal_gamma}: must be >= 0")
        if self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise DownstreamInputError(
                f"segmenter.pool_kernel={self.pool_kernel}: must be an odd positive integer"
            )
        if self.image_size % 32:
            raise DownstreamInputError(f"segmenter.image_size={self.image_size}: must be a multiple of 32")
        if self.selection not in SELECTION_POLICIES:
            raise DownstreamInputError(
                f"segmenter.selection={self.selection!r}: choose one of {', '.join(SELECTION_POLICIES)}"
            )
        if not 0.0 <= self.normal_fraction <= 1.0:
            raise DownstreamInputError(f"segmenter.normal_fraction={self.normal_fraction}: must be in [0, 1]")


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Images as a uint8 tensor (N, 3, size, size), bilinear-resized."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        out[i] = torch.from_numpy(load_rgb(path, size)).permute(2, 0, 1)
    return out


def load_masks(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Masks (> 0 anomalous) as a bool tensor (N, size, size): bilinear-resized, then > 0.5 (reference)."""
    out = torch.empty((len(paths), size, size), dtype=torch.bool)
    for i, path in enumerate(paths):
        out[i] = torch.from_numpy(resize_mask(read_mask(path), size, soft=True))
    return out


class TrainingPool:
    """Normal images and generated pairs held in memory, sampled as the reference protocol does."""

    def __init__(
        self,
        normal_images: Sequence[Path],
        generated: dict[str, list[tuple[Path, Path]]],
        size: int,
    ) -> None:
        if not normal_images:
            raise DownstreamInputError("segmenter training needs normal images (train/good); none were given")
        self.normals = load_images(normal_images, size)
        self.defects = sorted(d for d, pairs in generated.items() if pairs)
        self.images = {d: load_images([p[0] for p in generated[d]], size) for d in self.defects}
        self.masks = {d: load_masks([p[1] for p in generated[d]], size) for d in self.defects}

    def draw(
        self, n: int, normal_fraction: float, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples (images float in [0, 1], masks float 0/1); no generated pairs -> all normal."""
        images, masks = [], []
        size = self.normals.shape[-1]
        for _ in range(n):
            if not self.defects or rng.random() < normal_fraction:
                images.append(self.normals[rng.integers(len(self.normals))])
                masks.append(torch.zeros((size, size), dtype=torch.bool))
            else:
                defect = self.defects[rng.integers(len(self.defects))]
                j = rng.integers(len(self.images[defect]))
                images.append(self.images[defect][j])
                masks.append(self.masks[defect][j])
        return torch.stack(images).float() / 255.0, torch.stack(masks).float()


EpochCallback = Callable[[int, DiscriminativeUNet, float], None]


def train_segmenter(
    normal_images: Sequence[Path],
    generated: dict[str, list[tuple[Path, Path]]],
    config: SegmenterConfig,
    seed: int = 0,
    *,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> DiscriminativeUNet:
    """Train one segmenter (one per category) and return it in eval mode.

    Args:
        normal_images: defect-free training images.
        generated: per defect type, (image, mask) paths of generated pairs (may be empty: the
            model then sees only normal images).
        config: protocol settings.
        seed: seeds the initialisation and the sampling.
        on_epoch_end: called with (epoch, model, mean training loss) after every epoch (epochs
            count from 1; used for ``best-on-test`` and the loss history).
        progress: show a progress bar over the epochs.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = resolve_device(config.device)
    pool = TrainingPool(normal_images, generated, config.image_size)
    model = DiscriminativeUNet(base_width=config.base_width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    milestones = [int(config.epochs * m) for m in config.lr_milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=config.lr_gamma)
    steps = math.ceil(config.samples_per_epoch / config.batch_size)
    bar = tqdm(range(config.epochs), desc="segmenter", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        epoch_loss = 0.0
        for step in range(steps):
            n = min(config.batch_size, config.samples_per_epoch - step * config.batch_size)
            images, masks = pool.draw(n, config.normal_fraction, rng)
            logits = model(images.to(device))
            loss = focal_loss(logits, masks.to(device), gamma=config.focal_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        scheduler.step()
        bar.set_postfix(loss=f"{epoch_loss / steps:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model, epoch_loss / steps)
    return model.eval()


@torch.no_grad()
def predict_tensor(
    model: DiscriminativeUNet, images: torch.Tensor, batch_size: int = 16, pool_kernel: int = 21
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly-probability maps (N, H, W) and image scores (N,) for uint8 images (N, 3, H, W).

    Leaves the model in eval mode.
    """
    model.eval()
    device = next(model.parameters()).device
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float().div(255.0).to(device)
        prob = model(batch).softmax(dim=1)[:, 1]
        maps.append(prob.cpu())
        scores.append(image_scores(prob, pool_kernel).cpu())
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


def predict_maps(
    model: DiscriminativeUNet,
    image_paths: Sequence[Path],
    size: int,
    batch_size: int = 16,
    pool_kernel: int = 21,
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly-probability maps (N, size, size) and image scores (N,) for ``image_paths``."""
    return predict_tensor(model, load_images(image_paths, size), batch_size, pool_kernel)

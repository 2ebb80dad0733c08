"""Train the segmenter on generated pairs plus normal images, and predict anomaly maps.

The reference protocol (AnomalyDiffusion's ``train-localization.py``, reused by DualAnoDiff): one
model per category; each epoch draws ``samples_per_epoch`` samples, a fraction ``normal_fraction``
of them normal training images with empty masks, the rest generated pairs (defect type uniform,
then pair uniform); RGB in [0, 1], resized, no augmentation; focal loss; Adam; MultiStepLR at
80 % / 90 % of the epochs with gamma 0.2.

Recipes (each a config field, recorded with the result): ``real_fraction`` of the samples are the
real few-shot anomalies (defect type uniform, then pair uniform), ``augment`` applies O2MAG's
augmentation to every anomalous sample (see :func:`o2mag_augment`), and :data:`PROTOCOLS` names
whole recipes (``anomalydiffusion``: the default above; ``o2mag``: 50 % normal, 10 % real few-shot,
40 % generated, augmented).

Example:
    >>> from anobench.downstream.training import SegmenterConfig
    >>> SegmenterConfig().image_size, SegmenterConfig().epochs
    (256, 200)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.offload import offloaded_activations
from anobench.downstream.segmenter import image_scores
from anobench.downstream.segmenters import DEFAULT_SEGMENTER, Segmenter, create_segmenter
from anobench.generation.base import load_rgb, read_mask, resize_mask

SELECTION_POLICIES = ("last-epoch", "best-on-test", "generated-val")
#: Named recipes: the SegmenterConfig fields each sets (``downstream.protocol``).
PROTOCOLS: dict[str, dict[str, object]] = {
    "anomalydiffusion": {"normal_fraction": 0.5, "real_fraction": 0.0, "augment": False},
    "o2mag": {"normal_fraction": 0.5, "real_fraction": 0.1, "augment": True},
}
AUGMENT_PROBABILITY = 0.5  # O2MAG augments each anomalous sample with probability 0.5


@dataclass
class SegmenterConfig:
    """Every knob of the segmentation protocol; the defaults are the paper protocol."""

    image_size: int = 256
    base_width: int = 64
    epochs: int = 200
    samples_per_epoch: int = 500
    normal_fraction: float = 0.5
    real_fraction: float = 0.0  # of the samples: real few-shot anomalies (the rest: generated pairs)
    augment: bool = False  # O2MAG's crop, rotation and shift of the anomalous samples
    val_fraction: float = 0.2  # generated-val: generated pairs and normals held out per defect type
    batch_size: int = 16
    lr: float = 1e-4
    lr_milestones: tuple[float, float] = (0.8, 0.9)
    lr_gamma: float = 0.2
    focal_gamma: float = 2.0
    pool_kernel: int = 21
    selection: str = "last-epoch"
    eval_batch_size: int = 16
    device: str = "auto"
    # memory and speed knobs (see the README's performance notes)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: same results
    grad_accum: int = 1  # micro-batches per optimisation step (BatchNorm then sees micro-batches)
    channels_last: bool = False  # NHWC tensors: faster convolutions on CPU, float rounding differs
    # draem-unet with gradient_checkpointing: each conv-BN-ReLU unit on chunks of this many images,
    # BatchNorm still over the whole batch (float rounding differs); None: the whole batch at once
    unit_chunk: int | None = None
    offload_activations: bool = False  # what autograd saves for the backward pass goes to disk: same results

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(self.lr_milestones)
        positive = (
            "image_size",
            "base_width",
            "epochs",
            "samples_per_epoch",
            "batch_size",
            "eval_batch_size",
            "grad_accum",
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
        if not 0.0 <= self.real_fraction <= 1.0 - self.normal_fraction + 1e-12:
            raise DownstreamInputError(
                f"segmenter.real_fraction={self.real_fraction}: must be in [0, 1 - normal_fraction]"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise DownstreamInputError(f"segmenter.val_fraction={self.val_fraction}: must be in (0, 1)")
        if self.unit_chunk is not None and (self.unit_chunk < 1 or not self.gradient_checkpointing):
            raise DownstreamInputError(
                f"segmenter.unit_chunk={self.unit_chunk}: needs segmenter.gradient_checkpointing=true "
                "and a chunk of at least 1 image"
            )
        if self.grad_accum > self.batch_size:
            raise DownstreamInputError(
                f"segmenter.grad_accum={self.grad_accum}: must be at most "
                f"segmenter.batch_size={self.batch_size}"
            )

    def hash_fields(self) -> dict[str, object]:
        """The fields that decide the results, for job keys.

        ``gradient_checkpointing`` and ``offload_activations`` (same results) are left out, the other
        knobs when at their defaults, so job keys made before these knobs existed stay valid.
        """
        fields = dataclasses.asdict(self)
        del fields["gradient_checkpointing"], fields["offload_activations"]
        for name, default in (("grad_accum", 1), ("channels_last", False), ("unit_chunk", None)):
            if fields[name] == default:
                del fields[name]
        return fields

    @property
    def generated_fraction(self) -> float:
        """The share of generated pairs among the training samples."""
        return max(0.0, 1.0 - self.normal_fraction - self.real_fraction)


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


class PairSet:
    """(image, mask) pairs per defect type, decoded once into uint8 / bool tensors."""

    def __init__(self, pairs: dict[str, list[tuple[Path, Path]]], size: int) -> None:
        self.defects = sorted(d for d, p in pairs.items() if p)
        self.images = {d: load_images([p[0] for p in pairs[d]], size) for d in self.defects}
        self.masks = {d: load_masks([p[1] for p in pairs[d]], size) for d in self.defects}

    def draw(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair: defect type uniform, then pair uniform."""
        defect = self.defects[rng.integers(len(self.defects))]
        j = rng.integers(len(self.images[defect]))
        return self.images[defect][j], self.masks[defect][j]


class TrainingPool:
    """Normal images, generated pairs and real few-shot pairs in memory, sampled as the recipe says."""

    def __init__(
        self,
        normal_images: Sequence[Path],
        generated: dict[str, list[tuple[Path, Path]]],
        size: int,
        real: dict[str, list[tuple[Path, Path]]] | None = None,
    ) -> None:
        if not normal_images:
            raise DownstreamInputError("segmenter training needs normal images (train/good); none were given")
        self.normals = load_images(normal_images, size)
        self.generated = PairSet(generated, size)
        self.real = PairSet(real or {}, size)
        self.defects = self.generated.defects

    def draw(
        self,
        n: int,
        normal_fraction: float,
        rng: np.random.Generator,
        real_fraction: float = 0.0,
        augment: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples (images float in [0, 1], masks float 0/1).

        Each is normal with probability ``normal_fraction``, a real few-shot pair with probability
        ``real_fraction``, else a generated pair; a missing source falls back to normal images.
        """
        images, masks = [], []
        size = self.normals.shape[-1]
        for _ in range(n):
            u = 1.0 if not self.defects and not self.real.defects else rng.random()
            source = None
            if u >= normal_fraction:
                real = u < normal_fraction + real_fraction
                source = self.real if real else self.generated
                source = source if source.defects else None
            if source is None:
                images.append(self.normals[rng.integers(len(self.normals))])
                masks.append(torch.zeros((size, size), dtype=torch.bool))
                continue
            image, mask = source.draw(rng)
            if augment and rng.random() < AUGMENT_PROBABILITY:
                image, mask = o2mag_augment(image, mask, rng)
            images.append(image)
            masks.append(mask)
        return torch.stack(images).float() / 255.0, torch.stack(masks).float()


def o2mag_augment(
    image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """O2MAG's anomaly augmentation on a uint8 (3, S, S) image and bool (S, S) mask.

    As O2MAG's ``RandomAugmentation``: crop a margin of up to S/16 (the same on opposite sides),
    rotate by U(-30, 30) degrees with the canvas expanded (nearest neighbour, black fill), and paste
    the result's top-left corner at a shift of up to 16 px (scaled from O2MAG's 1024 px MVTec images:
    S/64 here) onto a black S x S canvas. O2MAG augments before resizing; this runs on the resized
    pairs (decoded once), so the crop and rotation are the same, the shift is in proportion.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    size = image.shape[-1]
    cx, cy = (int(rng.integers(0, size // 16 + 1)) for _ in range(2))
    angle = float(rng.uniform(-30.0, 30.0))
    shift = max(1, size // 64)
    dx, dy = (int(rng.integers(-shift, shift + 1)) for _ in range(2))
    stack = torch.cat([image, mask[None].to(torch.uint8) * 255])[:, cy : size - cy, cx : size - cx]
    stack = TF.rotate(stack, angle, interpolation=InterpolationMode.NEAREST, expand=True)
    canvas = torch.zeros((4, size, size), dtype=torch.uint8)
    src = stack[:, max(0, -dy) : size - dy, max(0, -dx) : size - dx]
    h, w = min(src.shape[1], size - max(0, dy)), min(src.shape[2], size - max(0, dx))
    canvas[:, max(0, dy) : max(0, dy) + h, max(0, dx) : max(0, dx) + w] = src[:, :h, :w]
    return canvas[:3], canvas[3] > 127


EpochCallback = Callable[[int, nn.Module, float], None]


def train_segmenter(
    normal_images: Sequence[Path],
    generated: dict[str, list[tuple[Path, Path]]],
    config: SegmenterConfig,
    seed: int = 0,
    *,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    segmenter: Segmenter | None = None,
    real_anomalies: dict[str, list[tuple[Path, Path]]] | None = None,
) -> nn.Module:
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
        segmenter: the network (registered segmenter); None: ``draem-unet``.
        real_anomalies: per defect type, the real few-shot (image, mask) pairs drawn with
            ``config.real_fraction`` (needed when it is above 0).
    """
    if config.real_fraction > 0 and not any((real_anomalies or {}).values()):
        raise DownstreamInputError(
            f"segmenter.real_fraction={config.real_fraction} needs real few-shot anomalies; none were given"
        )
    segmenter = segmenter or create_segmenter(DEFAULT_SEGMENTER)
    _check_batches(config, segmenter)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = resolve_device(config.device)
    pool = TrainingPool(normal_images, generated, config.image_size, real_anomalies)
    model = segmenter.build(config).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
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
            images, masks = pool.draw(n, config.normal_fraction, rng, config.real_fraction, config.augment)
            epoch_loss += train_step(model, segmenter, optimizer, images, masks, config)
        scheduler.step()
        bar.set_postfix(loss=f"{epoch_loss / steps:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model, epoch_loss / steps)
    return model.eval()


def train_step(
    model: nn.Module,
    segmenter: Segmenter,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    config: SegmenterConfig,
) -> float:
    """One optimisation step on a batch (CPU tensors); returns the batch's mean loss.

    The forward and backward passes run in ``config.grad_accum`` micro-batches (``tensor_split``),
    each loss weighted by its share of the batch: the loss is a mean over the samples, so the
    accumulated gradient is the whole batch's, up to float rounding, for a network without batch
    statistics (BatchNorm normalises each micro-batch by its own statistics).
    """
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    parts = min(config.grad_accum, len(images))
    total = 0.0
    for part_images, part_masks in zip(images.tensor_split(parts), masks.tensor_split(parts), strict=True):
        part_images = part_images.to(device)
        if config.channels_last:
            part_images = part_images.contiguous(memory_format=torch.channels_last)
        with offloaded_activations() if config.offload_activations else nullcontext():
            loss = segmenter.loss(model, part_images, part_masks.to(device), config.focal_gamma)
            share = len(part_images) / len(images)
            (loss if parts == 1 else loss * share).backward()
        total += loss.item() * share
    optimizer.step()
    return total


def _check_batches(config: SegmenterConfig, segmenter: Segmenter) -> None:
    """Every training micro-batch (of the last batch of an epoch too) must fit the network."""
    if config.gradient_checkpointing and not segmenter.gradient_checkpointing:
        raise DownstreamInputError(
            f"segmenter.gradient_checkpointing=true: segmenter {segmenter.name!r} does not support it "
            "(draem-unet does); set it to false"
        )
    last = min(config.batch_size, config.samples_per_epoch % config.batch_size or config.batch_size)
    smallest = last // min(config.grad_accum, last)  # train_step's smallest micro-batch
    if smallest < segmenter.min_batch:
        raise DownstreamInputError(
            f"segmenter {segmenter.name!r} trains on batches of at least {segmenter.min_batch}; "
            f"segmenter.batch_size={config.batch_size} with samples_per_epoch={config.samples_per_epoch} "
            f"and grad_accum={config.grad_accum} gives a batch of {smallest}"
        )


@torch.no_grad()
def predict_tensor(
    model: nn.Module, images: torch.Tensor, batch_size: int = 16, pool_kernel: int = 21
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

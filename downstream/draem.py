"""``draem-e2e``: DRAEM end to end (reconstructive + discriminative sub-networks) on generated pairs.

DRAEM trains a reconstructive auto-encoder to undo its Perlin-noise anomalies and a discriminative
U-Net on the image concatenated with its reconstruction. Here the anomalies are the generated pairs
(and the recipe's real few-shot pairs) in place of the Perlin source; the sub-networks are
anomalib's (``anomalib.models.image.draem.torch_model``), the loss DRAEM's: L2 + 2 x SSIM on the
reconstruction plus the focal loss on the mask. A generated pair has no anomaly-free original, so
the reconstruction target inside the mask is the (detached) reconstruction itself: the
reconstruction losses count only the normal pixels, and the auto-encoder learns normal appearance
from them and from the normal images.

Example:
    >>> from anobench.downstream.segmenters import create_segmenter
    >>> create_segmenter("draem-e2e").config.reconstructive_width
    128
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from anobench.downstream.segmenter import focal_loss
from anobench.downstream.segmenters import Segmenter, register_segmenter

if TYPE_CHECKING:
    from anobench.downstream.training import SegmenterConfig


class DraemNetwork(nn.Module):
    """Reconstruct, then segment the image concatenated with its reconstruction (logits, 2 channels)."""

    def __init__(self, reconstructive_width: int, discriminative_width: int) -> None:
        super().__init__()
        from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork

        self.reconstructive = ReconstructiveSubNetwork(base_width=reconstructive_width)
        self.discriminative = DiscriminativeSubNetwork(
            in_channels=6, out_channels=2, base_width=discriminative_width
        )

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, mask logits)."""
        reconstruction = self.reconstructive(x)
        return reconstruction, self.discriminative(torch.cat([x, reconstruction], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, 2, H, W)."""
        return self.forward_both(x)[1]


def reconstruction_target(
    images: torch.Tensor, reconstruction: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """The image outside the mask, the detached reconstruction inside it (no loss on anomalous pixels)."""
    anomalous = masks.reshape(len(masks), 1, *masks.shape[-2:]).bool()
    return torch.where(anomalous, reconstruction.detach(), images)


@dataclass
class DraemE2EConfig:
    """Widths of the two sub-networks (DRAEM: 128 and 64; the protocol's ``base_width`` is not used)."""

    reconstructive_width: int = 128
    discriminative_width: int = 64
    ssim_weight: float = 2.0


@register_segmenter("draem-e2e")
class DraemE2E(Segmenter):
    """DRAEM end to end: anomalib's reconstructive + discriminative sub-networks on generated pairs."""

    Config = DraemE2EConfig

    def build(self, protocol: SegmenterConfig) -> nn.Module:
        """A fresh two-network DRAEM."""
        return DraemNetwork(self.config.reconstructive_width, self.config.discriminative_width)

    def loss(self, model: nn.Module, images: torch.Tensor, masks: torch.Tensor, gamma: float) -> torch.Tensor:
        """L2 + SSIM on the normal pixels' reconstruction, plus the focal loss on the mask."""
        from anomalib.models.image.draem.loss import SSIMLoss

        reconstruction, logits = model.forward_both(images)
        target = reconstruction_target(images, reconstruction, masks)
        ssim = SSIMLoss(window_size=11)(reconstruction, target)
        l2 = nn.functional.mse_loss(reconstruction, target)
        return l2 + self.config.ssim_weight * ssim + focal_loss(logits, masks, gamma=gamma)

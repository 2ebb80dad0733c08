"""The DRAEM discriminative U-Net (3 -> 2 channels) and the focal loss of the reference protocol.

Architecture as in DRAEM's ``DiscriminativeSubNetwork`` (used unchanged by AnomalyDiffusion's and
DualAnoDiff's evaluation code): six encoder blocks (widths b, 2b, 4b, 8b, 8b, 8b; two 3x3
conv-BN-ReLU each, max-pooling between), a mirrored decoder with bilinear upsampling and skip
connections, and a 3x3 output conv. ``base_width`` b is 64 in the paper protocol.

``gradient_checkpointing`` keeps only each conv-BN-ReLU unit's input during the forward pass and
recomputes the unit in the backward pass (``torch.utils.checkpoint``, non-reentrant): the outputs and
gradients are the same, the BatchNorm running statistics are updated once (the recomputation
restores them), at the cost of a second forward pass.

Example:
    >>> import torch
    >>> from anobench.downstream.segmenter import DiscriminativeUNet
    >>> net = DiscriminativeUNet(base_width=8)
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2, 64, 64])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _up_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DiscriminativeUNet(nn.Module):
    """DRAEM's discriminative sub-network; input sides must be multiples of 32."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        base_width: int = 64,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        b = base_width
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b]
        self.encoder = nn.ModuleList()
        c_prev = in_channels
        for w in widths:
            self.encoder.append(_double_conv(c_prev, w))
            c_prev = w
        # decoder stages from the bottom: (up from, up to, skip width, block out)
        stages = [(8 * b, 8 * b, 8 * b, 8 * b), (8 * b, 4 * b, 8 * b, 4 * b), (4 * b, 2 * b, 4 * b, 2 * b),
                  (2 * b, b, 2 * b, b), (b, b, b, b)]  # fmt: skip
        self.ups = nn.ModuleList(_up_conv(c_in, c_up) for c_in, c_up, _, _ in stages)
        self.blocks = nn.ModuleList(_double_conv(c_up + skip, out) for _, c_up, skip, out in stages)
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, 2, H, W): channel 1 is "anomalous"."""
        run = _checkpointed if self.gradient_checkpointing and torch.is_grad_enabled() else _plain
        skips = []
        for i, block in enumerate(self.encoder):
            x = run(block, x, pool=i > 0)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.blocks, strict=True):
            x = run(block, run(up, x), skips.pop())
        return self.head(x)


def _plain(
    block: nn.Module, x: torch.Tensor, skip: torch.Tensor | None = None, pool: bool = False
) -> torch.Tensor:
    """``block`` on ``x`` (max-pooled first with ``pool``; concatenated with ``skip`` when given)."""
    x = F.max_pool2d(x, 2) if pool else x
    return block(x if skip is None else torch.cat([x, skip], dim=1))


def _checkpointed(
    block: nn.Sequential, x: torch.Tensor, skip: torch.Tensor | None = None, pool: bool = False
) -> torch.Tensor:
    """:func:`_plain` with one checkpoint per conv-BN-ReLU unit (an upsampling rides with the first)."""
    first = len(block) % 3 + 3
    units = [block[:first], *(block[i : i + 3] for i in range(first, len(block), 3))]
    for k, unit in enumerate(units):
        extra = (skip, pool) if k == 0 else (None, False)
        x = checkpoint(_plain, unit, x, *extra, use_reentrant=False, context_fn=partial(_contexts, unit))
    return x


def _contexts(unit: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """Checkpoint contexts: the forward runs as is, the recomputation restores the BatchNorm buffers."""
    return nullcontext(), _restored_buffers(unit)


@contextmanager
def _restored_buffers(module: nn.Module) -> Iterator[None]:
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _init_weights(module: nn.Module) -> None:
    """DRAEM's init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and bias 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5
) -> torch.Tensor:
    """DRAEM's focal loss on the softmax output (alpha None, label smoothing ``smooth``).

    Args:
        logits: (B, 2, H, W) raw network outputs.
        target: (B, H, W) or (B, 1, H, W) binary mask.
    """
    prob = logits.softmax(dim=1)
    target = target.reshape(prob.shape[0], *prob.shape[2:]).long()
    one_hot = F.one_hot(target, prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    one_hot = one_hot.clamp(smooth / (prob.shape[1] - 1), 1.0 - smooth)
    pt = (one_hot * prob).sum(dim=1) + smooth
    return (-((1 - pt) ** gamma) * pt.log()).mean()


def image_scores(anomaly_maps: torch.Tensor, kernel: int = 21) -> torch.Tensor:
    """Image score = max of the ``kernel`` x ``kernel`` (stride 1, same padding) mean-pooled map."""
    pooled = F.avg_pool2d(anomaly_maps.unsqueeze(1), kernel, stride=1, padding=kernel // 2)
    return pooled.flatten(1).amax(dim=1)

"""The DRAEM discriminative U-Net (3 -> 2 channels) and the focal loss of the reference protocol.

Architecture as in DRAEM's ``DiscriminativeSubNetwork`` (used unchanged by AnomalyDiffusion's and
DualAnoDiff's evaluation code): six encoder blocks (widths b, 2b, 4b, 8b, 8b, 8b; two 3x3
conv-BN-ReLU each, max-pooling between), a mirrored decoder with bilinear upsampling and skip
connections, and a 3x3 output conv. ``base_width`` b is 64 in the paper protocol.

``gradient_checkpointing`` keeps only each conv-BN-ReLU unit's input during the forward pass and
recomputes the unit in the backward pass (``torch.utils.checkpoint``, non-reentrant): the outputs and
gradients are the same, the BatchNorm running statistics are updated once (the recomputation
restores them), at the cost of a second forward pass. With ``unit_chunk`` as well, every unit runs
on chunks of that many images (:class:`ChunkedUnit`) while BatchNorm still normalises over the whole
batch: the forward pass is the plain one, the backward pass recomputes each chunk's convolution twice
(the two sums BatchNorm's gradient needs over the batch, then the gradients), so a unit's working
memory is its input, output and their gradients plus one chunk's temporaries; gradients equal the
plain ones up to float rounding.

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

from anobench.downstream.offload import OnDisk, active_store


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
        unit_chunk: int | None = None,
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.unit_chunk = unit_chunk
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
        run = _plain
        if self.gradient_checkpointing and torch.is_grad_enabled():
            chunked = self.unit_chunk and self.training  # its backward pass assumes batch statistics
            run = partial(_chunked, chunk=self.unit_chunk) if chunked else _checkpointed
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
    for k, unit in enumerate(_units(block)):
        extra = (skip, pool) if k == 0 else (None, False)
        x = checkpoint(_plain, unit, x, *extra, use_reentrant=False, context_fn=partial(_contexts, unit))
    return x


def _units(block: nn.Sequential) -> list[nn.Sequential]:
    """The conv-BN-ReLU units of a block (an upsampling rides with the first)."""
    first = len(block) % 3 + 3
    return [block[:first], *(block[i : i + 3] for i in range(first, len(block), 3))]


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


def _chunked(
    block: nn.Sequential,
    x: torch.Tensor,
    skip: torch.Tensor | None = None,
    pool: bool = False,
    chunk: int = 1,
) -> torch.Tensor:
    """:func:`_plain` with every conv-BN-ReLU unit a :class:`ChunkedUnit` of ``chunk`` images."""
    for k, unit in enumerate(_units(block)):
        conv, norm = unit[-3], unit[-2]
        pre = partial(_plain, unit[:-3], pool=pool and k == 0)  # an empty Sequential is the identity
        params = (conv.weight, conv.bias, norm.weight, norm.bias)
        x = ChunkedUnit.apply(x, skip if k == 0 else None, *params, conv, norm, pre, chunk)
    return x


class ChunkedUnit(torch.autograd.Function):
    """``relu(batch_norm(conv(pre(x, skip))))`` computed ``chunk`` images at a time.

    ``pre(x, skip)`` is a per-image operation (max-pooling, concatenation with ``skip``,
    upsampling). The forward pass writes the convolution's output chunk by chunk and applies the
    module's BatchNorm to the whole batch in place (running statistics updated as by the plain unit). It
    saves the unit's input and output; the backward pass recomputes each chunk's convolution to sum
    ``g`` and ``g * x_hat`` over the batch (``g``: the output gradient where the ReLU passed), then
    recomputes it again to back-propagate BatchNorm's batch gradient
    ``gamma / sigma * (g - mean(g) - x_hat * mean(g * x_hat))`` through the chunk. Inside
    :func:`~anobench.downstream.offload.offloaded_activations` the input and output go to the
    context's files, and the backward pass reads back one chunk's rows at a time.
    """

    @staticmethod
    def forward(ctx, x, skip, weight, bias, gamma, beta, conv, norm, pre, chunk):  # noqa: D102
        with torch.no_grad():
            y = None
            for start in range(0, len(x), chunk):
                y_c = conv(pre(*_rows((x, skip), start, start + chunk)))
                y = y_c.new_empty((len(x), *y_c.shape[1:])) if y is None else y
                y[start : start + len(y_c)] = y_c
            var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
            out = _batch_norm_relu_(y, norm, mean, var)
        ctx.conv, ctx.pre, ctx.chunk, ctx.eps = conv, pre, chunk, norm.eps
        store = active_store()
        if store is not None and all(t is None or store.keeps(t) for t in (x, skip, out)):
            ctx.on_disk = tuple(None if t is None else store.put(t) for t in (x, skip, out))
            ctx.save_for_backward(mean, var, gamma)
        else:
            ctx.on_disk = None
            ctx.save_for_backward(x, skip, out, mean, var, gamma)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.on_disk is None:
            x, skip, out, mean, var, gamma = ctx.saved_tensors
            saved = (x, skip, out)
        else:
            mean, var, gamma = ctx.saved_tensors
            saved = ctx.on_disk
        conv, pre, chunk = ctx.conv, ctx.pre, ctx.chunk
        shape = (1, -1, 1, 1)
        mean, invstd = mean.view(shape), (var + ctx.eps).rsqrt().view(shape)
        count = grad_out.numel() // grad_out.shape[1]
        sum_g = torch.zeros_like(mean.flatten())
        sum_gx = torch.zeros_like(sum_g)
        starts = range(0, len(grad_out), chunk)
        with torch.no_grad():
            for start in starts:
                x_c, s_c, g = _chunk(saved, grad_out, start, chunk)
                x_hat = (conv(pre(x_c, s_c)) - mean) * invstd
                sum_g += g.sum(dim=(0, 2, 3))
                sum_gx += (g * x_hat).sum(dim=(0, 2, 3))
        mean_g, mean_gx = (sum_g / count).view(shape), (sum_gx / count).view(shape)
        scale = gamma.view(shape) * invstd
        grad_x = _empty_like(saved[0]) if ctx.needs_input_grad[0] else None
        grad_skip = _empty_like(saved[1]) if saved[1] is not None and ctx.needs_input_grad[1] else None
        grad_w, grad_b = torch.zeros_like(conv.weight), torch.zeros_like(conv.bias)
        for start in starts:
            x_c, s_c, g = _chunk(saved, grad_out, start, chunk)
            inputs = [t.detach().requires_grad_() if t is not None else None for t in (x_c, s_c)]
            with torch.enable_grad(), _kept_in_memory():  # a chunk's graph lives for one step
                y = conv(pre(*inputs))
            with torch.no_grad():
                grad_y = (g - mean_g - (y - mean) * invstd * mean_gx) * scale
            wrt = [t for t in inputs if t is not None] + [conv.weight, conv.bias]
            grads = torch.autograd.grad(y, wrt, grad_y)
            end = start + len(x_c)
            if grad_x is not None:
                grad_x[start:end] = grads[0]
            if grad_skip is not None:
                grad_skip[start:end] = grads[1]
            grad_w += grads[-2]
            grad_b += grads[-1]
        return grad_x, grad_skip, grad_w, grad_b, sum_gx, sum_g, None, None, None, None


def _batch_norm_relu_(
    y: torch.Tensor, norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor
) -> torch.Tensor:
    """``relu(norm(y))`` in place on ``y`` with its batch ``mean`` and biased ``var`` (training mode).

    The running statistics move as ``nn.BatchNorm2d`` moves them (unbiased variance, ``momentum``
    or the cumulative average when it is None); no second full-size tensor is allocated.
    """
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        n = y.numel() // y.shape[1]
        norm.running_mean.lerp_(mean, momentum)
        norm.running_var.lerp_(var * (n / (n - 1)), momentum)
    shape = (1, -1, 1, 1)
    scale = (var + norm.eps).rsqrt()
    y.sub_(mean.view(shape)).mul_((scale if norm.weight is None else scale * norm.weight).view(shape))
    return (y if norm.bias is None else y.add_(norm.bias.view(shape))).relu_()


def _kept_in_memory() -> AbstractContextManager:
    """Innermost saved-tensor hooks that keep what autograd saves as it is (no offload)."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)


def _rows(
    saved: tuple[torch.Tensor | OnDisk | None, ...], start: int, stop: int
) -> list[torch.Tensor | None]:
    """Images ``start:stop`` of each saved tensor (in memory or on disk; None stays None)."""
    return [
        t if t is None else t.rows(start, stop) if isinstance(t, OnDisk) else t[start:stop] for t in saved
    ]


def _chunk(
    saved: tuple[torch.Tensor | OnDisk | None, ...], grad_out: torch.Tensor, start: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One chunk's saved input and skip, and its output gradient where the ReLU passed."""
    x_c, s_c, out_c = _rows(saved, start, start + chunk)
    with torch.no_grad():
        return x_c, s_c, grad_out[start : start + chunk] * (out_c > 0)


def _empty_like(saved: torch.Tensor | OnDisk) -> torch.Tensor:
    return saved.empty() if isinstance(saved, OnDisk) else torch.empty_like(saved)


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

"""U^2-Net and U^2-Net-P (Qin et al., Pattern Recognition 2020) in plain torch, for mask extraction.

The module and parameter names follow the official checkpoints (``u2net.pth``, 176.3 MB, and
``u2netp.pth``, 4.7 MB, from xuebinqin/U-2-Net), so they load with ``strict=True``:
``stage1.rebnconvin.conv_s1.weight``, ``stage5d.rebnconv1d.bn_s1.running_mean``,
``side1.weight``, ``outconv.bias``, ...

Each residual U-block (RSU) is a small U-Net of 3x3 conv + BN + ReLU layers: max-pooling
(2x2, stride 2, ``ceil_mode=True``) on the way down, a dilation-2 layer at the bottom, bilinear
upsampling to the skip's size on the way up, and the input layer's output added back. RSU4F
replaces pooling by dilations 1, 2, 4, 8. The network stacks six encoder stages and five decoder
stages; a 3x3 side conv on each decoder stage (and on the last encoder stage), upsampled to the
input size, feeds a 1x1 fusion conv. ``forward`` returns the sigmoids of (fused, side1, ...,
side6); the released test script takes the first one.

Example:
    >>> import torch
    >>> net = U2NETP().eval()
    >>> [tuple(o.shape) for o in net(torch.zeros(1, 3, 64, 64))][:2]
    [(1, 1, 64, 64), (1, 1, 64, 64)]
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REBNCONV", "RSU4", "RSU4F", "RSU5", "RSU6", "RSU7", "U2NET", "U2NETP", "load_u2net"]


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    """3x3 convolution (dilation ``dirate``, same padding), batch norm, ReLU."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x in x H x W -> N x out x H x W."""
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class _RSU(nn.Module):
    """Residual U-block of ``height`` levels (RSU-L); with ``pooled=False`` the RSU-4F variant.

    Layers: ``rebnconvin`` (in -> out), ``rebnconv1`` (out -> mid), ``rebnconv2`` ..
    ``rebnconv{L}`` (mid -> mid, the last one at the bottom), then ``rebnconv{L-1}d`` ..
    ``rebnconv1d`` (2 mid -> mid, the last one 2 mid -> out) taking [deeper, skip] concatenated.
    """

    height: int = 4
    pooled: bool = True

    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__()
        top = self.height
        # Dilation per level: pooled blocks use 1 except 2 at the bottom; RSU4F doubles each level.
        dilation = {i: 1 for i in range(1, top)} if self.pooled else {i: 2 ** (i - 1) for i in range(1, top)}
        dilation[top] = 2 if self.pooled else 2 ** (top - 1)
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        for level in range(1, top + 1):
            layer = REBNCONV(out_ch if level == 1 else mid_ch, mid_ch, dilation[level])
            self.add_module(f"rebnconv{level}", layer)
        for level in range(top - 1, 0, -1):
            layer = REBNCONV(2 * mid_ch, out_ch if level == 1 else mid_ch, dilation[level])
            self.add_module(f"rebnconv{level}d", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x in x H x W -> N x out x H x W (any H, W: pooling rounds up, upsampling follows)."""
        top = self.height
        start = self.rebnconvin(x)
        skips = [self.rebnconv1(start)]
        for level in range(2, top):
            below = _pool(skips[-1]) if self.pooled else skips[-1]
            skips.append(getattr(self, f"rebnconv{level}")(below))
        deeper = getattr(self, f"rebnconv{top}")(skips[-1])
        for level in range(top - 1, 0, -1):
            skip = skips[level - 1]
            deeper = getattr(self, f"rebnconv{level}d")(torch.cat((_resize_to(deeper, skip), skip), 1))
        return deeper + start


class RSU7(_RSU):
    """RSU-7: six pooled levels plus a dilated bottom."""

    height = 7


class RSU6(_RSU):
    """RSU-6."""

    height = 6


class RSU5(_RSU):
    """RSU-5."""

    height = 5


class RSU4(_RSU):
    """RSU-4."""

    height = 4


class RSU4F(_RSU):
    """RSU-4F: no pooling, dilations 1, 2, 4 and 8 (for the low-resolution stages)."""

    height = 4
    pooled = False


# Encoder stage1..stage6 as (block, mid, out) (the input width is the previous stage's output);
# decoder stage5d..stage1d as (block, in, mid, out); the side convs take each stage's output.
_U2NET_ENCODER = (
    (RSU7, 32, 64),
    (RSU6, 32, 128),
    (RSU5, 64, 256),
    (RSU4, 128, 512),
    (RSU4F, 256, 512),
    (RSU4F, 256, 512),
)
_U2NET_DECODER = (
    (RSU4F, 1024, 256, 512),
    (RSU4, 1024, 128, 256),
    (RSU5, 512, 64, 128),
    (RSU6, 256, 32, 64),
    (RSU7, 128, 16, 64),
)
_U2NETP_ENCODER = tuple((block, 16, 64) for block in (RSU7, RSU6, RSU5, RSU4, RSU4F, RSU4F))
_U2NETP_DECODER = tuple((block, 128, 16, 64) for block in (RSU4F, RSU4, RSU5, RSU6, RSU7))


class _U2NetBase(nn.Module):
    """Six encoder stages, five decoder stages, six side outputs and their 1x1 fusion."""

    def __init__(self, encoder: tuple, decoder: tuple, in_ch: int, out_ch: int) -> None:
        super().__init__()
        channels = in_ch
        for i, (block, mid, out) in enumerate(encoder, start=1):
            self.add_module(f"stage{i}", block(channels, mid, out))
            channels = out
        side_in = {6: channels}
        for i, (block, cin, mid, out) in zip(range(5, 0, -1), decoder, strict=True):
            self.add_module(f"stage{i}d", block(cin, mid, out))
            side_in[i] = out
        for i in range(1, 7):
            self.add_module(f"side{i}", nn.Conv2d(side_in[i], out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Sigmoid maps (fused, side1, ..., side6), each at the input's size."""
        skips = [self.stage1(x)]
        for i in range(2, 7):
            skips.append(getattr(self, f"stage{i}")(_pool(skips[-1])))
        decoded = {6: skips[5]}
        deeper = skips[5]
        for i in range(5, 0, -1):
            skip = skips[i - 1]
            deeper = getattr(self, f"stage{i}d")(torch.cat((_resize_to(deeper, skip), skip), 1))
            decoded[i] = deeper
        side1 = self.side1(decoded[1])
        sides = [side1] + [_resize_to(getattr(self, f"side{i}")(decoded[i]), side1) for i in range(2, 7)]
        fused = self.outconv(torch.cat(sides, 1))
        return tuple(torch.sigmoid(d) for d in (fused, *sides))


class U2NET(_U2NetBase):
    """The full U^2-Net (44.0 M parameters, the 176.3 MB ``u2net.pth``)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(_U2NET_ENCODER, _U2NET_DECODER, in_ch, out_ch)


class U2NETP(_U2NetBase):
    """The small U^2-Net-P (1.13 M parameters, the 4.7 MB ``u2netp.pth``)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(_U2NETP_ENCODER, _U2NETP_DECODER, in_ch, out_ch)


def _first_line(text: str) -> str:
    """The first non-empty line of an error message, without terminal escape codes."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_u2net(path: str | Path) -> U2NET | U2NETP:
    """The U2NET or U2NETP stored in ``path`` (``.pth`` state dict or ``.safetensors``), in eval mode.

    The variant is read from the weights' shapes; a ``module.`` prefix (DataParallel) is stripped.
    ``.pth`` files are read with ``weights_only=True`` (never a full unpickle).

    Raises:
        GenerationInputError: missing or unreadable file, or not a U2-Net state dict (one line
            naming the file and the fix).
    """
    from anobench.generation.errors import GenerationInputError

    path = Path(path).expanduser()
    fix = "give the official u2net.pth or u2netp.pth (xuebinqin/U-2-Net) or a .safetensors copy of it"
    if not path.is_file():
        raise GenerationInputError(f"u2net_weights={str(path)!r}: file not found; {fix}")
    try:
        state = _read_state_dict(path)
    except Exception as exc:  # any reader failure means the same thing to the user
        if "Weights only load failed" in str(exc):
            reason = "it pickles objects, not a plain state dict; full unpickling is refused"
        else:
            reason = f"{type(exc).__name__}: {_first_line(str(exc))}"[:160]
        raise GenerationInputError(
            f"u2net_weights={str(path)!r}: cannot read it as weights ({reason}); {fix}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GenerationInputError(f"u2net_weights={str(path)!r}: not a state dict of tensors; {fix}")
    # A plain dict (no ``_metadata``): BatchNorm then accepts files saved without num_batches_tracked.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    side6 = state.get("side6.weight")
    width = side6.shape[1] if side6 is not None and side6.ndim == 4 else None
    if width not in (512, 64):
        raise GenerationInputError(
            f"u2net_weights={str(path)!r}: not a U2-Net state dict (no side6.weight of 512 or 64 input "
            f"channels); {fix}"
        )
    model = U2NET() if width == 512 else U2NETP()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [_first_line(line) for line in str(exc).splitlines()[1:] if line.strip()]
        detail = "; ".join(line[:160] for line in lines[:2]) or _first_line(str(exc))
        raise GenerationInputError(
            f"u2net_weights={str(path)!r}: does not match {type(model).__name__} ({detail}); {fix}"
        ) from None
    return model.eval()

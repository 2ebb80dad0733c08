"""The dual-branch attention processor: per-branch LoRA, the cross-branch module (SAIM) and BCM.

One frozen ``UNet2DConditionModel`` serves both branches. Its batch interleaves the pairs,
``[whole_0, part_0, whole_1, part_1, ...]``; every attention layer (``attn1`` and ``attn2``) gets a
:class:`DualBranchAttnProcessor` that

1. runs the layer's frozen projections plus the LoRA set of each sample's branch (rank ``r`` on
   ``to_q``, ``to_k``, ``to_v``, ``to_out.0``; down ~ N(0, 1/r), up = 0, scale 1, as the released
   code's vendored diffusers 0.18.1 ``LoRALinearLayer``);
2. attends within each branch (multi-head SDPA, keys/values are *not* shared across branches);
3. adds the cross-branch module :class:`CrossBranchAttention` residually: at every query position the
   two tokens (whole, part) attend to each other (the released code's "temporal" layers, full-rank).

The LoRA pairs are plain ``nn.Linear`` modules inside the processor rather than peft adapters: a
peft adapter is active for a whole forward call, while here the two halves of one batch need
different adapters inside one attention call; keeping them in the processor also puts LoRA, SAIM
and BCM weights in one ``state_dict`` namespace (``*.processor.*``).

BCM (background compensation, ``dualanodiff-bcm``): a "write" pass runs the UNet on the noised
background latent with the whole-branch LoRA and no SAIM, and every ``attn1`` stores its input;
in the following "read" pass the whole branch's ``attn1`` key/value source becomes
``(1 - a) * H + a * MLP(h_bg)`` with ``MLP = Linear(C, 320) -> Linear(320, C)`` (no activation)
and a learnable scalar ``a`` initialised to 0, exactly as the released code (a third-party note's
"initialised to 0.1" contradicts the code).

The processors hold no per-call Python state: the pass (write or read) and the stored background
inputs travel in the UNet call as ``cross_attention_kwargs={"bcm": BackgroundStore(...)}`` (as the
released code passes ``mode`` and ``ref_dict``), so gradient checkpointing recomputes a block
exactly as it first ran and ``torch.compile`` sees no mutable module attributes.

For sampling, :func:`set_cross_branch_fused` composes each SAIM's five full-rank projections into two
matrices (``DualAnoDiffPipeline.fuse_cross_branch``; the generator fuses before it samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

PROJECTIONS = ("q", "k", "v", "out")


@dataclass
class BackgroundStore:
    """The BCM state of one noise prediction, passed to the processors through the UNet call.

    ``write=True``: the write pass (branch-0 LoRA, no SAIM); every BCM ``attn1`` stores its input in
    ``features`` under its layer name. ``write=False``: the read pass blends them in. The same
    ``features`` dict serves both passes (and their recomputation under gradient checkpointing).
    """

    write: bool
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def reading(self) -> BackgroundStore:
        """The read-pass store over the same features."""
        return BackgroundStore(write=False, features=self.features)


class LoRALinear(nn.Module):
    """Low-rank residual ``up(down(x))`` with down ~ N(0, 1/rank) and up = 0 (a no-op at init)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The low-rank update (added to the frozen projection by the caller)."""
        return self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype)


class BranchLoRA(nn.Module):
    """One LoRA set (one branch) on ``to_q``, ``to_k``, ``to_v`` and ``to_out.0``."""

    def __init__(self, hidden_size: int, context_size: int, rank: int) -> None:
        super().__init__()
        self.q = LoRALinear(hidden_size, hidden_size, rank)
        self.k = LoRALinear(context_size, hidden_size, rank)
        self.v = LoRALinear(context_size, hidden_size, rank)
        self.out = LoRALinear(hidden_size, hidden_size, rank)


def _pairs(t: torch.Tensor) -> torch.Tensor:
    """(2P, N, C) interleaved tokens -> the (P, N, 2, C) view: the two branches per position."""
    return t.unflatten(0, (-1, 2)).transpose(1, 2)


class FusedCrossBranch(NamedTuple):
    """One SAIM's projections composed for inference (see :meth:`CrossBranchAttention.fuse`)."""

    score: torch.Tensor  # (C, C): P^T Wq^T Wk P / sqrt(C)
    score_bias: torch.Tensor  # (1, C): (P^T Wk^T (Wq p + bq))^T / sqrt(C)
    value: torch.Tensor  # (C, C): Wo Wv P
    value_bias: torch.Tensor  # (C,): Wo (Wv p + bv) + bo
    versions: tuple[int, ...]  # the parameters' version counters when composed


class CrossBranchAttention(nn.Module):
    """SAIM: per position, single-head self-attention over the (whole, part) token pair.

    ``LayerNorm(eps=1e-6) -> Linear in -> q/k/v -> SDPA over 2 tokens -> Linear out``; full-rank
    layers with PyTorch's default init (not zero-initialised, as in the released code), so the
    module changes the output from the first step. The caller adds the result residually.
    ``fused`` (set by :func:`set_cross_branch_fused`, inference only) runs the same map in three
    products per pair.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)
        self.fused: FusedCrossBranch | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (2P, N, C) interleaved pairs; returns the (2P, N, C) update.

        The projections run on contiguous (2P, N, C) tokens (one matrix product each; on the
        transposed pair view they would be batched products, ~2x slower on CPU); only the
        attention sees the pairs, as (P, N, 2, C): the two branches per position.
        """
        if self.fused is not None:
            return self._forward_fused(x, self.fused)
        y = self.proj_in(self.norm(x))
        y = F.scaled_dot_product_attention(_pairs(self.to_q(y)), _pairs(self.to_k(y)), _pairs(self.to_v(y)))
        return self.proj_out(y.transpose(1, 2).flatten(0, 1))

    def fuse(self) -> FusedCrossBranch:
        """The five projections as two matrices, composed in float64.

        With ``n`` the normalised tokens, ``y = P n + p`` and ``q/k/v = W y + b``, the score of
        token ``i`` for token ``j`` of its pair is ``n_i . (A n_j) + g . n_j`` plus a term that
        does not depend on ``j`` (which the softmax cancels), ``A = P^T Wq^T Wk P`` and
        ``g = P^T Wk^T (Wq p + bq)``; and since each row of attention weights sums to 1,
        ``proj_out`` of the weighted values is the weighted sum of ``B n_j + c`` with
        ``B = Wo Wv P`` and ``c = Wo (Wv p + bv) + bo``. Over two tokens the softmax is a
        sigmoid of the score difference, so with ``d = n_whole - n_part`` token ``i`` gets
        ``B n_part + c + sigmoid(n_i . (A d) + g . d) B d``: three C x C products per pair
        (A d, B d, B n_part) instead of ten.
        """

        def weight(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            return layer.weight.detach().double(), layer.bias.detach().double()

        (p_w, p_b), (q_w, q_b), (v_w, v_b) = weight(self.proj_in), weight(self.to_q), weight(self.to_v)
        k_w, (o_w, o_b) = self.to_k.weight.detach().double(), weight(self.proj_out)  # bk cancels
        scale = p_w.shape[0] ** -0.5
        query, key = q_w @ p_w, k_w @ p_w
        dtype = self.proj_in.weight.dtype
        return FusedCrossBranch(
            score=(query.T @ key * scale).to(dtype),
            score_bias=((key.T @ (q_w @ p_b + q_b)) * scale)[None].to(dtype),
            value=(o_w @ v_w @ p_w).to(dtype),
            value_bias=(o_w @ (v_w @ p_b + v_b) + o_b).to(dtype),
            versions=self._versions(),
        )

    def _versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())

    def _forward_fused(self, x: torch.Tensor, fused: FusedCrossBranch) -> torch.Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError("the cross-branch module is fused for inference: unfuse it to train")
        if not torch.compiler.is_compiling() and fused.versions != self._versions():
            raise RuntimeError("the cross-branch weights changed since they were fused: fuse them again")
        pairs = self.norm(x).unflatten(0, (-1, 2))  # (P, 2, N, C): the (whole, part) tokens
        diff = pairs[:, 0] - pairs[:, 1]
        logits = (pairs * F.linear(diff, fused.score).unsqueeze(1)).sum(-1, keepdim=True)
        weight = torch.sigmoid(logits + F.linear(diff, fused.score_bias).unsqueeze(1))
        out = F.linear(pairs[:, 1], fused.value, fused.value_bias).unsqueeze(1)
        return (out + weight * F.linear(diff, fused.value).unsqueeze(1)).flatten(0, 1)


class BackgroundCompensation(nn.Module):
    """BCM: ``(1 - a) * H + a * MLP(h_bg)`` with a learnable scalar ``a`` that starts at 0."""

    def __init__(self, dim: int, hidden: int = 320) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Linear(hidden, dim))
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """Blend the whole branch's key/value source ``h`` with the stored background input."""
        a = self.alpha.to(h.dtype)
        return (1 - a) * h + a * self.mlp(background.to(self.alpha.dtype)).to(h.dtype)


class DualBranchAttnProcessor(nn.Module):
    """Attention processor with two LoRA sets, the cross-branch module and (optionally) BCM.

    Args:
        hidden_size: the layer's query width (``attn.inner_dim`` for SD).
        context_size: the key/value input width (``cross_attention_dim`` for attn2, else hidden).
        rank: LoRA rank of each branch.
        coupling: add the cross-branch module (False: two independent branches, the ablation).
        bcm: add background compensation (only meaningful on self-attention layers).
        bcm_hidden: width of the BCM MLP (320 in the released code).
    """

    def __init__(
        self,
        hidden_size: int,
        context_size: int,
        rank: int = 32,
        coupling: bool = True,
        bcm: bool = False,
        bcm_hidden: int = 320,
    ) -> None:
        super().__init__()
        self.lora = nn.ModuleList([BranchLoRA(hidden_size, context_size, rank) for _ in range(2)])
        self.saim = CrossBranchAttention(hidden_size) if coupling else None
        self.bcm = BackgroundCompensation(hidden_size, bcm_hidden) if bcm else None
        self.layer = ""  # the processor's name in the UNet (set at install): its BCM store key

    def _lora(self, name: str, x: torch.Tensor, branch0_only: bool) -> torch.Tensor:
        """The LoRA update of projection ``name`` for each sample's branch.

        Without gradients (sampling) both branches run as two batched products over (branch,
        tokens): on the strided per-branch views of the interleaved batch each product is a small
        batched one per pair (the profiler: 2x the time of a plain LoRA's products). Training keeps
        the per-branch products: the same values, but summed in another order, and the small
        offline trainings are chaotic enough that the calibrated quick baseline would move.
        """
        if branch0_only:
            return getattr(self.lora[0], name)(x)
        if torch.is_grad_enabled():
            pairs = x.unflatten(0, (-1, 2))
            out = [getattr(self.lora[b], name)(pairs[:, b]) for b in range(2)]
            return torch.stack(out, dim=1).flatten(0, 1)
        downs = torch.stack([getattr(b, name).down.weight for b in self.lora])  # (2, rank, C)
        ups = torch.stack([getattr(b, name).up.weight for b in self.lora])  # (2, C out, rank)
        pairs = x.unflatten(0, (-1, 2)).transpose(0, 1)  # (2, P, N, C): one branch per row
        tokens = pairs.reshape(2, -1, x.shape[-1]).to(downs.dtype)
        update = tokens.bmm(downs.transpose(1, 2)).bmm(ups.transpose(1, 2)).to(x.dtype)
        return update.unflatten(1, pairs.shape[1:3]).transpose(0, 1).flatten(0, 1)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        bcm: BackgroundStore | None = None,
    ) -> torch.Tensor:
        """``nn.Module.__call__`` with named arguments.

        diffusers passes a processor only the ``cross_attention_kwargs`` its ``__call__`` names.
        """
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, bcm)

    def forward(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        bcm: BackgroundStore | None = None,
    ) -> torch.Tensor:
        """Dual-branch attention of ``attn`` (a diffusers ``Attention``) on interleaved pairs.

        ``bcm``: the BCM pass this call belongs to (None: a plain dual forward).
        """
        write = bcm is not None and bcm.write
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if not write and batch % 2:
            raise ValueError(
                f"dual-branch attention needs interleaved (whole, part) pairs; got batch {batch}"
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        self_attention = encoder_hidden_states is None
        if self_attention:
            context = hidden_states
        else:
            context = encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
        if bcm is not None and self.bcm is not None and self_attention:
            if write:
                bcm.features[self.layer] = hidden_states
            else:
                pairs = context.unflatten(0, (-1, 2))
                whole = self.bcm(pairs[:, 0], bcm.features[self.layer])
                context = torch.stack([whole, pairs[:, 1]], dim=1).flatten(0, 1)

        query = attn.to_q(hidden_states) + self._lora("q", hidden_states, write)
        key = attn.to_k(context) + self._lora("k", context, write)
        value = attn.to_v(context) + self._lora("v", context, write)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        out = attn.to_out[0](out) + self._lora("out", out, write)
        out = attn.to_out[1](out)
        if self.saim is not None and not write:
            out = out + self.saim(out)

        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_dual_processors(
    unet: nn.Module, rank: int, coupling: bool = True, bcm: bool = False, bcm_hidden: int = 320
) -> list[DualBranchAttnProcessor]:
    """Freeze ``unet`` and give every attention layer a :class:`DualBranchAttnProcessor`.

    BCM modules go on the self-attention (``attn1``) layers only. Returns the processors, whose
    parameters are the UNet's trainable parameters.
    """
    unet.requires_grad_(False)
    processors: dict[str, DualBranchAttnProcessor] = {}
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.removesuffix(".processor"))
        self_attention = not attn.is_cross_attention
        context_size = attn.to_k.in_features
        processors[name] = DualBranchAttnProcessor(
            attn.to_q.out_features,
            context_size,
            rank=rank,
            coupling=coupling,
            bcm=bcm and self_attention,
            bcm_hidden=bcm_hidden,
        )
    for name, proc in processors.items():
        proc.layer = name
    created = list(processors.values())
    unet.set_attn_processor(processors)  # pops entries from the dict: keep the list above
    device = next(unet.parameters()).device
    for proc in created:
        proc.to(device)
    return created


def dual_processors(unet: nn.Module) -> list[DualBranchAttnProcessor]:
    """The dual processors installed on ``unet``, in a stable order."""
    return [p for p in unet.attn_processors.values() if isinstance(p, DualBranchAttnProcessor)]


def set_cross_branch_fused(unet: nn.Module, fused: bool) -> None:
    """Fuse (:meth:`CrossBranchAttention.fuse`) or unfuse every cross-branch module of ``unet``."""
    for processor in dual_processors(unet):
        if processor.saim is not None:
            processor.saim.fused = processor.saim.fuse() if fused else None

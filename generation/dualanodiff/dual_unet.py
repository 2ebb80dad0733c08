"""The dual-branch UNet and text encoder, and the trainable wrapper that wires them for training.

* :class:`DualBranchUNet2DConditionModel`: a ``UNet2DConditionModel`` whose config can carry the
  dual settings (``dual_rank``, ``dual_coupling``, ``dual_bcm``, ``dual_bcm_hidden``); when it does,
  every attention layer holds a :class:`~anobench.generation.dualanodiff.attention.DualBranchAttnProcessor`
  (per-branch LoRA, SAIM, BCM), so ``save_pretrained`` / ``from_pretrained`` round-trip the
  adapters with the base weights. Without them it is an ordinary UNet (a base loads into it).
* :class:`LoRACLIPTextModel`: a ``CLIPTextModel`` with the shared text LoRA when ``config.lora_rank`` is set.
* :func:`predict_noise`: one noise prediction of interleaved (whole, part) pairs (BCM write pass
  first when enabled), used by training and by the sampling pipeline alike.
* :class:`DualAnoDiffModel`: one ``nn.Module`` whose ``forward`` does a whole noise prediction
  (text encoding included), so ``accelerate`` wraps it once (DDP sees one forward per backward).
  Its trainable state (``trainable_state_dict``) is the processors' LoRA + SAIM (+ BCM) and the
  text-encoder LoRA; it is saved as safetensors.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, PreTrainedModel

from anobench.generation.dualanodiff.attention import (
    BackgroundStore,
    dual_processors,
    install_dual_processors,
)

#: diffusers' pipeline loader finds the load method of a module's class by looking its base classes
#: (``ModelMixin``, ``PreTrainedModel``, ...) up in the class's own module: they must be names here.
__all__ = [
    "DualAnoDiffModel",
    "DualBranchUNet2DConditionModel",
    "LoRACLIPTextModel",
    "ModelMixin",
    "PreTrainedModel",
    "add_text_lora",
    "branch_labels",
    "encode_prompts",
    "predict_noise",
]

if TYPE_CHECKING:
    from anobench.generation.dualanodiff.components import Components

TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def add_text_lora(text_encoder: nn.Module, rank: int) -> None:
    """One LoRA (shared by both branches) on every CLIP self-attention q/k/v/out (peft).

    Gaussian init = down ~ N(0, 1/r), up = 0, and ``lora_alpha = r`` gives scale 1, as the released
    code's ``LoRAAttnProcessor`` on the text encoder.
    """
    from peft import LoraConfig, inject_adapter_in_model

    text_encoder.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(TEXT_LORA_TARGETS)
    )
    inject_adapter_in_model(config, text_encoder)


class LoRACLIPTextModel(CLIPTextModel):
    """CLIP text encoder that carries the shared LoRA when ``config.lora_rank`` is set (saved with it)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if getattr(config, "lora_rank", None):
            add_text_lora(self, config.lora_rank)

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: the weights initialise as ``CLIPTextModel``'s do (same random draws, same base)."""
        return False

    def add_lora(self, rank: int) -> None:
        """Inject the LoRA (frozen base, trainable LoRA) and record its rank in the config."""
        add_text_lora(self, rank)
        self.config.lora_rank = rank


class DualBranchUNet2DConditionModel(UNet2DConditionModel):
    """``UNet2DConditionModel`` with the dual-branch processors when ``dual_rank`` is set.

    Example:
        >>> from anobench.generation.dualanodiff.components import build_offline_components
        >>> unet = build_offline_components(16, (8, 16), (8, 16), 16, 1).unet
        >>> unet.install_dual_branches(rank=2, bcm=True, bcm_hidden=8)
        >>> unet.config.dual_rank, unet.config.dual_bcm
        (2, True)
    """

    def __init__(
        self,
        *args: Any,
        dual_rank: int | None = None,
        dual_coupling: bool = True,
        dual_bcm: bool = False,
        dual_bcm_hidden: int = 320,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if dual_rank:
            self.install_dual_branches(dual_rank, dual_coupling, dual_bcm, dual_bcm_hidden)

    def install_dual_branches(
        self, rank: int, coupling: bool = True, bcm: bool = False, bcm_hidden: int = 320
    ) -> None:
        """Freeze the UNet, give every attention layer a dual processor and record the settings."""
        install_dual_processors(self, rank, coupling=coupling, bcm=bcm, bcm_hidden=bcm_hidden)
        self.register_to_config(
            dual_rank=rank, dual_coupling=coupling, dual_bcm=bcm, dual_bcm_hidden=bcm_hidden
        )

    @property
    def has_bcm(self) -> bool:
        """Whether the processors carry background compensation."""
        return bool(self.config.get("dual_bcm", False))


# diffusers builds a model from the keys of its ``__init__`` signature: expose the UNet's and ours.
DualBranchUNet2DConditionModel.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *inspect.signature(UNet2DConditionModel.__init__).parameters.values(),
        *(
            p
            for n, p in inspect.signature(DualBranchUNet2DConditionModel.__init__).parameters.items()
            if n.startswith("dual_")
        ),
    ]
)


def encode_prompts(tokenizer: Any, text_encoder: nn.Module, prompts: list[str]) -> torch.Tensor:
    """CLIP last hidden states (B, L, D) of ``prompts`` padded to the tokenizer's maximum length."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def predict_noise(
    unet: DualBranchUNet2DConditionModel,
    noisy_latents: torch.Tensor,
    timesteps: torch.Tensor,
    prompt_embeds: torch.Tensor,
    noisy_background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predict the noise of interleaved pairs ``[whole_0, part_0, ...]`` (all 2P inputs).

    ``noisy_background`` (P latents, BCM only) is the background condition noised to each pair's
    timestep; it goes through a write pass with the whole-branch prompt first. A UNet with class
    embeddings gets each input's branch as its class label (:func:`branch_labels`).
    """
    labels = branch_labels(unet, len(noisy_latents))
    if not unet.has_bcm:
        return unet(noisy_latents, timesteps, prompt_embeds, class_labels=labels).sample
    if noisy_background is None:
        raise ValueError("the BCM model needs the noised background latents")
    store = BackgroundStore(write=True)
    unet(
        noisy_background,
        timesteps[::2],
        prompt_embeds[::2],
        class_labels=None if labels is None else labels[::2],
        cross_attention_kwargs={"bcm": store},
    )
    return unet(
        noisy_latents,
        timesteps,
        prompt_embeds,
        class_labels=labels,
        cross_attention_kwargs={"bcm": store.reading()},
    ).sample


def branch_labels(unet: UNet2DConditionModel, n: int) -> torch.Tensor | None:
    """Class labels ``[0, 1, 0, 1, ...]`` (whole, part) of ``n`` interleaved inputs.

    None for a UNet without class embeddings (Stable Diffusion; offline bases have two).
    """
    if not unet.config.get("num_class_embeds"):
        return None
    return (torch.arange(n) % 2).to(unet.device)


def portable_name(name: str) -> str:
    """A trainable tensor's saved name: the same under every transformers version.

    transformers 4.x ``CLIPTextModel`` has a ``text_model.`` level that 5.x does not (the released
    checkpoints carry it); the saved name leaves it out, so files convert and load under either.
    """
    return name.replace("text_encoder.text_model.", "text_encoder.", 1)


class DualAnoDiffModel(nn.Module):
    """Noise prediction of interleaved (whole, part) pairs with the dual-branch UNet.

    Args:
        components: the frozen base (its UNet and text encoder get their adapters in place).
        rank: LoRA rank (UNet branches and text encoder).
        coupling: cross-branch module on (False: the "no SAIM" ablation).
        bcm: background compensation on the whole branch.
        train_text_encoder: add the shared text-encoder LoRA.
        bcm_hidden: width of the BCM MLP.
    """

    def __init__(
        self,
        components: Components,
        rank: int = 32,
        coupling: bool = True,
        bcm: bool = False,
        train_text_encoder: bool = True,
        bcm_hidden: int = 320,
    ) -> None:
        super().__init__()
        self.unet = components.unet
        self.text_encoder = components.text_encoder
        self.tokenizer = components.tokenizer
        self.bcm = bcm
        components.vae.requires_grad_(False)
        self.unet.install_dual_branches(rank, coupling=coupling, bcm=bcm, bcm_hidden=bcm_hidden)
        if train_text_encoder:
            self.text_encoder.add_lora(rank)
        else:
            self.text_encoder.requires_grad_(False)

    def zero_coupling(self) -> None:
        """Zero the output layer of every cross-branch module: the model starts as two separate branches."""
        for processor in dual_processors(self.unet):
            if processor.saim is not None:
                nn.init.zeros_(processor.saim.proj_out.weight)
                nn.init.zeros_(processor.saim.proj_out.bias)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states of ``prompts`` (B, L, D)."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts)

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        noisy_background: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`predict_noise` with this model's UNet."""
        return predict_noise(self.unet, noisy_latents, timesteps, prompt_embeds, noisy_background)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned tensors only (processors' LoRA/SAIM/BCM + text LoRA), detached, contiguous.

        Names are :func:`portable_name` s, the same under every transformers version.
        """
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {portable_name(n): t.detach().contiguous() for n, t in self.state_dict().items() if n in names}

    def load_trainable(self, path: str | Path) -> None:
        """Load a ``trainable_state_dict`` saved as safetensors (never unpickles).

        Raises:
            GenerationInputError: the file misses tensors of this model or has foreign ones
                (e.g. a checkpoint of another rank, or of the BCM variant into the plain model).
        """
        from safetensors.torch import load_file

        from anobench.generation.errors import GenerationInputError

        own_names = {portable_name(n): n for n, p in self.named_parameters() if p.requires_grad}
        state = load_file(str(path), device=str(next(self.parameters()).device))
        state = {own_names.get(portable_name(n), n): t for n, t in state.items()}
        expected = set(own_names.values())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        own = self.state_dict()
        wrong = [n for n in state if n in own and own[n].shape != state[n].shape]
        if missing or unexpected or wrong:
            raise GenerationInputError(
                f"{path}: weights do not match this model (missing {len(missing)}, unexpected "
                f"{len(unexpected)}, wrong shape {len(wrong)}, e.g. {(missing + unexpected + wrong)[:2]}); "
                "was it trained with another rank, coupling or bcm setting?"
            )
        self.load_state_dict(state, strict=False)

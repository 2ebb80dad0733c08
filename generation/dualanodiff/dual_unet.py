"""The DualAnoDiff model: frozen base + per-branch attention processors + shared text-encoder LoRA.

:class:`DualAnoDiffModel` is one ``nn.Module`` whose ``forward`` does a whole noise prediction
(text encoding, the BCM write pass when enabled, the dual pass), so ``accelerate`` wraps it once
(DDP sees one forward per backward). Its trainable state (``trainable_state_dict``) is the
processors' LoRA + SAIM (+ BCM) and the text-encoder LoRA; it is saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anobench.generation.dualanodiff.attention import (
    background_write,
    clear_background,
    install_dual_processors,
)
from anobench.generation.dualanodiff.models import Components

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


class DualAnoDiffModel(nn.Module):
    """Noise prediction of interleaved (whole, part) pairs with the dual-branch UNet.

    Args:
        components: the frozen base (its UNet and text encoder get adapters in place).
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
        install_dual_processors(self.unet, rank, coupling=coupling, bcm=bcm, bcm_hidden=bcm_hidden)
        if train_text_encoder:
            add_text_lora(self.text_encoder, rank)
        else:
            self.text_encoder.requires_grad_(False)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids padded to the tokenizer's maximum length (77 for CLIP)."""
        return self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states of ``prompts`` (B, L, D)."""
        return self.text_encoder(self.tokenize(prompts))[0]

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        noisy_background: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise of interleaved pairs ``[whole_0, part_0, ...]`` (all 2P inputs).

        ``noisy_background`` (P latents, BCM only) is the background condition noised to each
        pair's timestep; it goes through a write pass with the whole-branch prompt first.
        """
        if self.bcm:
            if noisy_background is None:
                raise ValueError("the BCM model needs the noised background latents")
            with background_write(self.unet):
                self.unet(noisy_background, timesteps[::2], prompt_embeds[::2])
        try:
            return self.unet(noisy_latents, timesteps, prompt_embeds).sample
        finally:
            if self.bcm:
                clear_background(self.unet)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned tensors only (processors' LoRA/SAIM/BCM + text LoRA), detached, contiguous."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach().contiguous() for n, t in self.state_dict().items() if n in names}

    def load_trainable(self, path: str | Path) -> None:
        """Load a ``trainable_state_dict`` saved as safetensors (never unpickles).

        Raises:
            GenerationInputError: the file misses tensors of this model or has foreign ones
                (e.g. a checkpoint of another rank, or of the BCM variant into the plain model).
        """
        from safetensors.torch import load_file

        from anobench.generation.errors import GenerationInputError

        state = load_file(str(path), device=str(next(self.parameters()).device))
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
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

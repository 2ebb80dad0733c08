"""Sampling: :class:`DualAnoDiffPipeline`, a diffusers ``DiffusionPipeline`` of (whole, part) pairs.

Registered modules: ``vae``, ``text_encoder`` (:class:`LoRACLIPTextModel`, with the shared text
LoRA), ``tokenizer``, ``unet`` (:class:`DualBranchUNet2DConditionModel`, with the per-branch LoRA,
SAIM and BCM processors) and ``scheduler``; all of them round-trip through ``save_pretrained`` /
``from_pretrained``.

As the released inference script: two independent initial latents per pair (no shared noise),
classifier-free guidance with the empty prompt as negative for both branches, CFG batch layout
``[uncond pairs..., cond pairs...]`` with each half interleaved (whole, part). BCM, as the
released ``inference_test_tempt.py``: the conditional half gets a VAE latent *sample* (unscaled, as
in training) of the ``background`` condition, the unconditional half a sample of an all-zero
(mid-grey) image's latent (both drawn once per call from ``background_generator``); at every step
each half is noised to the current timestep with its own fresh noise from the pair's generator.

Example:
    >>> pipe = DualAnoDiffPipeline.from_pretrained("out/bottle-pipeline")  # doctest: +SKIP
    >>> gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    >>> out = pipe("a vfx with sks", part_prompt="sks", num_images_per_prompt=2,
    ...            generator=gens, guidance_scale=2.5)  # doctest: +SKIP
    >>> len(out.images), len(out.part_images)  # PIL images  # doctest: +SKIP
    (2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from anobench.generation.dualanodiff.attention import set_cross_branch_fused
from anobench.generation.dualanodiff.components import downsample_factor
from anobench.generation.dualanodiff.data import to_tensor, to_uint8
from anobench.generation.dualanodiff.dual_unet import (
    DualAnoDiffModel,
    DualBranchUNet2DConditionModel,
    LoRACLIPTextModel,
    encode_prompts,
    predict_noise,
)
from anobench.generation.dualanodiff.trainer import encode_latents

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class DualAnoDiffPipelineOutput(BaseOutput):
    """Generated pairs: whole images and their anomaly parts (mid-grey outside the anomaly).

    Args:
        images, part_images: lists of PIL images (``"pil"``), B x H x W x 3 float arrays in [0, 1]
            (``"np"``) or B x 3 x H x W float tensors in [0, 1] (``"pt"``).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    part_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class DualAnoDiffPipeline(DiffusionPipeline):
    """Dual-branch sampler: one batch denoises whole images and anomaly parts together.

    Args:
        vae: the base VAE.
        text_encoder: CLIP text encoder (with the shared LoRA when trained with it).
        tokenizer: its tokenizer.
        unet: the dual-branch UNet (processors installed, adapters loaded).
        scheduler: a diffusers scheduler (PNDM for the paper; DDIM/DPM-Solver are faster).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: Any,
        text_encoder: LoRACLIPTextModel,
        tokenizer: Any,
        unet: DualBranchUNet2DConditionModel,
        scheduler: Any,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )

    @classmethod
    def from_model(cls, model: DualAnoDiffModel, vae: Any, scheduler: Any) -> DualAnoDiffPipeline:
        """The pipeline of a trained :class:`DualAnoDiffModel` (shares its modules, no copy)."""
        return cls(vae, model.text_encoder, model.tokenizer, model.unet, scheduler)

    def fuse_cross_branch(self) -> None:
        """Compose each cross-branch module's five projections into two, for sampling.

        The same samples up to float rounding, three fewer C x C products per token and attention
        layer (:meth:`~anobench.generation.dualanodiff.attention.CrossBranchAttention.fuse`). Fuse
        after loading or training the weights; a weight changed since makes the next call raise,
        and training while fused raises: :meth:`unfuse_cross_branch` first.
        """
        set_cross_branch_fused(self.unet, True)

    def unfuse_cross_branch(self) -> None:
        """Undo :meth:`fuse_cross_branch` (the modules run their five projections again)."""
        set_cross_branch_fused(self.unet, False)

    def _background_tensor(self, background: Any) -> torch.Tensor:
        """3 x H x W in [-1, 1] from a tensor (as is), an H x W x 3 uint8 array or a PIL image."""
        if isinstance(background, torch.Tensor):
            return background
        if isinstance(background, PIL.Image.Image):
            background = np.asarray(background.convert("RGB"))
        return to_tensor(np.ascontiguousarray(background))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        part_prompt: str,
        negative_prompt: str = "",
        negative_part_prompt: str | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 100,
        guidance_scale: float = 2.5,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        background: torch.Tensor | np.ndarray | PIL.Image.Image | None = None,
        background_generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DualAnoDiffPipelineOutput | tuple[Any, Any]:
        """Generate ``num_images_per_prompt`` (whole, part) pairs in one batch.

        Args:
            prompt, part_prompt: the whole- and part-branch prompts.
            negative_prompt: the unconditional prompt of the whole branch (and of the part branch
                unless ``negative_part_prompt`` is given); the paper uses "" for both.
            num_images_per_prompt: pairs to generate.
            num_inference_steps: denoising steps.
            guidance_scale: CFG scale (1 disables the unconditional pass).
            height, width: pixels (default: the UNet's sample size times the VAE factor).
            generator: one per pair (pair i then depends only on ``generator[i]``) or one for all.
            background: BCM only, the background condition of all pairs (3 x H x W tensor in
                [-1, 1], H x W x 3 uint8 array or PIL image).
            background_generator: draws the condition latents' VAE samples (None: the first
                pair's generator).
            output_type: "pil", "np" or "pt".
            return_dict: False returns ``(images, part_images)``.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: choose one of {', '.join(OUTPUT_TYPES)}")
        p = num_images_per_prompt
        if isinstance(generator, list) and len(generator) != p:
            raise ValueError(f"got {len(generator)} generators for num_images_per_prompt={p}")
        if self.unet.has_bcm and background is None:
            raise ValueError("the BCM model needs a background condition image (background=...)")
        gens = generator if isinstance(generator, list) else [generator] * p
        vae, device, dtype = self.vae, self._execution_device, self.unet.dtype
        factor = downsample_factor(vae)
        default = self.unet.config.sample_size * factor
        shape = (2, self.unet.config.in_channels, (height or default) // factor, (width or default) // factor)
        latents = torch.stack([torch.randn(shape, generator=g) for g in gens]).flatten(0, 1)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma

        cfg = guidance_scale != 1.0
        embeds = encode_prompts(self.tokenizer, self.text_encoder, [prompt, part_prompt]).to(dtype)
        embeds = embeds.repeat(p, 1, 1)
        if cfg:
            negative = [
                negative_prompt,
                negative_prompt if negative_part_prompt is None else negative_part_prompt,
            ]
            uncond = encode_prompts(self.tokenizer, self.text_encoder, negative).to(dtype).repeat(p, 1, 1)
            embeds = torch.cat([uncond, embeds])

        bg_latents = None
        if self.unet.has_bcm:
            bg = self._background_tensor(background)[None].to(device, vae.dtype)
            images = torch.cat([torch.zeros_like(bg), bg]) if cfg else bg
            g = background_generator if background_generator is not None else gens[0]
            sampled = encode_latents(vae, images, g, scale=False).to(dtype)  # unscaled, as in training
            bg_latents = sampled.repeat_interleave(p, dim=0)  # [uncond x p, cond x p]

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            x = torch.cat([latents, latents]) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            timesteps = t.expand(x.shape[0]).to(device)
            noisy_bg = None
            if bg_latents is not None:
                halves = 2 if cfg else 1  # independent noise for the unconditional half
                noise = torch.stack([torch.randn((halves, *bg_latents.shape[1:]), generator=g) for g in gens])
                noise = noise.transpose(0, 1).flatten(0, 1)  # [uncond x p, cond x p]
                noisy_bg = self._add_training_noise(bg_latents, noise.to(device, dtype), timesteps[::2])
            eps = predict_noise(self.unet, x, timesteps, embeds, noisy_bg)
            if cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample

        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        self.maybe_free_model_hooks()
        if output_type == "pil":
            pairs = to_uint8(decoded)
            out = [PIL.Image.fromarray(a) for a in pairs[0::2]], [PIL.Image.fromarray(a) for a in pairs[1::2]]
        else:
            unit = (decoded.float() / 2 + 0.5).clamp(0, 1)
            if output_type == "np":
                unit = unit.permute(0, 2, 3, 1).cpu().numpy()
            out = unit[0::2], unit[1::2]
        return DualAnoDiffPipelineOutput(*out) if return_dict else out

    def _add_training_noise(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward-noise ``x`` to ``t`` with the training (DDPM) schedule (the BCM condition)."""
        alphas = self.scheduler.alphas_cumprod.to(x.device)[t.long()].to(x.dtype)
        a = alphas.sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas).sqrt().view(-1, 1, 1, 1)
        return a * x + s * noise

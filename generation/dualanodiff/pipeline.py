"""Sampling: one ``__call__`` returning (whole image, anomaly part) pairs, seeded per pair.

As the released inference script: two independent initial latents per pair (no shared noise),
classifier-free guidance with the empty prompt as negative for both branches, CFG batch layout
``[uncond pairs..., cond pairs...]`` with each half interleaved (whole, part). BCM: the
conditional half gets the VAE latent (unscaled, as in training) of the background condition,
the unconditional half that of an all-zero (mid-grey) image; both are noised to the current
timestep with seeded noise.

Example:
    >>> pipe = DualAnoDiffPipeline(model, vae, scheduler)  # doctest: +SKIP
    >>> out = pipe("a vfx with sks", "sks", seeds=[1, 2], guidance_scale=2.5)  # doctest: +SKIP
    >>> out.images.shape, out.parts.shape  # doctest: +SKIP
    ((2, 512, 512, 3), (2, 512, 512, 3))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anobench.generation.dualanodiff.data import to_uint8
from anobench.generation.dualanodiff.model import DualAnoDiffModel


@dataclass
class DualAnoDiffOutput:
    """Generated pairs: whole images and anomaly parts, B x H x W x 3 uint8."""

    images: np.ndarray
    parts: np.ndarray


class DualAnoDiffPipeline:
    """Dual-branch sampler over a trained :class:`DualAnoDiffModel`.

    Args:
        model: the dual model (adapters loaded).
        vae: the base VAE.
        scheduler: a diffusers scheduler (PNDM for the paper; DDIM/DPM-Solver are faster).
    """

    def __init__(self, model: DualAnoDiffModel, vae: Any, scheduler: Any) -> None:
        self.model = model
        self.vae = vae
        self.scheduler = scheduler

    @property
    def device(self) -> torch.device:
        """Where the UNet lives."""
        return next(self.model.unet.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        whole_prompt: str,
        part_prompt: str,
        seeds: list[int],
        guidance_scale: float = 2.5,
        num_inference_steps: int = 100,
        negative_prompt: str = "",
        resolution: int | None = None,
        background: torch.Tensor | None = None,
    ) -> DualAnoDiffOutput:
        """Generate ``len(seeds)`` pairs in one batch; pair i depends only on ``seeds[i]``.

        Args:
            whole_prompt, part_prompt: the branch prompts.
            seeds: one seed per pair (its two initial latents and BCM noise).
            guidance_scale: CFG scale (1 disables the unconditional pass).
            num_inference_steps: denoising steps.
            negative_prompt: the unconditional prompt of both branches.
            resolution: pixels (default: the UNet's sample size times the VAE factor).
            background: BCM only, 3 x H x W in [-1, 1], the background condition of all pairs.
        """
        model, vae, device = self.model, self.vae, self.device
        dtype = next(model.unet.parameters()).dtype
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = (resolution or model.unet.config.sample_size * factor) // factor
        p = len(seeds)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        latents = torch.stack([torch.randn((2, 4, size, size), generator=g) for g in gens]).flatten(0, 1)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma

        cfg = guidance_scale != 1.0
        cond = model.encode_prompts([whole_prompt, part_prompt]).to(dtype).repeat(p, 1, 1)
        embeds = cond
        if cfg:
            uncond = model.encode_prompts([negative_prompt, negative_prompt]).to(dtype).repeat(p, 1, 1)
            embeds = torch.cat([uncond, cond])

        bg_latents = None
        if model.bcm:
            if background is None:
                raise ValueError("the BCM model needs a background condition image")
            bg = background[None].to(device, vae.dtype)
            images = torch.cat([torch.zeros_like(bg), bg]) if cfg else bg
            mean = vae.encode(images).latent_dist.mean.to(dtype)  # unscaled, as in training
            bg_latents = mean.repeat_interleave(p, dim=0)  # [uncond x p, cond x p]

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.scheduler.timesteps:
            x = torch.cat([latents, latents]) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            timesteps = t.expand(x.shape[0]).to(device)
            noisy_bg = None
            if bg_latents is not None:
                noise = torch.cat([torch.randn(bg_latents.shape[1:], generator=g)[None] for g in gens])
                noise = torch.cat([noise, noise]) if cfg else noise
                noisy_bg = self.scheduler_add_noise(bg_latents, noise.to(device, dtype), timesteps[::2])
            eps = model(x, timesteps, embeds, noisy_bg)
            if cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample

        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        pairs = to_uint8(decoded).reshape(p, 2, *decoded.shape[2:], 3)
        return DualAnoDiffOutput(images=pairs[:, 0], parts=pairs[:, 1])

    def scheduler_add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward-noise ``x`` to ``t`` with the training (DDPM) schedule (the BCM condition)."""
        alphas = self.scheduler.alphas_cumprod.to(x.device)[t.long()].to(x.dtype)
        a = alphas.sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas).sqrt().view(-1, 1, 1, 1)
        return a * x + s * noise

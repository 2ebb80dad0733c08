"""A fixed linear autoencoder for the offline base: pixel-unshuffle, then whitened principal components.

Offline only (Stable Diffusion brings its own VAE). The image is cut into ``factor`` x ``factor``
patches (``pixel_unshuffle``: 3 x factor² values each) and every patch is projected on the first
``latent_channels`` principal components of the patches it was fitted on, each divided by its
standard deviation there (whitened: every latent channel has unit variance, as SD's latents
roughly have; without it the last channels' signal was 1 % of the first's and the base's
samples came out speckled); decoding is the inverse. Nothing is trained:
:meth:`PatchPCAAutoencoder.fit` is one SVD.

Why: the small VAE a CPU can train in minutes blurs. Trained 1000 steps (channels 8/16/16, factor 4)
it draws brick's tilted courses as vertical stripes and erases holes and scratches, so no
fine-tune on top of it can draw a defect. Fitted on the embedded categories' normal images with
defect-like shapes painted in, the patch components (factor 4, 16 channels) reconstruct the normal
images to a mean L1 of 0.005-0.010 and the real anomalies' defect pixels to 0.03 (on [-1, 1]; the
VAE: 0.16-0.34).

It has the interface the pipeline and the trainer use of ``AutoencoderKL``: ``encode(x).latent_dist``
(deterministic: ``std`` 0), ``decode(z).sample``, ``config.scaling_factor``, ``save_pretrained`` /
``from_pretrained``, and ``downsample_factor`` (read by
:func:`~anobench.generation.dualanodiff.components.downsample_factor`).

Example:
    >>> import torch
    >>> from anobench.generation.dualanodiff.patch_autoencoder import PatchPCAAutoencoder
    >>> ae = PatchPCAAutoencoder(factor=2, latent_channels=12)  # 12 = 3 x 2 x 2: lossless
    >>> x = torch.rand(4, 3, 8, 8) * 2 - 1
    >>> _ = ae.fit(x)
    >>> z = ae.encode(x).latent_dist.mean
    >>> tuple(z.shape), bool(torch.allclose(ae.decode(z).sample, x, atol=1e-5))
    ((4, 12, 4, 4), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin


class PatchPCAAutoencoder(ModelMixin, ConfigMixin):
    """Pixel-unshuffle by ``factor``, then each patch's first ``latent_channels`` principal components."""

    @register_to_config
    def __init__(
        self, factor: int = 4, latent_channels: int = 16, in_channels: int = 3, scaling_factor: float = 1.0
    ) -> None:
        super().__init__()
        size = in_channels * factor * factor
        if not 1 <= latent_channels <= size:
            raise ValueError(f"latent_channels={latent_channels}: must be 1 to {size} (3 x factor²)")
        self.register_buffer("patch_mean", torch.zeros(size))
        self.register_buffer("components", torch.eye(size)[:latent_channels].clone())  # orthonormal rows
        self.register_buffer("scales", torch.ones(latent_channels))  # each component's std (whitening)

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel, per side."""
        return int(self.config.factor)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H/f, W/f, 3f²) patches of images (N, 3, H, W)."""
        return F.pixel_unshuffle(x, self.config.factor).permute(0, 2, 3, 1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> float:
        """Set the components to the principal ones of ``images``' patches; the variance they keep (0-1).

        A component's scale is its standard deviation over the patches, at least 1 % of the first's
        (a direction the fitting images barely use is not amplified more than 100x).
        """
        patches = self._patches(images.to(self.patch_mean)).reshape(-1, self.patch_mean.numel()).double()
        mean = patches.mean(0)
        _, singular, vt = torch.linalg.svd(patches - mean, full_matrices=False)
        k = self.config.latent_channels
        self.patch_mean.copy_(mean)
        self.components.copy_(vt[:k])
        std = singular[:k] / max(len(patches) - 1, 1) ** 0.5
        self.scales.copy_(std.clamp_min(1e-2 * std[0].clamp_min(1e-12)))
        energy = singular.square()
        return float(energy[:k].sum() / energy.sum().clamp_min(1e-30))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        """Latents (N, latent_channels, H/f, W/f) as a deterministic latent distribution."""
        z = ((self._patches(x) - self.patch_mean) @ self.components.T / self.scales).permute(0, 3, 1, 2)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], 1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Any:
        """Images (N, 3, H, W) back from latents."""
        patches = (z.permute(0, 2, 3, 1) * self.scales) @ self.components + self.patch_mean
        image = F.pixel_shuffle(patches.permute(0, 3, 1, 2), self.config.factor)
        return DecoderOutput(sample=image) if return_dict else (image,)


__all__ = ["PatchPCAAutoencoder"]

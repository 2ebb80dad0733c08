"""Offline base: small VAE + UNet trained on a category's normal images, cached on disk.

(The base *before* the dual fine-tune; the fine-tune itself is
:mod:`anobench.generation.dualanodiff.trainer`.)

Stands in for Stable Diffusion where no weights can be had. The VAE learns to reconstruct the
normal images (L1 + a small KL term), its latent scaling factor is set to 1 / std of the latents
(SD's 0.18215 comes from the same rule); then the UNet learns eps-prediction on those latents
with the prompt "a vfx" (10 % empty prompts, so classifier-free guidance has an unconditional
model). The text encoder stays at its random initialisation (the dual fine-tune trains its LoRA).

Offline-only additions. Half of every base batch are "part-like" images (prompt "a part"): Stable
Diffusion already knows such images, while a base that has seen only normal images cannot be
steered to a grey background by attention LoRA in a few hundred steps. The anomaly itself is never
shown. With ``offline_branch_labels`` (the default):

* the part-like images are defect-like shapes (blobs and strokes of random colours,
  :func:`paint_shapes`) on mid-grey, and a quarter of the normal images get such shapes painted in;
  the VAE learns them with a 10x loss weight on their pixels (a VAE trained on normal images
  only erases scratches and spots, so no fine-tune could draw them);
* the UNet has two class embeddings, added to the time embedding of every ResNet block: 0 for
  normal images, 1 for part-like ones. The dual model labels its whole branch 0 and its part
  branch 1, so each branch starts from its own half of the base: a from-scratch text encoder
  barely conditions a small UNet, and the prompts alone left whole samples grey and part samples
  whole textures;
* the fine-tune's cross-branch module starts at zero (its output layer), so the dual model starts
  as the base's two classes (released: PyTorch's default init; at this size the random full-rank
  residual turned part samples into textures).

Without it the part-like images are random blobs of a normal image on mid-grey (the ``quick``
preset's recipe). ``offline_ema`` keeps an exponential moving average of the UNet's weights
(decay warmed up as diffusers' ``EMAModel``, up to 0.999) and saves it as the base.

The result is an ordinary diffusers folder (``vae/ unet/ text_encoder/ tokenizer/ scheduler/``) in
``<cache>/base/<category>-<hash>/``, where the hash covers the architecture, the base-training
settings and the normal images' contents; a later run with the same inputs loads it instead of
training, and concurrent jobs needing the same base train it once (a file lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from anobench.generation.base import config_hash, load_rgb
from anobench.generation.cache_files import safetensors_problem
from anobench.generation.dualanodiff.components import Components, build_offline_components, load_components
from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.data import to_tensor
from anobench.generation.dualanodiff.trainer import step_generator

BASE_PROMPT = "a vfx"
PART_PROMPT = "a part"
MARKER = "base.json"
#: Bumped when the base-training recipe changes, so stale cached bases are not reused.
BASE_VERSION = 3


def base_key(config: DualAnoDiffConfig, category: str, normal_images: list[Path]) -> str:
    """Cache key of an offline base: category + architecture + training settings + image contents.

    The images enter by content (SHA-256 of their bytes, in order), not by path: the same data in
    another folder (a rebuilt synthetic dataset, a copy) reuses the base, and an edited image does not.
    Both ``dualanodiff`` and ``dualanodiff-bcm`` use it when these settings agree (BCM is not a
    base setting); each category has its own base (its own normal images).
    """
    files = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in normal_images]
    fields = (
        "resolution",
        "base_vae_steps",
        "base_unet_steps",
        "base_learning_rate",
        "base_batch_size",
        "offline_unet_channels",
        "offline_vae_channels",
        "offline_text_width",
        "offline_text_layers",
        "offline_branch_labels",
        "offline_ema",
        "flips",
        "seed",
    )
    payload = {f: getattr(config, f) for f in fields} | {"files": files, "version": BASE_VERSION}
    if config.offline_autoencoder != "vae":  # keyed only when set: bases cached before it existed stay valid
        payload["offline_autoencoder"] = config.offline_autoencoder
        patch = (config.offline_patch_factor, config.offline_patch_channels)
        if patch != (DualAnoDiffConfig.offline_patch_factor, DualAnoDiffConfig.offline_patch_channels):
            # likewise: patch bases cached before these options existed keep their keys
            payload["offline_patch"] = patch
    if config.offline_attention_heads != DualAnoDiffConfig.offline_attention_heads:  # likewise
        payload["offline_attention_heads"] = config.offline_attention_heads
    return f"{category}-{config_hash(payload)}"


def _device(config: DualAnoDiffConfig) -> torch.device:
    return torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def paint_shapes(size: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` layers of one to three defect-like shapes: colours (n x 3 x H x W in [-1, 1]) and alphas.

    Each shape is a blob (an ellipse, half-axes 2-6 % of the side) or a stroke (a segment 10-40 % of
    the side long, 2-4 % wide), in a random colour (a third of them black or white), placed anywhere.
    """
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    colour = torch.zeros(n, 3, size, size)
    alpha = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cx, cy, angle, kind, tone = torch.rand(5, generator=g).tolist()
            cx, cy = cx * size, cy * size
            dx, dy = math.cos(angle * math.pi), math.sin(angle * math.pi)
            u, v = (xx - cx) * dx + (yy - cy) * dy, -(xx - cx) * dy + (yy - cy) * dx
            a, b = (0.02 + 0.04 * torch.rand(2, generator=g)) * size
            if kind < 0.5:
                inside = (u / a) ** 2 + (v / b) ** 2 <= 1
            else:
                half = (0.05 + 0.15 * torch.rand(1, generator=g).item()) * size
                inside = (u.abs() <= half) & (v.abs() <= max(0.6, 0.01 * size * (1 + tone)))
            if tone > 1 / 3:
                rgb = torch.rand(3, generator=g) * 2 - 1
            else:
                rgb = torch.full((3,), 1.0 if tone > 1 / 6 else -1.0)
            colour[i] = torch.where(inside, rgb[:, None, None], colour[i])
            alpha[i] = torch.where(inside, 1.0, alpha[i])
    return colour, alpha


def _augment(
    images: torch.Tensor, g: torch.Generator, flips: bool, shapes: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Flipped images with the second half part-like; the part-like flags; a per-pixel loss weight.

    ``shapes``: part-like = painted shapes on mid-grey, a quarter of the others with shapes painted
    in, weight 10 on the shapes' pixels; else part-like = random blobs of the image on mid-grey
    and no weight (None).
    """
    out = []
    for im in images:
        h, v = (torch.rand(2, generator=g) < 0.5).tolist() if flips else (False, False)
        dims = [d for d, f in ((2, h), (1, v)) if f]
        out.append(im.flip(dims) if dims else im)
    x = torch.stack(out)
    n, size = len(x), x.shape[-1]
    part = torch.arange(n) >= n // 2
    if not shapes:
        blobs = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(size, size), mode="bicubic")
        return torch.where(part[:, None, None, None], x * (blobs > 0.8).float(), x), part, None
    colour, alpha = paint_shapes(size, n, g)
    alpha = alpha * (torch.arange(n) >= n // 4)[:, None, None, None]
    x = torch.where(part[:, None, None, None], 0.0, x)
    return x * (1 - alpha) + colour * alpha, part, 1 + 9 * alpha


def untrained_base(config: DualAnoDiffConfig) -> Components:
    """The small models of ``config``'s offline architecture, randomly initialised (seed ``config.seed``)."""
    return build_offline_components(
        config.resolution,
        config.offline_unet_channels,
        config.offline_vae_channels,
        config.offline_text_width,
        config.offline_text_layers,
        seed=config.seed,
        branch_labels=config.offline_branch_labels,
        autoencoder=config.offline_autoencoder,
        patch=(config.offline_patch_factor, config.offline_patch_channels),
        attention_heads=config.offline_attention_heads,
    )


def _train_vae(
    config: DualAnoDiffConfig, vae: Any, images: torch.Tensor, device: torch.device, progress: bool
) -> None:
    """``base_vae_steps`` steps of L1 + MSE reconstruction (10x on painted shapes) + a small KL term."""
    n, bs, shapes = len(images), config.base_batch_size, config.offline_branch_labels
    opt = torch.optim.AdamW(vae.parameters(), lr=config.base_learning_rate, weight_decay=0.0, fused=True)
    vae.train()
    for step in tqdm(
        range(config.base_vae_steps), desc="offline base: VAE", leave=False, disable=not progress
    ):
        g = step_generator(config.seed, step)
        x, _, weight = _augment(images[torch.randint(n, (bs,), generator=g)], g, config.flips, shapes)
        x = x.to(device)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(device)
        recon = vae.decode(z).sample
        if weight is None:
            loss = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        else:
            err = recon - x
            loss = (weight.to(device) * (err.abs() + err**2)).mean()
        loss = loss + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def fit_autoencoder(config: DualAnoDiffConfig, vae: Any, images: torch.Tensor, progress: bool = True) -> None:
    """Train (``vae``) or fit (``patch-pca``) the base's autoencoder on ``images`` (N, 3, H, W in [-1, 1]).

    Either sees the images as the UNet will: flipped, half of them part-like, shapes painted in.
    Then sets ``scaling_factor`` to 1 / std of the images' latents (SD's 0.18215 comes from that rule).
    """
    device = vae.device
    if config.offline_autoencoder == "patch-pca":
        shapes = config.offline_branch_labels
        augmented = [
            _augment(images, step_generator(config.seed, r), config.flips, shapes)[0] for r in range(4)
        ]
        vae.fit(torch.cat(augmented).to(device))
    else:
        _train_vae(config, vae, images, device, progress)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(images[i : i + 32].to(device)).latent_dist.mean for i in range(0, len(images), 32)]
        )
        vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))


def train_base(config: DualAnoDiffConfig, normal_images: list[Path], progress: bool = True) -> Components:
    """Build the small models, train (or fit) the autoencoder, then train the UNet, on ``normal_images``."""
    from diffusers import DDPMScheduler

    device = _device(config)
    parts = untrained_base(config)
    shapes = config.offline_branch_labels
    images = torch.stack([to_tensor(load_rgb(p, config.resolution)) for p in normal_images])
    n, bs = len(images), config.base_batch_size
    vae, unet, text = parts.vae.to(device), parts.unet.to(device), parts.text_encoder.to(device)
    text.requires_grad_(False)

    fit_autoencoder(config, vae, images, progress)

    tok = parts.tokenizer
    ids = tok(
        [BASE_PROMPT, PART_PROMPT, ""],
        padding="max_length",
        max_length=tok.model_max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        cond, part_cond, uncond = text(ids.input_ids.to(device))[0]
    noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.base_learning_rate, weight_decay=1e-2, fused=True)
    ema = [p.detach().clone() for p in unet.parameters()] if config.offline_ema else None
    unet.train()
    for step in tqdm(
        range(config.base_unet_steps), desc="offline base: UNet", leave=False, disable=not progress
    ):
        g = step_generator(config.seed + 1, step)
        x, part, _ = _augment(images[torch.randint(n, (bs,), generator=g)], g, config.flips, shapes)
        x, part = x.to(device), part.to(device)[:, None, None]
        with torch.no_grad():
            dist = vae.encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(device)
            z = z * vae.config.scaling_factor
        noise = torch.randn(z.shape, generator=g).to(device)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,), generator=g).to(device)
        drop = (torch.rand(bs, generator=g) < 0.1).to(device)[:, None, None]
        embeds = torch.where(drop, uncond, torch.where(part, part_cond, cond))
        labels = part.flatten().long() if shapes else None
        pred = unet(noise_scheduler.add_noise(z, noise, t), t, embeds, class_labels=labels).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if ema is not None:  # decay warmed up as diffusers' EMAModel: (1 + k) / (10 + k), at most 0.999
            with torch.no_grad():
                torch._foreach_lerp_(ema, list(unet.parameters()), 1 - min(0.999, (1 + step) / (10 + step)))
    if ema is not None:
        with torch.no_grad():
            torch._foreach_copy_(list(unet.parameters()), ema)
    unet.eval().requires_grad_(False)
    for module in (vae, unet, text):
        module.to("cpu")
    return parts


def offline_base(
    config: DualAnoDiffConfig,
    category: str,
    normal_images: list[Path],
    cache_dir: Path,
    progress: bool = True,
) -> Path:
    """The cached offline base folder of ``category``, trained first when absent."""
    from anobench.generation.errors import GenerationInputError

    config = config.for_category(category)  # unset flips: as released for the category

    if not normal_images:
        raise GenerationInputError(
            f"category {category!r}: the offline mode trains its base on normal images, and there are none "
            "(train/good is empty); give pretrained_model_name_or_path instead"
        )
    folder = cache_dir / "base" / base_key(config, category, normal_images)
    if _usable(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one trainer per base: a concurrent job (e.g. dualanodiff-bcm next to dualanodiff) waits and reuses it
    with open(folder.with_name(f".{folder.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(folder):
            _train_and_save(config, category, normal_images, folder, progress)
    return folder


def _usable(folder: Path) -> bool:
    """A complete cached base: its marker written and no truncated ``.safetensors`` (said, then retrained)."""
    if not (folder / MARKER).exists():
        return False
    broken = [p for f in sorted(folder.rglob("*.safetensors")) if (p := safetensors_problem(f))]
    if broken:
        print(f"{broken[0]}; retraining the cached offline base", file=sys.stderr)
    return not broken


def _train_and_save(
    config: DualAnoDiffConfig, category: str, normal_images: list[Path], folder: Path, progress: bool
) -> None:
    parts = train_base(config, normal_images, progress)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    parts.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"category": category, "normal_images": len(normal_images)}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_base(folder: Path) -> Components:
    """Load a cached base (same code path as a pretrained model folder)."""
    return load_components(folder)


__all__ = [
    "base_key",
    "fit_autoencoder",
    "load_base",
    "offline_base",
    "paint_shapes",
    "train_base",
    "untrained_base",
]

"""The frozen base (:class:`Components`): loaded from a diffusers folder / hub id, or built from configs.

The UNet and text encoder come as ``DualBranchUNet2DConditionModel`` and ``LoRACLIPTextModel``
(:mod:`anobench.generation.dualanodiff.dual_unet`; ordinary models until adapters are installed).
Also here: the sampling schedulers and the SD 1.5 architecture.

Both base modes end in the same :class:`Components`: in offline mode the small models are built
here, trained on the category's normal images (:mod:`anobench.generation.dualanodiff.offline_base`)
and saved as an ordinary diffusers folder, which is then loaded exactly like Stable Diffusion.

Example:
    >>> from anobench.generation.dualanodiff.components import build_offline_components
    >>> parts = build_offline_components(resolution=32, unet_channels=(16, 32), vae_channels=(16, 32),
    ...                                  text_width=16, text_layers=1, seed=0)
    >>> parts.unet.config.cross_attention_dim
    16
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anobench.generation.dualanodiff.config import AUTOENCODERS

#: Rare tokens: the whole/part prompts use "vfx" and "sks"; per-category models give each defect
#: type its own token (in this order, by sorted defect name).
RARE_TOKENS = ("sks", "ohwx", "zqv", "bnjk", "xkcd", "pqtr", "wmfg", "dvlz", "kjyq", "hzxt")
SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


@contextlib.contextmanager
def quiet_hub_bars() -> Iterator[None]:
    """Hide transformers' per-file load/save bars (noise for small local models), then restore them."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass
class Components:
    """What a DualAnoDiff model is made of (the frozen base; adapters are installed on top)."""

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]

    def save_pretrained(self, path: str | Path) -> None:
        """Write a diffusers-layout folder (safetensors weights, JSON configs)."""
        from diffusers import DDPMScheduler

        path = Path(path)
        with quiet_hub_bars():
            self.vae.save_pretrained(path / "vae")
            self.unet.save_pretrained(path / "unet")
            self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        DDPMScheduler.from_config(self.scheduler_config).save_pretrained(path / "scheduler")


def load_components(name_or_path: str | Path, dtype: torch.dtype = torch.float32) -> Components:
    """Load vae/unet/text_encoder/tokenizer/scheduler from a diffusers folder or a hub id (e.g. SD 1.5).

    Raises:
        GenerationInputError: the folder lacks a sub-folder, or the hub id cannot be resolved offline.
    """
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    from anobench.generation.dualanodiff.dual_unet import DualBranchUNet2DConditionModel, LoRACLIPTextModel
    from anobench.generation.errors import GenerationInputError

    source = str(name_or_path)
    local = Path(source).expanduser()
    if local.is_dir():
        missing = [s for s in SUBFOLDERS if not (local / s).is_dir()]
        if missing:
            raise GenerationInputError(
                f"{local}: not a diffusers model folder, missing sub-folder(s) {', '.join(missing)} "
                "(expected the Stable Diffusion layout: vae/ unet/ text_encoder/ tokenizer/ scheduler/)"
            )
        source = str(local)
    try:
        kw = {"torch_dtype": dtype}
        quiet = quiet_hub_bars() if local.is_dir() else contextlib.nullcontext()
        with quiet:  # local folders load in moments; keep the bars for hub downloads
            return Components(
                vae=_vae_class(local).from_pretrained(source, subfolder="vae", **kw),
                unet=DualBranchUNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw),
                text_encoder=LoRACLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw),
                tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
                scheduler_config=dict(DDPMScheduler.from_pretrained(source, subfolder="scheduler").config),
            )
    except OSError as exc:
        raise GenerationInputError(
            f"pretrained_model_name_or_path={source!r}: cannot load it ({str(exc).splitlines()[0]}); give a "
            "local diffusers folder, or a hub id with network access (unset HF_HUB_OFFLINE), or None for "
            "the offline mode"
        ) from None


def downsample_factor(vae: Any) -> int:
    """How many image pixels one latent pixel spans, per side (``AutoencoderKL`` or the patch autoencoder)."""
    factor = getattr(vae, "downsample_factor", None)
    return int(factor) if factor else 2 ** (len(vae.config.block_out_channels) - 1)


def _vae_class(local: Path) -> Any:
    """``AutoencoderKL``, or the offline ``PatchPCAAutoencoder`` where a local folder's config names it."""
    import json

    from diffusers import AutoencoderKL

    from anobench.generation.dualanodiff.patch_autoencoder import PatchPCAAutoencoder

    config = local / "vae" / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("_class_name") == PatchPCAAutoencoder.__name__:
        return PatchPCAAutoencoder
    return AutoencoderKL


def build_tokenizer(words: list[str] | tuple[str, ...] = ()) -> Any:
    """A CLIP BPE tokenizer built in memory: all bytes plus one token per word in ``words``.

    Any text tokenizes (unknown words fall back to bytes); the given words are single tokens, so
    the prompts of the offline models behave like rare tokens of the real CLIP vocabulary.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = ["<|startoftext|>", "<|endoftext|>", *byte_chars, *(c + "</w>" for c in byte_chars)]
    merges: list[tuple[str, str]] = []
    for word in sorted({w for text in words for w in text.lower().split()}):
        symbols = [*word[:-1], word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            merged = left + right
            if merged not in vocab:
                vocab.append(merged)
                merges.append((left, right))
            left = merged
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)


def build_offline_components(
    resolution: int,
    unet_channels: tuple[int, ...] = (32, 64, 64),
    vae_channels: tuple[int, ...] = (32, 64, 64),
    text_width: int = 64,
    text_layers: int = 2,
    words: tuple[str, ...] = ("a vfx with part", *RARE_TOKENS),
    seed: int = 0,
    branch_labels: bool = False,
    autoencoder: str = "vae",
    patch: tuple[int, int] = (4, 16),
    attention_heads: int = 8,
) -> Components:
    """Small randomly initialised UNet/VAE/CLIP text encoder + tokenizer (the offline base, untrained).

    The VAE downsamples ``len(vae_channels) - 1`` times. Unlike SD 1.5 (no attention at the deepest
    level) every UNet block has attention: in a net this small the per-branch LoRA and the
    cross-branch module would otherwise reach only one resolution. The noise schedule is SD 1.5's
    (scaled linear, 0.00085 -> 0.012, 1000 steps). ``branch_labels``: two class embeddings, the
    dual model's branch (0 whole, 1 part; :func:`~anobench.generation.dualanodiff.dual_unet.branch_labels`).
    ``autoencoder``: ``"vae"`` (an ``AutoencoderKL`` of ``vae_channels``, 4 latent channels) or
    ``"patch-pca"`` (:class:`~anobench.generation.dualanodiff.patch_autoencoder.PatchPCAAutoencoder`
    of ``patch`` = (factor, latent channels), to be fitted; ``vae_channels`` unused).
    ``attention_heads``: heads of every UNet attention layer (must divide every ``unet_channels`` entry).
    """
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig

    from anobench.generation.dualanodiff.dual_unet import DualBranchUNet2DConditionModel, LoRACLIPTextModel
    from anobench.generation.dualanodiff.patch_autoencoder import PatchPCAAutoencoder

    if autoencoder not in AUTOENCODERS:
        raise ValueError(f"autoencoder={autoencoder!r}: choose one of {', '.join(AUTOENCODERS)}")
    torch.manual_seed(seed)
    groups = min(8, min(vae_channels), min(unet_channels))
    tokenizer = build_tokenizer(list(words))
    text_encoder = LoRACLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_width,
            intermediate_size=4 * text_width,
            num_hidden_layers=text_layers,
            num_attention_heads=max(1, text_width // 32),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    if autoencoder == "patch-pca":
        vae = PatchPCAAutoencoder(factor=patch[0], latent_channels=patch[1])
    else:
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
            block_out_channels=tuple(vae_channels),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=groups,
            sample_size=resolution,
        )
    latent = resolution // downsample_factor(vae)
    channels = vae.config.latent_channels
    n = len(unet_channels)
    unet = DualBranchUNet2DConditionModel(
        sample_size=latent,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        layers_per_block=1,
        cross_attention_dim=text_width,
        attention_head_dim=attention_heads,  # diffusers' name; it sets the number of heads
        norm_num_groups=groups,
        num_class_embeds=2 if branch_labels else None,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return Components(vae, unet, text_encoder, tokenizer, dict(scheduler.config))


def sd15_configs() -> dict[str, dict[str, Any]]:
    """The Stable Diffusion 1.5 architecture (UNet, VAE, CLIP ViT-L/14 text) as constructor kwargs.

    Used by the speed benchmark to build the real-size model with random weights (speed does not
    need the weights).
    """
    return {
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 512,
            "scaling_factor": 0.18215,
        },
        "text": {
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
        },
    }


def sampling_scheduler(name: str, scheduler_config: dict[str, Any]) -> Any:
    """The sampling scheduler ``name`` (pndm, ddim, dpm) built from the training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    from anobench.generation.errors import GenerationInputError

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    if name == "pndm":  # the SD 1.5 default (skip_prk_steps, steps_offset 1), used by the paper
        return PNDMScheduler.from_config({**config, "skip_prk_steps": True, "steps_offset": 1})
    if name == "ddim":
        return DDIMScheduler.from_config({**config, "steps_offset": 1, "clip_sample": False})
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(config)
    raise GenerationInputError(f"scheduler={name!r}: unknown; choose pndm (paper), ddim or dpm")

"""Every DualAnoDiff setting, with the released code's values as defaults (the paper preset).

A light module (no torch import): the registry imports it to list the generator's options.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Any

from anobench.generation.base import GeneratorConfig

SCHEDULERS = ("pndm", "ddim", "dpm")
GRANULARITIES = ("defect", "category")
MASK_EXTRACTORS = ("threshold", "u2net")
MIXED_PRECISION = ("no", "fp16", "bf16")
#: The offline base's autoencoders (``offline_autoencoder``).
AUTOENCODERS = ("vae", "patch-pca")

#: Values of the fields left unset (None), per variant (False: plain, True: BCM), as the released
#: scripts: ``run_mvtec_split.py`` / ``inference_mvtec_split.py`` (plain) and
#: ``run_mvtec_split_background_control_scale.py`` / ``inference_test_tempt.py`` (BCM).
RELEASED_DEFAULTS: dict[bool, dict[str, Any]] = {
    False: {"train_batch_size": 4, "guidance_scale": 2.5, "num_inference_steps": 100, "flips": True},
    True: {"train_batch_size": 2, "guidance_scale": 2.0, "num_inference_steps": 50, "flips": True},
}
#: Per-category overrides of :data:`RELEASED_DEFAULTS` (also for unset fields only). Plain ``cable``:
#: no flips, the intent of the released dataset code (whose check reads the wrong variable, so the
#: release flips cable anyway; the BCM script has no such check). BCM ``screw``: guidance 1.2 and a
#: new background every 10 images (``inference_test_tempt.py``).
CATEGORY_DEFAULTS: dict[bool, dict[str, dict[str, Any]]] = {
    False: {"cable": {"flips": False}},
    True: {"screw": {"guidance_scale": 1.2, "background_every": 10}},
}
#: The offline recipe's ``mask_loss_weight`` (README, "Offline DualAnoDiff quality").
OFFLINE_MASK_LOSS_WEIGHT = 10.0
#: Fields whose None means "the released value for this variant and category".
CATEGORY_FIELDS = ("train_batch_size", "guidance_scale", "num_inference_steps", "flips", "background_every")


@dataclass
class DualAnoDiffConfig(GeneratorConfig):
    """DualAnoDiff options; defaults reproduce the released code (SD 1.5, 512 px, 5000 steps).

    Attributes:
        pretrained_model_name_or_path: local diffusers folder or hub id (SD 1.5:
            ``stable-diffusion-v1-5/stable-diffusion-v1-5``); None or "offline" builds small
            models from configs and trains their base on the category's normal images first.
        resolution: training and sampling resolution (pixels, square).
        train_batch_size: pairs per step (None: 4 plain, 2 BCM, as released).
        learning_rate, lr_scheduler, lr_warmup_steps, adam_weight_decay, max_grad_norm,
            max_train_steps: the optimiser (AdamW).
        rank: LoRA rank of each branch and of the text encoder.
        train_text_encoder: train the shared text-encoder LoRA.
        coupling: the cross-branch module (False: the no-SAIM ablation).
        bcm: background compensation (the ``dualanodiff-bcm`` variant).
        whole_prompt, part_prompt: the nested prompts; ``sks`` is replaced by the defect's own
            rare token when ``granularity == "category"``.
        granularity: ``defect`` (one model per defect type, the reference) or ``category``
            (one model per category, one rare token per defect type).
        flips: random horizontal + vertical flips (same for image and mask); None: as released
            (on, except plain ``cable``).
        checkpointing_steps: save a resumable checkpoint every so many steps (0: never).
        gradient_checkpointing, mixed_precision: memory/speed options of the trainer.
        gradient_accumulation_steps: micro-batches of ``train_batch_size`` pairs per optimiser step
            (1: one batch per step, as released).
        use_8bit_adam: bitsandbytes' ``AdamW8bit`` instead of AdamW (needs bitsandbytes).
        seed: training seed (32 in the released script).
        guidance_scale, num_inference_steps, scheduler, sample_batch_size: sampling (pairs per
            UNet batch); None: as released (plain 2.5 / 100, BCM 2.0 / 50, BCM screw 1.2), PNDM.
        background_every: BCM sampling switches the background condition every so many images
            (None: 50, screw 10, as released).
        mask_extractor: ``threshold`` (distance from mid-grey) or ``u2net`` (needs u2net_weights).
        u2net_weights: the official ``u2net.pth`` / ``u2netp.pth`` (or a ``.safetensors`` copy).
        u2net_threshold: U2-Net masks keep normalised saliency > this (0.5 as released).
        mask_threshold: threshold on the part image's max |channel| in [-1, 1] (mid-grey = 0).
        mask_min_area: connected components smaller than this fraction of the image are dropped.
        base_vae_steps, base_unet_steps, base_learning_rate, base_batch_size: offline base training.
        offline_unet_channels, offline_vae_channels, offline_text_width, offline_text_layers:
            the small offline architecture.
        offline_attention_heads: attention heads of every offline UNet attention layer (diffusers'
            ``attention_head_dim``, which sets the number of heads; it must divide every entry of
            ``offline_unet_channels``). Fewer heads, fewer attention maps: on CPU the attention of the
            small UNet is softmax-bound (README, "Running the benchmark grid").
        offline_branch_labels: the offline base learns defect-like shapes and labels each image
            whole or part (a class embedding the dual model sets per branch), and the fine-tune's
            cross-branch module starts at zero (``offline_base``'s docstring); False: the earlier
            recipe (texture blobs as part-like images, no labels, the released init).
        offline_ema: save the offline base UNet's EMA weights.
        offline_autoencoder: the offline base's autoencoder: ``vae`` (a small ``AutoencoderKL`` of
            ``offline_vae_channels`` trained ``base_vae_steps`` steps) or ``patch-pca`` (a fixed
            linear one, 4 x 4 patches on their 16 principal components, fitted in one SVD:
            :mod:`~anobench.generation.dualanodiff.patch_autoencoder`).
        offline_patch_factor, offline_patch_channels: ``patch-pca``'s patch side and latent channels
            (4 and 16: a 64 px image becomes 16 channels of 16 x 16; at 128 px, 8 and 32 give the
            UNet the same 16 x 16 grid and keep the defects, README "Offline DualAnoDiff quality").
        mask_loss_weight: not in the release (0 = its plain MSE): the fine-tune's error under the
            anomaly mask counts ``1 + mask_loss_weight`` times (``trainer.dual_loss``). None: 10 for
            the offline recipe (offline with ``offline_branch_labels``), else 0 as released.
        cache_dir: where offline bases and trained adapters are cached (None: ~/.cache/anobench).
        device: torch device for fit/sample (None: CUDA when available, else CPU).
    """

    pretrained_model_name_or_path: str | None = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    resolution: int = 512
    train_batch_size: int | None = None
    learning_rate: float = 2e-5
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    max_train_steps: int = 5000
    rank: int = 32
    train_text_encoder: bool = True
    coupling: bool = True
    bcm: bool = False
    bcm_hidden: int = 320
    whole_prompt: str = "a vfx with sks"
    part_prompt: str = "sks"
    negative_prompt: str = ""
    granularity: str = "defect"
    flips: bool | None = None
    checkpointing_steps: int = 1000
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    use_8bit_adam: bool = False
    seed: int = 32
    guidance_scale: float | None = None
    num_inference_steps: int | None = None
    background_every: int | None = None
    scheduler: str = "pndm"
    sample_batch_size: int = 4
    mask_extractor: str = "threshold"
    u2net_weights: str | None = None
    u2net_threshold: float = 0.5
    mask_threshold: float = 0.2
    mask_min_area: float = 0.0005
    base_vae_steps: int = 2000
    base_unet_steps: int = 10000
    base_learning_rate: float = 1e-3
    base_batch_size: int = 16
    offline_unet_channels: tuple[int, ...] = (64, 128, 256)
    offline_vae_channels: tuple[int, ...] = (64, 128, 128)
    offline_text_width: int = 128
    offline_text_layers: int = 4
    offline_attention_heads: int = 8
    offline_branch_labels: bool = True
    offline_ema: bool = True
    offline_autoencoder: str = "vae"
    offline_patch_factor: int = 4
    offline_patch_channels: int = 16
    mask_loss_weight: float | None = None
    cache_dir: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        from anobench.generation.errors import GenerationInputError

        self.offline_unet_channels = tuple(self.offline_unet_channels)
        self.offline_vae_channels = tuple(self.offline_vae_channels)
        problems = []
        for name, allowed in (
            ("scheduler", SCHEDULERS),
            ("granularity", GRANULARITIES),
            ("mask_extractor", MASK_EXTRACTORS),
            ("mixed_precision", MIXED_PRECISION),
            ("offline_autoencoder", AUTOENCODERS),
        ):
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        for name in (
            "resolution",
            "train_batch_size",
            "max_train_steps",
            "rank",
            "num_inference_steps",
            "background_every",
            "gradient_accumulation_steps",
            "offline_patch_factor",
            "offline_patch_channels",
            "offline_attention_heads",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: must be at least 1")
        heads = self.offline_attention_heads
        if heads >= 1 and any(c % heads for c in self.offline_unet_channels):
            problems.append(
                f"offline_attention_heads={heads}: must divide every offline_unet_channels entry "
                f"{list(self.offline_unet_channels)}"
            )
        if self.mask_loss_weight is None:
            recipe = self.offline and self.offline_branch_labels
            self.mask_loss_weight = OFFLINE_MASK_LOSS_WEIGHT if recipe else 0.0
        if self.mask_loss_weight < 0:
            problems.append(f"mask_loss_weight={self.mask_loss_weight}: must be at least 0")
        if self.resolution % 8:
            problems.append(f"resolution={self.resolution}: must be a multiple of 8")
        patch_values = 3 * self.offline_patch_factor**2
        patch = self.offline_autoencoder == "patch-pca" and self.offline_patch_factor >= 1
        if patch and self.offline_patch_channels > patch_values:
            problems.append(
                f"offline_patch_channels={self.offline_patch_channels}: a patch of "
                f"{self.offline_patch_factor} x {self.offline_patch_factor} pixels has {patch_values} values"
            )
        if patch and self.resolution % self.offline_patch_factor:
            problems.append(
                f"resolution={self.resolution}: must be a multiple of "
                f"offline_patch_factor={self.offline_patch_factor}"
            )
        if not 0 <= self.u2net_threshold < 1:
            problems.append(f"u2net_threshold={self.u2net_threshold}: must be in [0, 1)")
        if self.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
            problems.append("use_8bit_adam=True needs bitsandbytes (pip install bitsandbytes)")
        if self.mask_extractor == "u2net" and not self.u2net_weights:
            problems.append("mask_extractor='u2net' needs u2net_weights=PATH (the u2net.pth file)")
        if problems:
            raise GenerationInputError(*problems)

    def for_category(self, category: str) -> DualAnoDiffConfig:
        """A copy with every unset (None) :data:`CATEGORY_FIELDS` entry filled as released.

        Example:
            >>> cfg = DualAnoDiffBCMConfig().for_category("screw")
            >>> cfg.guidance_scale, cfg.num_inference_steps, cfg.background_every, cfg.train_batch_size
            (1.2, 50, 10, 2)
            >>> DualAnoDiffConfig(guidance_scale=3.0).for_category("screw").guidance_scale
            3.0
        """
        values = {"background_every": 50, **RELEASED_DEFAULTS[self.bcm]}
        values |= CATEGORY_DEFAULTS[self.bcm].get(category, {})
        unset = {k: values[k] for k in CATEGORY_FIELDS if getattr(self, k) is None}
        return replace(self, **unset)

    @property
    def offline(self) -> bool:
        """True when the small models are built and trained locally."""
        return self.pretrained_model_name_or_path in (None, "", "offline")

    @property
    def smoke_size(self) -> bool:
        """Offline mode: small models trained from scratch in minutes stand in for Stable Diffusion.

        Measured on the embedded dataset, no offline recipe yet reaches the few real anomalies'
        downstream scores (README, "Offline DualAnoDiff quality"), so its rows are marked.
        """
        return self.offline


@dataclass
class DualAnoDiffBCMConfig(DualAnoDiffConfig):
    """The ``dualanodiff-bcm`` defaults: background compensation on."""

    bcm: bool = True

"""``dualanodiff`` and ``dualanodiff-bcm``: the generators the benchmark runs.

``fit`` trains one model per (category, defect type) (``granularity="defect"``, the reference) or
one per category with a rare token per defect type (``"category"``); in offline mode it first
builds/loads the category's base. Trained adapters are cached under
``<cache>/adapters/<category>-<unit>-<hash>/`` (the hash covers the config, the base and the
few-shot files), so a repeated or interrupted run reuses or resumes them. ``sample`` batches the
pairs, seeds pair i with :func:`anobench.generation.base.pair_seed` and extracts the mask from the part.

Heavy libraries (torch, diffusers, transformers) are imported inside the methods: importing the
registry stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from anobench.generation.base import FewShotSet, GeneratedPair, Generator, config_hash, pair_seed
from anobench.generation.dualanodiff.config import DualAnoDiffBCMConfig, DualAnoDiffConfig
from anobench.generation.registry import register_generator

ALL_DEFECTS = "_all"


def default_cache_dir() -> Path:
    """``$ANOBENCH_CACHE`` or ``~/.cache/anobench``, plus ``dualanodiff``."""
    return Path(os.environ.get("ANOBENCH_CACHE", Path.home() / ".cache" / "anobench")) / "dualanodiff"


@register_generator("dualanodiff")
class DualAnoDiff(Generator):
    """Dual-interrelated diffusion (DualAnoDiff, CVPR 2025) as the released code does it.

    Example:
        >>> from anobench.generation import create_generator
        >>> gen = create_generator("dualanodiff", pretrained_model_name_or_path=None, resolution=32)
        >>> gen.config.offline
        True
    """

    Config: ClassVar[type[DualAnoDiffConfig]] = DualAnoDiffConfig
    writes_fg: ClassVar[bool] = True
    #: A tiny offline model and 2 steps everywhere: fit + a few pairs in seconds on a CPU.
    smoke_options: ClassVar[dict[str, Any]] = {
        "pretrained_model_name_or_path": None,
        "resolution": 32,
        "granularity": "category",
        "max_train_steps": 2,
        "train_batch_size": 2,
        "rank": 2,
        "base_vae_steps": 2,
        "base_unet_steps": 2,
        "base_batch_size": 2,
        "offline_unet_channels": (16, 32),
        "offline_vae_channels": (16, 32),
        "offline_text_width": 16,
        "offline_text_layers": 1,
        "bcm_hidden": 16,
        "num_inference_steps": 2,
        "scheduler": "ddim",
        "checkpointing_steps": 0,
        "device": "cpu",
    }

    def __init__(self, config: DualAnoDiffConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._units: dict[str, Path] = {}  # unit name -> adapter folder
        self._base: Path | str | None = None
        self._loaded: tuple[str, Any] | None = None  # (unit, pipeline) of the last sampled unit

    # ---- training -------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """Where bases and adapters are cached."""
        return Path(self.config.cache_dir).expanduser() if self.config.cache_dir else default_cache_dir()

    def prompts_for(self, defect: str) -> tuple[str, str]:
        """(whole, part) prompts of ``defect`` (per-category models: the defect's own rare token)."""
        from anobench.generation.dualanodiff.components import RARE_TOKENS

        cfg = self.config
        if cfg.granularity == "defect":
            return cfg.whole_prompt, cfg.part_prompt
        defects = self._require_fit().defects
        token = RARE_TOKENS[defects.index(defect) % len(RARE_TOKENS)]
        return cfg.whole_prompt.replace("sks", token), cfg.part_prompt.replace("sks", token)

    @property
    def cfg(self) -> DualAnoDiffConfig:
        """The config with its unset fields filled for the fitted category (``for_category``)."""
        return self.config.for_category(self._require_fit().category)

    def _unit_of(self, defect: str) -> str:
        return defect if self.config.granularity == "defect" else ALL_DEFECTS

    def fit(self, fewshot: FewShotSet, progress: bool | None = None) -> None:
        """Train (or reuse from the cache) the base and one adapter set per unit.

        ``progress`` None follows :attr:`show_progress`.
        """
        from anobench.generation.dualanodiff.data import load_pair_data
        from anobench.generation.errors import GenerationInputError

        progress = self.show_progress if progress is None else progress
        empty = [d for d, pairs in fewshot.anomalies.items() if not pairs]
        if empty or not fewshot.anomalies:
            raise GenerationInputError(
                f"category {fewshot.category!r}: no few-shot anomalies for "
                f"{', '.join(empty) or 'any defect'}; "
                "DualAnoDiff needs at least one (image, mask) pair per defect type"
            )
        self.fewshot = fewshot
        cfg = self.cfg
        if cfg.offline:
            from anobench.generation.dualanodiff.offline_base import offline_base

            self._base = offline_base(cfg, fewshot.category, fewshot.normal_images, self.cache_dir, progress)
        else:
            self._base = cfg.pretrained_model_name_or_path
        colour = self._background_colour() if cfg.bcm and not cfg.u2net_weights else None
        units: dict[str, list[str]] = {}
        for defect in fewshot.defects:
            units.setdefault(self._unit_of(defect), []).append(defect)
        for unit, defects in units.items():
            samples = [(i, m, self.prompts_for(d)) for d in defects for i, m in fewshot.anomalies[d]]
            folder = self.cache_dir / "adapters" / f"{fewshot.category}-{unit}-{self._unit_hash(samples)}"
            if not (folder / "weights.safetensors").exists():
                from anobench.generation.dualanodiff.trainer import train_dual

                data = load_pair_data(samples, cfg.resolution, colour, cfg.bcm, self._saliency())
                train_dual(self._components(), data, cfg, folder, resume="latest", progress=progress)
            self._units[unit] = folder
        self._loaded = None

    def _unit_hash(self, samples: list[tuple[Path, Path, tuple[str, str]]]) -> str:
        sampling = {
            "guidance_scale",
            "num_inference_steps",
            "background_every",
            "scheduler",
            "sample_batch_size",
            "mask_extractor",
            "u2net_weights",
            "u2net_threshold",
            "mask_threshold",
            "mask_min_area",
            "image_size",
            "device",
            "cache_dir",
        }
        if self.cfg.bcm and self.cfg.u2net_weights:
            sampling.discard("u2net_weights")  # U2-Net makes the BCM training backgrounds
        training = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in sampling}
        files = [(str(i), str(m), p, Path(i).stat().st_size) for i, m, p in samples]
        return config_hash({"config": training, "base": str(self._base), "files": files})

    def _components(self):
        from anobench.generation.dualanodiff.components import load_components

        return load_components(self._base)

    def _saliency(self):
        """U2-Net saliency of BCM backgrounds when ``u2net_weights`` is set (the release), else None."""
        cfg = self.cfg
        if not (cfg.bcm and cfg.u2net_weights):
            return None
        from anobench.generation.dualanodiff.masks import U2NetMaskExtractor

        return U2NetMaskExtractor(cfg.u2net_weights, device=cfg.device).saliency

    def _background_colour(self):
        from anobench.generation.dualanodiff.data import estimate_background_colour

        fewshot = self._require_fit()
        if fewshot.is_object is False or not fewshot.normal_images:
            return None  # textures: the whole image is background
        return estimate_background_colour(fewshot.normal_images, self.config.resolution)

    # ---- sampling -------------------------------------------------------------------------
    def _pipeline(self, unit: str):
        import torch

        from anobench.generation.dualanodiff.components import sampling_scheduler
        from anobench.generation.dualanodiff.dual_unet import DualAnoDiffModel
        from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline

        if self._loaded is not None and self._loaded[0] == unit:
            return self._loaded[1]
        cfg = self.cfg
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        parts = self._components()
        model = DualAnoDiffModel(
            parts, cfg.rank, cfg.coupling, cfg.bcm, cfg.train_text_encoder, cfg.bcm_hidden
        )
        model.to(device)
        model.load_trainable(self._units[unit] / "weights.safetensors")
        model.eval()
        scheduler = sampling_scheduler(cfg.scheduler, parts.scheduler_config)
        pipe = DualAnoDiffPipeline.from_model(model, parts.vae.to(device), scheduler)
        pipe.set_progress_bar_config(disable=True)
        pipe.fuse_cross_branch()  # sampling only from here on
        self._loaded = (unit, pipe)
        return pipe

    def pipeline(self, defect: str):
        """The :class:`~anobench.generation.dualanodiff.pipeline.DualAnoDiffPipeline` of ``defect``'s model.

        Call :meth:`fit` (or :meth:`load`) first; ``save_pretrained`` writes it as a diffusers folder.
        Its cross-branch modules are fused for sampling (``unfuse_cross_branch()`` to train it further).
        """
        self._check_defect(defect)
        return self._pipeline(self._unit_of(defect))

    def _backgrounds(self) -> list[Any]:
        """BCM conditions at inference: the first len//3 normal images, object blacked out."""
        from anobench.generation.base import load_rgb
        from anobench.generation.dualanodiff.data import background_conditions, to_tensor

        fewshot = self._require_fit()
        saliency = self._saliency()
        colour = None if saliency else self._background_colour()
        pool = fewshot.normal_images[: max(1, len(fewshot.normal_images) // 3)]
        images = [load_rgb(p, self.config.resolution) for p in pool]
        return [to_tensor(b) for b in background_conditions(images, colour, saliency)]

    def _output_size(self) -> tuple[int, int]:
        """(width, height) of the written pairs: ``image_size``, else the source anomalies' size."""
        from PIL import Image

        if self.config.image_size is not None:
            return self.config.image_size, self.config.image_size
        fewshot = self._require_fit()
        first_image = next(image for pairs in fewshot.anomalies.values() for image, _ in pairs)
        with Image.open(first_image) as im:
            return im.size

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` (image, mask, part) pairs; pair i is seeded by pair_seed(seed, defect, i)."""
        import numpy as np
        import torch
        from PIL import Image

        from anobench.generation.dualanodiff.masks import mask_extractor

        self._check_defect(defect)
        cfg = self.cfg
        extract = mask_extractor(
            cfg.mask_extractor,
            cfg.mask_threshold,
            cfg.mask_min_area,
            cfg.u2net_weights,
            u2net_threshold=cfg.u2net_threshold,
            device=cfg.device,
        )
        extract_all = getattr(extract, "batch", None) or (lambda parts: [extract(p) for p in parts])
        pipe = self.pipeline(defect)
        whole, part = self.prompts_for(defect)
        backgrounds = self._backgrounds() if cfg.bcm else []
        switch_every = cfg.background_every  # released: a new background every 50 (screw: 10) images

        size = self._output_size()  # (width, height)

        def resize(a: np.ndarray, nearest: bool = False) -> np.ndarray:
            if (a.shape[1], a.shape[0]) == size:
                return a
            mode = Image.NEAREST if nearest else Image.BICUBIC
            return np.asarray(Image.fromarray(a).resize(size, mode))

        start = 0
        while start < n:
            stop = min(n, start + cfg.sample_batch_size)
            if backgrounds:  # one background per batch: cut batches at background switches
                stop = min(stop, (start // switch_every + 1) * switch_every)
            seeds = [pair_seed(seed, defect, i) for i in range(start, stop)]
            group = start // switch_every
            background = backgrounds[group % len(backgrounds)] if backgrounds else None
            # the condition latent is sampled once per background switch, as released
            background_generator = torch.Generator().manual_seed(pair_seed(seed, f"{defect}/bg", group))
            out = pipe(
                whole,
                part_prompt=part,
                negative_prompt=cfg.negative_prompt,
                num_images_per_prompt=len(seeds),
                num_inference_steps=cfg.num_inference_steps,
                guidance_scale=cfg.guidance_scale,
                height=cfg.resolution,
                width=cfg.resolution,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                background=background,
                background_generator=background_generator if backgrounds else None,
            )
            images = [np.asarray(im) for im in out.images]
            parts = [np.asarray(im) for im in out.part_images]
            masks = extract_all(parts)
            for k, s in enumerate(seeds):
                mask = masks[k]
                image, fg = resize(images[k]), resize(parts[k])
                mask = resize(mask.astype(np.uint8) * 255, nearest=True) > 127
                yield GeneratedPair(image=image, mask=mask, seed=s, fg=fg)
            start = stop

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the config, the few-shot lists, the adapters and (offline) the base into ``path``."""
        super().save(path)
        path = Path(path)
        fewshot = self._require_fit()
        for unit, folder in self._units.items():
            dest = path / "adapters" / unit
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for name in ("weights.safetensors", "config.json"):
                shutil.copy2(folder / name, dest / name)
        base = self._base
        if self.config.offline and base is not None:
            shutil.rmtree(path / "base", ignore_errors=True)
            shutil.copytree(base, path / "base")
            base = "base"
        state = {"category": fewshot.category, "base": str(base), "units": sorted(self._units)}
        (path / "dualanodiff.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> DualAnoDiff:
        """Restore a generator written by :meth:`save` (no training, no cache needed)."""
        from anobench.generation.base import _fewshot_from_json

        path = Path(path)
        saved = json.loads((path / "generator.json").read_text())
        state = json.loads((path / "dualanodiff.json").read_text())
        config = saved["config"]
        gen = cls(cls.Config(**config))
        gen.fewshot = _fewshot_from_json(saved["fewshot"])
        gen._base = path / "base" if state["base"] == "base" else state["base"]
        gen._units = {unit: path / "adapters" / unit for unit in state["units"]}
        return gen


@register_generator("dualanodiff-bcm")
class DualAnoDiffBCM(DualAnoDiff):
    """DualAnoDiff with the background compensation module (the released ``bcm-`` variant)."""

    Config: ClassVar[type[DualAnoDiffConfig]] = DualAnoDiffBCMConfig

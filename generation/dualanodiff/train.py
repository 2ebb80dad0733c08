r"""Command-line dual fine-tune under ``accelerate launch`` (flags of diffusers' train_dreambooth_lora.py).

Example (one MVTec AD defect type on Stable Diffusion 1.5, the released code's settings)::

    accelerate launch -m anobench.generation.dualanodiff.train \
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --instance_data_dir mvtec/bottle/test/broken_large \
        --mask_data_dir mvtec/bottle/ground_truth/broken_large \
        --max_instances 6 --output_dir out/bottle/broken_large --resolution 512 --train_batch_size 4 \
        --learning_rate 2e-5 --lr_scheduler constant --max_train_steps 5000 --rank 32 --train_text_encoder \
        --checkpointing_steps 1000 --resume_from_checkpoint latest --mixed_precision bf16

Offline (no weights): ``--pretrained_model_name_or_path offline --normal_data_dir mvtec/bottle/train/good``
first trains (or reuses from ``--cache_dir``) the small base on the normal images.

The module is named ``train`` like diffusers' ``train_dreambooth_lora.py`` entry points (and so that
the ``accelerate launch -m`` line above stays short); the training loop itself lives in
:mod:`anobench.generation.dualanodiff.trainer`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from anobench.generation.dualanodiff.config import DualAnoDiffConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def _bool(text: str) -> bool:
    return text.lower() in {"1", "true", "yes", "on"}


#: Parsers of the optional fields (None: the released value for the category).
OPTIONAL_TYPES = {"int | None": int, "float | None": float, "bool | None": _bool}


def build_parser() -> argparse.ArgumentParser:
    """Flags: the data, the output, and one flag per :class:`DualAnoDiffConfig` field."""
    parser = argparse.ArgumentParser(
        prog="python -m anobench.generation.dualanodiff.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--instance_data_dir", required=True, help="folder of the few anomaly images")
    parser.add_argument("--mask_data_dir", required=True, help="their masks (NAME.png or NAME_mask.png)")
    parser.add_argument("--max_instances", type=int, default=None, help="use the first K images (sorted)")
    parser.add_argument("--normal_data_dir", default=None, help="normal images (offline base, BCM colour)")
    parser.add_argument("--is_object", type=_bool, default=True, help="false for textures (BCM background)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--category",
        default=None,
        help="category for the released per-category defaults (default: the data folder's grandparent)",
    )
    parser.add_argument(
        "--resume_from_checkpoint", default="latest", help="'latest', a checkpoint path or 'none'"
    )
    defaults = DualAnoDiffConfig(pretrained_model_name_or_path=None)
    for field in dataclasses.fields(DualAnoDiffConfig):
        value = getattr(defaults, field.name)
        flag = f"--{field.name}"
        if field.name == "pretrained_model_name_or_path":
            parser.add_argument(flag, default=DualAnoDiffConfig.pretrained_model_name_or_path)
        elif isinstance(value, bool):
            parser.add_argument(flag, nargs="?", const=True, default=value, type=_bool)
        elif isinstance(value, tuple):
            parser.add_argument(flag, nargs="+", type=int, default=value)
        elif isinstance(value, (int, float)):
            parser.add_argument(flag, type=type(value), default=value)
        elif value is None and str(field.type) in OPTIONAL_TYPES:  # unset: as released per category
            parser.add_argument(flag, type=OPTIONAL_TYPES[str(field.type)], default=None)
        else:
            parser.add_argument(flag, default=value)
    return parser


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    from anobench.generation.errors import GenerationInputError

    images = sorted(p for p in Path(args.instance_data_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = images[: args.max_instances] if args.max_instances else images
    pairs, missing = [], []
    for image in images:
        candidates = [Path(args.mask_data_dir) / f"{image.stem}{s}" for s in ("_mask.png", ".png")]
        mask = next((c for c in candidates if c.exists()), None)
        (pairs.append((image, mask)) if mask else missing.append(str(candidates[0])))
    if missing or not pairs:
        raise GenerationInputError(
            *(f"{m}: mask not found" for m in missing),
            *([] if pairs else [f"{args.instance_data_dir}: no images"]),
        )
    return pairs


def main(argv: list[str] | None = None) -> int:
    """Train one DualAnoDiff model; writes ``output_dir/weights.safetensors`` and checkpoints."""
    from anobench.generation.errors import GenerationInputError

    args = build_parser().parse_args(argv)
    names = {f.name for f in dataclasses.fields(DualAnoDiffConfig)}
    try:
        category = args.category or Path(args.instance_data_dir).parent.parent.name
        config = DualAnoDiffConfig(**{k: v for k, v in vars(args).items() if k in names})
        config = config.for_category(category)
        from anobench.generation.dualanodiff.components import load_components
        from anobench.generation.dualanodiff.data import estimate_background_colour, load_pair_data
        from anobench.generation.dualanodiff.trainer import train_dual

        pairs = _pairs(args)
        normals = sorted(p for p in Path(args.normal_data_dir).iterdir()) if args.normal_data_dir else []
        if config.offline:
            from anobench.generation.dualanodiff.generator import default_cache_dir
            from anobench.generation.dualanodiff.offline_base import offline_base

            cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            base = offline_base(config, category, normals, cache)
        else:
            base = config.pretrained_model_name_or_path
        colour = (
            estimate_background_colour(normals, config.resolution)
            if config.bcm and normals and args.is_object
            else None
        )
        samples = [(i, m, (config.whole_prompt, config.part_prompt)) for i, m in pairs]
        data = load_pair_data(samples, config.resolution, colour, bcm=config.bcm)
        resume = None if args.resume_from_checkpoint in ("none", "") else args.resume_from_checkpoint
        train_dual(load_components(base), data, config, args.output_dir, resume=resume)
    except GenerationInputError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

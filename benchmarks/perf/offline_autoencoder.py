"""Offline DualAnoDiff: does the base's autoencoder keep the defects? Reconstruction error and fit time.

For every embedded category (or ``--categories``) and autoencoder (``--autoencoders``: ``vae``
trained ``--vae-steps`` steps exactly as the offline base trains it, ``patch-pca`` fitted), fits it
on the category's normal training images, then encodes and decodes at ``--resolution``:

* ``normal_l1``: mean |x - x̂| over every pixel of the normal training images (on [-1, 1]);
* ``defect_l1``: the same over the defect pixels (ground-truth masks) of the test anomalies,
  which the autoencoder never saw: what a fine-tune could draw at best;
* ``fit_s``: seconds to train / fit it;
* ``adherence`` and ``type_region``: mask adherence and region type fidelity
  (:mod:`~anobench.benchmarks.metrics.pair_quality`, against the held-out anomalies of the
  ``strict`` split) of the few-shot anomalies the fine-tune learns from, after the round trip
  through the autoencoder, with their real masks: the most a dual model on this autoencoder could
  reach on these two columns. The row ``none`` is the few-shot anomalies at this resolution as
  they are (``real-fewshot``'s set).

Run: ``python -m anobench.benchmarks.perf.offline_autoencoder [--vae-steps 1000] [--json]``;
``--resolution 128 --autoencoders patch-pca --patch 4:16 8:32`` compares patch sizes
(about 3 minutes per category for the VAE at 1000 steps on 2 cores; the patch autoencoder, a second;
the two quality columns, about 10 seconds per row).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anobench.benchmarks.config import PairQualityConfig
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.data.synth import build_synthetic_dataset, category_names
from anobench.benchmarks.metrics.defaults import (
    KEY_MASK_ADHERENCE,
    KEY_PER_CATEGORY,
    KEY_TYPE_FIDELITY_REGION,
)
from anobench.benchmarks.metrics.pair_quality import compute_pair_quality
from anobench.benchmarks.tables import format_table
from anobench.generation.base import load_mask, load_rgb
from anobench.generation.dualanodiff.config import AUTOENCODERS, DualAnoDiffConfig
from anobench.generation.dualanodiff.data import to_tensor
from anobench.generation.dualanodiff.offline_base import fit_autoencoder, untrained_base
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import GeneratedSetWriter


def reconstruction_errors(
    vae: torch.nn.Module, normal: torch.Tensor, anomalies: torch.Tensor, masks: torch.Tensor
) -> dict[str, float]:
    """Mean L1 over the normal images' pixels and over the anomalies' masked pixels."""
    with torch.no_grad():
        normal_l1, error = (
            (vae.decode(vae.encode(x).latent_dist.mean).sample - x).abs() for x in (normal, anomalies)
        )
    return {"normal_l1": float(normal_l1.mean()), "defect_l1": float(error.mean(1)[masks].mean())}


def round_trip_quality(
    vae: torch.nn.Module | None,
    fewshot: dict[str, list[tuple[Path, Path]]],
    dataset_root: Path,
    category: str,
    out: Path,
    resolution: int,
) -> dict[str, float]:
    """Mask adherence and region type fidelity of the few-shot anomalies after ``vae`` (None: as they are)."""
    with GeneratedSetWriter(out, "round-trip", "-") as writer:
        for defect, pairs in fewshot.items():
            for index, (image_path, mask_path) in enumerate(pairs):
                image = load_rgb(image_path, resolution)
                if vae is not None:
                    with torch.no_grad():
                        x = to_tensor(image)[None]
                        x = vae.decode(vae.encode(x).latent_dist.mean).sample[0]
                    image = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                mask = np.asarray(load_mask(mask_path, resolution), dtype=bool)
                writer.write_arrays(category, defect, index, image, mask)
    # the settings of quick's genmetrics at this resolution, as the curve script's columns
    settings = PairQualityConfig(detector_image_size=resolution, feature_size=resolution)
    result = compute_pair_quality(
        out,
        dataset_root,
        category,
        metrics=[KEY_MASK_ADHERENCE, KEY_TYPE_FIDELITY_REGION],
        detector=settings.detector(),
        feature_size=settings.feature_size,
        save=False,
        progress=False,
    )
    scores = result[KEY_PER_CATEGORY][category]
    return {"adherence": scores[KEY_MASK_ADHERENCE], "type_region": scores[KEY_TYPE_FIDELITY_REGION]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=category_names())
    parser.add_argument("--autoencoders", nargs="+", default=list(AUTOENCODERS), choices=AUTOENCODERS)
    parser.add_argument("--vae-steps", type=int, default=1000, help="VAE training steps (default 1000)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument(
        "--patch",
        nargs="+",
        default=["4:16"],
        metavar="FACTOR:CHANNELS",
        help="patch-pca variants: patch side and latent channels (default 4:16)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    try:  # unpacking fails (ValueError) on a spec without exactly one ':' too
        patches = [(int(factor), int(channels)) for factor, channels in (s.split(":") for s in args.patch)]
    except ValueError:
        parser.error(f"--patch {' '.join(args.patch)}: give FACTOR:CHANNELS, e.g. 8:32")
    # quick's offline architecture with the offline recipe (painted shapes, 10x loss weight on them)
    common = {
        "pretrained_model_name_or_path": None,
        "resolution": args.resolution,
        "base_vae_steps": args.vae_steps,
        "base_batch_size": 8,
        "offline_unet_channels": (32, 64),
        "offline_vae_channels": (8, 16, 16),
        "offline_text_width": 32,
        "offline_text_layers": 1,
    }
    variants = {}
    for name in args.autoencoders:
        for factor, channels in patches if name == "patch-pca" else [(4, 16)]:
            label = f"{name} {factor}x{factor}:{channels}" if name == "patch-pca" else name
            try:
                variants[label] = DualAnoDiffConfig(
                    **common,
                    offline_autoencoder=name,
                    offline_patch_factor=factor,
                    offline_patch_channels=channels,
                )
            except GenerationInputError as exc:
                parser.error(str(exc))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = build_synthetic_dataset(tmp, seed=0, categories=args.categories)
        for category in args.categories:
            data = read_category(root, category)
            normal = torch.stack([to_tensor(load_rgb(p, args.resolution)) for p in data.train_good])
            tests = [sample for samples in data.defects.values() for sample in samples]
            anomalies = torch.stack([to_tensor(load_rgb(s.image, args.resolution)) for s in tests])
            masks = torch.stack([torch.from_numpy(load_mask(s.mask, args.resolution).copy()) for s in tests])
            fewshot = make_split(data, "strict").fewshot_samples()
            sets = Path(tmp) / "sets" / category
            rows.append(
                {"category": category, "autoencoder": "none", "steps": 0}
                | round_trip_quality(None, fewshot, root, category, sets / "none", args.resolution)
            )
            for label, variant in variants.items():
                config = variant.for_category(category)
                vae = untrained_base(config).vae
                start = time.perf_counter()
                fit_autoencoder(config, vae, normal, progress=False)
                fit_s = time.perf_counter() - start
                row = {
                    "category": category,
                    "autoencoder": label,
                    "steps": args.vae_steps if config.offline_autoencoder == "vae" else 0,
                }
                row |= reconstruction_errors(vae, normal, anomalies, masks) | {"fit_s": fit_s}
                sets_dir = sets / label.replace(" ", "-").replace(":", "-")
                rows.append(row | round_trip_quality(vae, fewshot, root, category, sets_dir, args.resolution))
    columns = [
        "category",
        "autoencoder",
        "steps",
        "normal_l1",
        "defect_l1",
        "fit_s",
        "adherence",
        "type_region",
    ]
    print(json.dumps(rows, indent=1) if args.json else format_table(rows, columns, digits=3))


if __name__ == "__main__":
    main()

"""The stages of one benchmark cell (dataset x category x generator x seed).

split -> generate -> train the segmenter on the generated pairs (+ normal images) -> score it on
the held-out real test split. Each stage takes plain inputs and writes its outputs under the
run folder, so the runner can skip the stages whose outputs exist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.data.mvtec import list_categories, read_category
from anobench.benchmarks.data.splits import SplitManifest, make_split
from anobench.benchmarks.data.synth import CATEGORIES, embedded_dataset
from anobench.benchmarks.errors import ConfigError
from anobench.downstream.classifier import run_classification
from anobench.downstream.evaluation import HeldOutSplit
from anobench.downstream.protocol import run_segmentation
from anobench.downstream.unsupervised import DetectorConfig, run_detector
from anobench.generation.base import FewShotSet
from anobench.generation.foreground import foreground_prior
from anobench.generation.format import GeneratedSetWriter, read_generated_set
from anobench.generation.quality import mask_quality, mask_summary
from anobench.generation.registry import create_generator, list_generators

# Categories known to be textures (MVTec AD's five, and the embedded ones).
TEXTURE_CATEGORIES = {"carpet", "grid", "leather", "tile", "wood"} | {
    spec.name for spec in CATEGORIES if spec.kind == "texture"
}


def dataset_root(config: RunConfig) -> Path:
    """The dataset named by the config, or the embedded synthetic dataset (built once, cached)."""
    if config.data.root is not None:
        return Path(config.data.root).expanduser()
    return embedded_dataset(Path(config.data.cache_dir).expanduser(), config.data.synthetic_seed)


def categories(config: RunConfig, root: Path) -> list[str]:
    """The categories the run covers (``data.categories``, checked against the dataset; None: all)."""
    available = list_categories(root)
    if not config.data.categories:
        return available
    missing = [c for c in config.data.categories if c not in available]
    if missing:
        raise ConfigError(
            f"data.categories: {', '.join(missing)} not in {root} (available: {', '.join(available)}); "
            "set --set data.categories=[...] or data.categories=null for all"
        )
    return config.data.categories


def check_run_inputs(config: RunConfig, root: Path, names: list[str], generators: list[str]) -> None:
    """Fail before any job runs on what is wrong for the whole grid, with one line per problem.

    Every category must read and split cleanly, every grid generator must be registered, and every
    generator named in the grid or in ``generation.options`` must accept its options.
    """
    unknown = sorted(set(config.generation.options) - set(list_generators()))
    if unknown:
        raise ConfigError(
            f"generation.options: no generator named {', '.join(unknown)}; "
            f"registered: {', '.join(list_generators())}"
        )
    for name in dict.fromkeys([*generators, *config.generation.options]):
        create_generator(name, **config.generation.options.get(name, {}))
    for category in names:
        make_split(read_category(root, category), config.data.split)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def split_stage(root: Path, category: str, preset: str, run_dir: Path) -> SplitManifest:
    """Validate the category, split it and write the manifest to ``run_dir/splits/``."""
    manifest = make_split(read_category(root, category), preset)
    manifest.write(run_dir / "splits" / f"{category}.{preset}.json")
    return manifest


def fewshot_set(manifest: SplitManifest) -> FewShotSet:
    """The generator's view of a split: normal training images and the few-shot anomalies."""
    is_object = None
    if manifest.category in TEXTURE_CATEGORIES:
        is_object = False
    elif manifest.category in {spec.name for spec in CATEGORIES}:
        is_object = True
    return FewShotSet(
        category=manifest.category,
        normal_images=[manifest.absolute(p) for p in manifest.train_good],
        anomalies=manifest.fewshot_samples(),
        is_object=is_object,
    )


def generate_stage(
    config: RunConfig,
    manifest: SplitManifest,
    generator: str,
    seed: int,
    out_root: Path,
    progress: bool = True,
) -> Path:
    """Fit ``generator`` on the few-shot split and write ``n_per_defect`` pairs per defect type.

    Resumable: pairs already listed in the manifest and present on disk are not generated again;
    a set made with another generator config, seed, split or options is refused (one-line error).
    """
    gen = create_generator(generator, **config.generation.options.get(generator, {}))
    gen.show_progress = progress
    gen.fit(fewshot_set(manifest))
    settings = {
        "seed": seed,
        "split": manifest.preset,
        "options": config.generation.options.get(generator, {}),
    }
    n = config.generation.n_per_defect
    with GeneratedSetWriter(out_root, generator, gen.config_hash(), settings) as writer:
        for defect in sorted(manifest.defects):
            done = writer.existing(manifest.category, defect)
            if len(done) >= n:
                continue
            bar = tqdm(total=n, initial=len(done), desc=f"{generator} {manifest.category}/{defect}",
                       leave=False, disable=not progress, unit="pair")  # fmt: skip
            for index, pair in enumerate(gen.sample(defect, n, seed)):
                if index not in done:
                    writer.write(manifest.category, defect, index, pair)
                    bar.update()
            bar.close()
    return out_root


def segmentation_stage(
    config: RunConfig,
    manifest: SplitManifest,
    generated_root: Path | None,
    seed: int,
    progress: bool = True,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Train the segmenter on the generated pairs (none: normals only) and score the real test split.

    Returns :func:`anobench.downstream.protocol.run_segmentation`'s result: ``metrics`` plus ``selection``,
    ``selected_epoch``, ``per_defect``, ``history``; ``scores.npz`` goes to ``out_dir`` when given.
    """
    generated: dict[str, list[tuple[Path, Path]]] = {}
    if generated_root is not None:
        for (_, defect), entries in read_generated_set(generated_root, manifest.category).items():
            generated[defect] = [(e.image, e.mask) for e in entries]
    return run_segmentation(
        [manifest.absolute(p) for p in manifest.train_good],
        generated,
        [manifest.absolute(p) for p in manifest.test_good],
        manifest.test_samples(),
        config.segmenter,
        seed,
        pixel_f1=config.evaluation.pixel_f1,
        out_dir=out_dir if config.evaluation.save_scores else None,
        progress=progress,
    )


def classification_stage(
    config: RunConfig, manifest: SplitManifest, generated_root: Path, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Train the defect-type classifier on the generated images; test it on the held-out real anomalies.

    A category with a single defect type returns ``{"cls_accuracy": None, "skipped": ...}``.
    """
    generated = {
        defect: [e.image for e in entries]
        for (_, defect), entries in read_generated_set(generated_root, manifest.category).items()
    }
    test = {d: [image for image, _ in pairs] for d, pairs in manifest.test_samples().items()}
    return run_classification(generated, test, config.classifier, seed, progress=progress)


def detector_stage(
    config: RunConfig, manifest: SplitManifest, detector: DetectorConfig, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """An unsupervised detector row: fit on ``train/good``, scored on the same test split as the segmenter."""
    split = HeldOutSplit.load(
        [manifest.absolute(p) for p in manifest.test_good],
        manifest.test_samples(),
        config.segmenter.image_size,
    )
    return run_detector(
        detector,
        [manifest.absolute(p) for p in manifest.train_good],
        split,
        pixel_f1=config.evaluation.pixel_f1,
        seed=seed,
        progress=progress,
    )


def object_foregrounds(dataset: Path, categories: set[str]) -> dict[str, np.ndarray]:
    """Foreground priors of the object categories (textures have none)."""
    return {
        cat: foreground_prior(read_category(dataset, cat, validate=False).train_good)
        for cat in sorted(categories)
        if cat not in TEXTURE_CATEGORIES
    }


def genmetrics_stage(
    config: RunConfig,
    dataset: Path,
    manifest: SplitManifest,
    generated_root: Path,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Generation quality of one category's generated set.

    Returns ``metrics`` (IS/IC-LPIPS/KID of the category, the mean over its defect types, plus the
    mask summary), ``per_defect`` (each type's values and mask statistics), ``weights`` and
    ``unavailable`` (metrics whose weights are missing, with the reason), and ``settings``.
    """
    from anobench.benchmarks.metrics.api import compute_generation_metrics

    options = config.genmetrics
    result = compute_generation_metrics(
        generated_root,
        dataset,
        manifest.category,
        split_preset=manifest.preset,
        metrics=options.metrics,
        variant=options.ic_lpips_variant,
        seed=seed,
        inception_weights=options.inception_weights,
        is_resize=options.is_resize,
        kid_reference=options.kid_reference,
        download=False,
        progress=progress,
    )
    metrics = dict(result["per_category"].get(manifest.category, {}))
    per_defect = result["per_type"].get(manifest.category, {})
    if options.mask_quality:
        pairs = read_generated_set(generated_root, manifest.category)
        rows = mask_quality(pairs, object_foregrounds(dataset, {manifest.category}))
        metrics.update(mask_summary(rows))
        for row in rows:
            per_defect.setdefault(str(row["defect"]), {})["mask"] = row
    return {
        "metrics": {k: v for k, v in metrics.items() if v == v},  # NaN (too few images) stays in per_defect
        "per_defect": per_defect,
        "weights": result["weights"],
        "unavailable": result["unavailable"],
        "settings": result["settings"],
    }

"""The stages of one benchmark cell (dataset x category x generator x seed), each in one place.

split -> ``generate`` (fit + sample, writes the generated set) -> ``downstream`` (segmenter on the
generated pairs + normal images, scored on the held-out real test split), ``classify`` (defect-type
classifier) and ``genmetrics`` (generation quality); ``detector`` (an unsupervised row) needs no
generated set. Each stage body takes a :class:`~anobench.benchmarks.runner.jobs.Job` and calls the
library; :data:`STAGE_BODIES` maps a stage name to its body.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.data.categories import is_object, object_foregrounds
from anobench.benchmarks.data.datasets import read_category
from anobench.benchmarks.data.splits import SplitManifest, make_split, manifest_name
from anobench.benchmarks.runner.stage_names import (
    CLASSIFY,
    DETECTOR,
    DOWNSTREAM,
    FILTER,
    GENERATE,
    GENMETRICS,
)
from anobench.downstream.classifier import run_classification
from anobench.downstream.evaluation import HeldOutSplit
from anobench.downstream.metrics import CLS_ACCURACY
from anobench.downstream.protocol import run_segmentation
from anobench.downstream.segmenters import create_segmenter
from anobench.downstream.unsupervised import run_detector
from anobench.generation.base import FewShotSet
from anobench.generation.format import GeneratedSetWriter, read_generated_set
from anobench.generation.quality import mask_quality, mask_summary
from anobench.generation.registry import create_generator

if TYPE_CHECKING:
    from anobench.benchmarks.runner.jobs import Job


def generated_dir(run_dir: Path, generate_job: str) -> Path:
    """The generated set written by the ``generate`` job named ``generate_job`` (its key's name).

    One set per (generator, category, seed, generation config, dataset files).
    """
    return run_dir / "generated" / generate_job


def split_path(run_dir: Path, category: str, preset: str) -> Path:
    """Where the split manifest of ``category`` goes: ``<run>/splits/<category>.<preset>.json``.

    The category part is :func:`~anobench.benchmarks.io.safe_name` (``pcb 1`` and ``pcb-1`` differ).
    """
    return run_dir / "splits" / manifest_name(category, preset)


def split_stage(root: Path, category: str, preset: str, run_dir: Path, **options: Any) -> SplitManifest:
    """Validate the category, split it and write the manifest to ``run_dir/splits/``.

    ``options``: the dataset readers' ``format`` and ``resolution`` (None: detected).
    """
    manifest = make_split(read_category(root, category, **options), preset)
    manifest.write(split_path(run_dir, category, preset))
    return manifest


def fewshot_set(manifest: SplitManifest) -> FewShotSet:
    """The generator's view of a split: normal training images and the few-shot anomalies.

    ``is_object`` comes from :func:`anobench.benchmarks.data.categories.is_object` (None: unknown name).
    """
    return FewShotSet(
        category=manifest.category,
        normal_images=[manifest.absolute(p) for p in manifest.train_good],
        anomalies=manifest.fewshot_samples(),
        is_object=is_object(manifest.category),
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


# ---------------------------------------------------------------- stage bodies: job -> library call
def _split(job: Job) -> SplitManifest:
    return split_stage(
        job.dataset, job.key.category, job.config.data.split, job.run_dir, **job.config.data.options()
    )


def _split_summary(manifest: SplitManifest) -> dict[str, Any]:
    return {"preset": manifest.preset, "overlap_count": manifest.overlap_count, "format": manifest.format}


def _generated(job: Job) -> Path:
    """The generated set this job depends on."""
    return generated_dir(job.run_dir, job.depends_on[0].name)


def _run_generate(job: Job, progress: bool) -> dict[str, Any]:
    manifest = _split(job)
    out = generated_dir(job.run_dir, job.key.name)
    generate_stage(job.config, manifest, job.key.generator, job.key.seed, out, progress=progress)
    return {"generated_dir": str(out), "split": _split_summary(manifest)}


def _run_filter(job: Job, progress: bool) -> dict[str, Any]:
    """Score the source set's pairs (saved to its ``scores.jsonl``), copy those passing the rules.

    A rule set that keeps nothing fails this job with one line (``UserError``); others continue.
    """
    from anobench.benchmarks.metrics.filtering import filter_generated_set

    (rules,) = [f for f in job.config.generation.filters if f.row == job.key.generator]
    source, out = _generated(job), generated_dir(job.run_dir, job.key.name)
    _pair_quality(job, source, job.key.category, progress)
    shutil.rmtree(out, ignore_errors=True)  # a half-written copy of an interrupted job
    summary = filter_generated_set(source, out, rules.keep)
    return {"generated_dir": str(out), "filter": summary}


def _run_downstream(job: Job, progress: bool) -> dict[str, Any]:
    """Train the job's segmenter on the generated pairs (+ normals) and score the real test split.

    ``scores.npz`` goes next to the result file when ``evaluation.save_scores``.
    """
    config, manifest = job.config, _split(job)
    assert job.key.segmenter is not None
    segmenter = create_segmenter(job.key.segmenter, **config.downstream.options.get(job.key.segmenter, {}))
    generated = {
        defect: [(e.image, e.mask) for e in entries]
        for (_, defect), entries in read_generated_set(_generated(job), manifest.category).items()
    }
    seg = run_segmentation(
        [manifest.absolute(p) for p in manifest.train_good],
        generated,
        [manifest.absolute(p) for p in manifest.test_good],
        manifest.test_samples(),
        config.segmenter,
        job.key.seed,
        pixel_f1=config.evaluation.pixel_f1,
        out_dir=job.result_path.with_suffix("") if config.evaluation.save_scores else None,
        progress=progress,
        segmenter=segmenter,
        real_anomalies=manifest.fewshot_samples() if config.segmenter.real_fraction > 0 else None,
    )
    keep = ("metrics", "segmenter", "recipe", "selection", "selected_epoch", "per_defect", "history")
    # scores_file relative to the run folder, so a copied run folder reads its own scores
    scores_file = seg["scores_file"] and os.path.relpath(seg["scores_file"], job.run_dir)
    return {**{k: seg[k] for k in keep}, "scores_file": scores_file, "split": _split_summary(manifest)}


def _run_classify(job: Job, progress: bool) -> dict[str, Any]:
    """Train the defect-type classifier on the generated images; test it on the held-out real anomalies.

    A category with a single defect type gets no ``cls_accuracy`` and says why in ``skipped``.
    """
    manifest = _split(job)
    generated = {
        defect: [e.image for e in entries]
        for (_, defect), entries in read_generated_set(_generated(job), manifest.category).items()
    }
    test = {d: [image for image, _ in pairs] for d, pairs in manifest.test_samples().items()}
    result = run_classification(generated, test, job.config.classifier, job.key.seed, progress=progress)
    accuracy = result.pop(CLS_ACCURACY)
    return {"metrics": {} if accuracy is None else {CLS_ACCURACY: accuracy}, **result}


def _run_detector(job: Job, progress: bool) -> dict[str, Any]:
    """An unsupervised detector row: fit on ``train/good``, scored on the same test split as the segmenter."""
    assert job.detector is not None
    config, manifest = job.config, _split(job)
    split = HeldOutSplit.load(
        [manifest.absolute(p) for p in manifest.test_good],
        manifest.test_samples(),
        config.segmenter.image_size,
    )
    result = run_detector(
        job.detector,
        [manifest.absolute(p) for p in manifest.train_good],
        split,
        pixel_f1=config.evaluation.pixel_f1,
        seed=job.key.seed,
        progress=progress,
    )
    return {**result, "split": _split_summary(manifest)}


def _run_genmetrics(job: Job, progress: bool) -> dict[str, Any]:
    """Generation quality of one category's generated set.

    Returns ``metrics`` (IS/IC-LPIPS/KID of the category, the mean over its defect types, plus the
    mask summary and, with ``genmetrics.pair_quality.enabled``, the per-pair quality means),
    ``per_defect`` (each type's values and mask statistics), ``weights`` and ``unavailable``
    (metrics whose weights are missing, with the reason), ``settings`` and, with pair quality,
    ``reference`` (the same pair-quality values of the held-out real anomalies:
    ``{"metrics": ..., "per_defect": ...}``, identical for every generator).
    """
    from anobench.benchmarks.metrics.api import compute_generation_metrics

    options, manifest, generated_root = job.config.genmetrics, _split(job), _generated(job)
    result = compute_generation_metrics(
        generated_root,
        job.dataset,
        manifest.category,
        split_preset=manifest.preset,
        metrics=options.metrics,
        variant=options.ic_lpips_variant,
        seed=job.key.seed,
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
        rows = mask_quality(
            pairs, object_foregrounds(job.dataset, {manifest.category}, **job.config.data.options())
        )
        metrics.update(mask_summary(rows))
        for row in rows:
            per_defect.setdefault(str(row["defect"]), {})["mask"] = row
    out = {
        "weights": result["weights"],
        "unavailable": result["unavailable"],
        "settings": result["settings"],
    }
    if options.pair_quality.enabled:
        pairs_result = _pair_quality(job, generated_root, manifest.category, progress)
        metrics.update(pairs_result["per_category"].get(manifest.category, {}))
        for defect, row in pairs_result["per_type"].get(manifest.category, {}).items():
            per_defect.setdefault(defect, {}).update(row)
        reference = pairs_result["reference"]
        out["reference"] = {
            "metrics": reference["per_category"].get(manifest.category, {}),
            "per_defect": reference["per_type"].get(manifest.category, {}),
        }
        out["unavailable"] = {**out["unavailable"], **pairs_result["unavailable"]}
        out["settings"] = {**out["settings"], "pair_quality": pairs_result["settings"]}
    # NaN (too few images) stays in per_defect
    return {"metrics": {k: v for k, v in metrics.items() if v == v}, "per_defect": per_defect, **out}


def _pair_quality(job: Job, generated_root: Path, category: str, progress: bool) -> dict[str, Any]:
    """``compute_pair_quality`` of one category's set; the detector cache is the run's data cache."""
    from anobench.benchmarks.metrics.pair_quality import compute_pair_quality

    options = job.config.genmetrics.pair_quality
    return compute_pair_quality(
        generated_root,
        job.dataset,
        category,
        metrics=options.metrics,
        split_preset=job.config.data.split,
        detector=options.detector(),
        feature_size=options.feature_size,
        seed=job.key.seed,
        cache_dir=Path(job.config.data.cache_dir).expanduser() / "detectors",
        progress=progress,
        **job.config.data.options(),
    )


STAGE_BODIES: dict[str, Callable[[Job, bool], dict[str, Any]]] = {
    GENERATE: _run_generate,
    FILTER: _run_filter,
    DOWNSTREAM: _run_downstream,
    CLASSIFY: _run_classify,
    DETECTOR: _run_detector,
    GENMETRICS: _run_genmetrics,
}

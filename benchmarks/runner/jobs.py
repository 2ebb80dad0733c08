"""Jobs: one stage of one grid cell, idempotent and keyed.

A job is keyed by (stage, generator, category, defect, seed, config hash). Its result is one JSON
file under ``<run>/raw/<stage>/``; a job whose result file exists is skipped, and every write is
atomic (temporary file, then rename), so a killed run loses only the jobs in flight and a rerun
of the same command completes the grid.

Stages: ``generate`` (fit + sample, writes the generated set) -> ``downstream`` (segmenter on the
generated pairs, scored on the real test split), ``classify`` (defect-type classifier) and
``genmetrics`` (generation quality); ``detector`` jobs (unsupervised rows) need no generated set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anobench.benchmarks.config import RunConfig, flatten
from anobench.benchmarks.data.splits import SplitManifest
from anobench.benchmarks.pipeline import (
    classification_stage,
    detector_stage,
    generate_stage,
    genmetrics_stage,
    segmentation_stage,
    split_stage,
    write_json,
)
from anobench.benchmarks.provenance import git_sha, package_versions, utc_now
from anobench.downstream.metrics import CLS_ACCURACY
from anobench.downstream.unsupervised import DetectorConfig
from anobench.generation.base import config_hash

GENERATE, DOWNSTREAM, CLASSIFY, DETECTOR, GENMETRICS = (
    "generate", "downstream", "classify", "detector", "genmetrics",
)  # fmt: skip
STAGES = (GENERATE, DOWNSTREAM, CLASSIFY, DETECTOR, GENMETRICS)


@dataclass(frozen=True)
class JobKey:
    """What identifies a job's result."""

    stage: str
    generator: str
    category: str
    seed: int
    config_hash: str
    defect: str = "all"

    @property
    def name(self) -> str:
        """File-name-safe identifier (also the result file's stem)."""
        text = f"{self.generator}__{self.category}__{self.defect}__seed{self.seed}__{self.config_hash}"
        return re.sub(r"[^A-Za-z0-9_.\[\]-]+", "-", text)

    def label(self) -> str:
        """Short human-readable label."""
        return f"{self.stage} {self.generator}/{self.category} seed{self.seed}"


@dataclass
class Job:
    """One unit of work: a key, its inputs and the keys it depends on."""

    key: JobKey
    config: RunConfig
    dataset: Path
    run_dir: Path
    depends_on: list[JobKey] = field(default_factory=list)
    detector: DetectorConfig | None = None  # the detector of a ``detector`` job

    @property
    def result_path(self) -> Path:
        """Where the job's result JSON lives."""
        return result_path(self.run_dir, self.key)

    def done(self) -> bool:
        """True when the result file exists and reads as JSON (the job is then skipped)."""
        return read_result(self.result_path) is not None


def read_result(path: Path) -> dict[str, Any] | None:
    """A job's result, or None when the file is missing or unreadable (a truncated file counts as missing)."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def result_path(run_dir: Path, key: JobKey) -> Path:
    """The result JSON of ``key`` under ``run_dir``."""
    return run_dir / "raw" / key.stage / f"{key.name}.json"


def generated_dir(run_dir: Path, generator: str, seed: int, gen_hash: str) -> Path:
    """The generated set of one (generator, seed, generation config)."""
    return run_dir / "generated" / f"{generator}__seed{seed}__{gen_hash}"


def generation_hash(config: RunConfig, dataset: Path, generator: str) -> str:
    """Hash of everything that changes the generated pairs."""
    return config_hash(
        {
            "dataset": str(dataset),
            "split": config.data.split,
            "generator": generator,
            "options": config.generation.options.get(generator, {}),
            "n_per_defect": config.generation.n_per_defect,
        }
    )


def downstream_hash(config: RunConfig, gen_hash: str) -> str:
    """Hash of the generation hash and the downstream protocol."""
    return config_hash(
        {
            "generation": gen_hash,
            "segmenter": dataclasses.asdict(config.segmenter),
            "pixel_f1": config.evaluation.pixel_f1,
        }
    )


def classify_hash(config: RunConfig, gen_hash: str) -> str:
    """Hash of the generation hash and the classification protocol."""
    return config_hash({"generation": gen_hash, "classifier": dataclasses.asdict(config.classifier)})


def genmetrics_hash(config: RunConfig, gen_hash: str) -> str:
    """Hash of the generation hash and the generation-metrics settings."""
    return config_hash({"generation": gen_hash, "genmetrics": dataclasses.asdict(config.genmetrics)})


def detector_hash(config: RunConfig, dataset: Path, detector: DetectorConfig) -> str:
    """Hash of the dataset, split, evaluation size and the detector's settings."""
    return config_hash(
        {
            "dataset": str(dataset),
            "split": config.data.split,
            "image_size": config.segmenter.image_size,
            "pixel_f1": config.evaluation.pixel_f1,
            "detector": dataclasses.asdict(detector),
        }
    )


# ---------------------------------------------------------------- stage bodies
def _split_summary(manifest: SplitManifest) -> dict[str, Any]:
    return {"preset": manifest.preset, "overlap_count": manifest.overlap_count}


def _split_and_generated(job: Job) -> tuple[SplitManifest, Path]:
    """The cell's split manifest and the generated set this job depends on."""
    gen_key = job.depends_on[0]
    manifest = split_stage(job.dataset, job.key.category, job.config.data.split, job.run_dir)
    return manifest, generated_dir(job.run_dir, gen_key.generator, gen_key.seed, gen_key.config_hash)


def _run_generate(job: Job, progress: bool) -> dict[str, Any]:
    manifest = split_stage(job.dataset, job.key.category, job.config.data.split, job.run_dir)
    out = generated_dir(job.run_dir, job.key.generator, job.key.seed, job.key.config_hash)
    generate_stage(job.config, manifest, job.key.generator, job.key.seed, out, progress=progress)
    return {
        "generated_dir": str(out),
        "split": _split_summary(manifest),
    }


def _run_downstream(job: Job, progress: bool) -> dict[str, Any]:
    manifest, gen_root = _split_and_generated(job)
    scores_dir = job.result_path.with_suffix("")  # <run>/raw/downstream/<job>/scores.npz
    seg = segmentation_stage(
        job.config, manifest, gen_root, job.key.seed, progress=progress, out_dir=scores_dir
    )
    return {
        "metrics": seg["metrics"],
        "selection": seg["selection"],
        "selected_epoch": seg["selected_epoch"],
        "per_defect": seg["per_defect"],
        "history": seg["history"],
        # relative to the run folder, so a copied run folder reads its own scores
        "scores_file": seg["scores_file"] and os.path.relpath(seg["scores_file"], job.run_dir),
        "split": _split_summary(manifest),
    }


def _run_classify(job: Job, progress: bool) -> dict[str, Any]:
    manifest, gen_root = _split_and_generated(job)
    result = classification_stage(job.config, manifest, gen_root, job.key.seed, progress=progress)
    accuracy = result.pop(CLS_ACCURACY)
    metrics = {} if accuracy is None else {CLS_ACCURACY: accuracy}
    return {"metrics": metrics, **result}


def _run_detector(job: Job, progress: bool) -> dict[str, Any]:
    assert job.detector is not None
    manifest = split_stage(job.dataset, job.key.category, job.config.data.split, job.run_dir)
    result = detector_stage(job.config, manifest, job.detector, job.key.seed, progress=progress)
    return {**result, "split": _split_summary(manifest)}


def _run_genmetrics(job: Job, progress: bool) -> dict[str, Any]:
    manifest, gen_root = _split_and_generated(job)
    return genmetrics_stage(job.config, job.dataset, manifest, gen_root, job.key.seed, progress=progress)


STAGE_BODIES: dict[str, Callable[[Job, bool], dict[str, Any]]] = {
    GENERATE: _run_generate,
    DOWNSTREAM: _run_downstream,
    CLASSIFY: _run_classify,
    DETECTOR: _run_detector,
    GENMETRICS: _run_genmetrics,
}


@dataclass
class JobOutcome:
    """What happened to a job."""

    key: JobKey
    status: str  # "done", "skipped" (result existed), "failed", "blocked" (a dependency failed)
    seconds: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None


def execute(job: Job, progress: bool = False) -> JobOutcome:
    """Run one job unless its result exists; failures are returned, never raised."""
    if job.done():
        return JobOutcome(job.key, "skipped")
    if job.result_path.exists():
        print(f"{job.result_path}: unreadable result (truncated?); running the job again", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        body = STAGE_BODIES[job.key.stage](job, progress)
    except Exception as exc:  # noqa: BLE001 - collected and reported at the end of the run
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return JobOutcome(job.key, "failed", time.perf_counter() - t0, error=detail)
    seconds = time.perf_counter() - t0
    result = {
        "key": dataclasses.asdict(job.key),
        "cell": {
            "dataset": str(job.dataset),
            "category": job.key.category,
            "generator": job.key.generator,
            "seed": job.key.seed,
        },
        **body,
        "config": flatten(job.config),
        "versions": package_versions(),
        "git_sha": git_sha(),
        "finished_at": utc_now(),
        "timings": {"seconds": seconds},
    }
    write_json(job.result_path, result)
    return JobOutcome(job.key, "done", seconds, result=result)

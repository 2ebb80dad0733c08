"""Jobs: one stage of one grid cell, idempotent and keyed.

A job is keyed by (stage, generator, category, defect, seed, config hash, data fingerprint) and,
for a ``downstream`` job, the segmenter. Its result is one JSON file under ``<run>/raw/<stage>/``,
named injectively after the key (:func:`anobench.benchmarks.io.safe_name`); a job whose result file
exists is skipped, and every write is atomic (temporary file, then rename), so a killed run loses
only the jobs in flight and a rerun of the same command completes the grid.

What each stage does is in :mod:`anobench.benchmarks.runner.stages`; this module keys the jobs and
executes one (its stage body, then the result file with provenance).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anobench.benchmarks.config import RunConfig, flatten
from anobench.benchmarks.io import safe_name, write_json
from anobench.benchmarks.provenance import git_sha, package_versions, utc_now
from anobench.benchmarks.runner.stages import STAGE_BODIES
from anobench.downstream.segmenters import DEFAULT_SEGMENTER, create_segmenter
from anobench.downstream.unsupervised import DetectorConfig
from anobench.generation.base import config_hash
from anobench.generation.registry import create_generator, list_generators


@dataclass(frozen=True)
class JobKey:
    """What identifies a job's result."""

    stage: str
    generator: str
    category: str
    seed: int
    config_hash: str
    defect: str = "all"
    data: str = ""  # fingerprint of the dataset files the job reads (see grid.split_fingerprint)
    segmenter: str | None = None  # the segmenter of a ``downstream`` job

    @property
    def name(self) -> str:
        """File-name-safe identifier, distinct for distinct keys of a stage (the result file's stem).

        The default segmenter keeps the plain name (runs from before the registry resume as they were).
        """
        model = [self.segmenter] if self.segmenter not in (None, DEFAULT_SEGMENTER) else []
        data = f"__d{self.data}" if self.data else ""
        names = safe_name(self.generator, *model, self.category, self.defect)
        return f"{names}__seed{self.seed}__{self.config_hash}{data}"

    def label(self) -> str:
        """Short human-readable label."""
        model = f" [{self.segmenter}]" if self.segmenter else ""
        return f"{self.stage} {self.generator}/{self.category}{model} seed{self.seed}"


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


def _data_key(config: RunConfig, dataset: Path) -> dict[str, Any]:
    """The dataset, split and (when set) the dataset format and resolution, for the hashes."""
    options = {k: v for k, v in config.data.options().items() if v is not None}
    return {"dataset": str(dataset), "split": config.data.split, **options}


def generation_hash(config: RunConfig, dataset: Path, generator: str) -> str:
    """Hash of everything that changes the generated pairs.

    That is the generator's resolved config (defaults included, so a default changed in code is a new
    key, while spelling a default out in ``generation.options`` is not), the dataset, split and pair count.
    """
    gen = create_generator(generator, **config.generation.options.get(generator, {}))
    return config_hash(
        {
            **_data_key(config, dataset),
            "generator": gen.config_hash(),
            "n_per_defect": config.generation.n_per_defect,
        }
    )


def smoke_size(config: RunConfig, generator: str) -> bool:
    """Whether ``generator`` runs as a smoke-size stand-in with ``config``'s options (unregistered: no)."""
    if generator not in list_generators():
        return False
    return create_generator(generator, **config.generation.options.get(generator, {})).config.smoke_size


def downstream_hash(config: RunConfig, gen_hash: str, segmenter: str) -> str:
    """Hash of the generation hash, the downstream protocol and the segmenter with its options."""
    model = create_segmenter(segmenter, **config.downstream.options.get(segmenter, {}))
    return config_hash(
        {
            "generation": gen_hash,
            "segmenter": config.segmenter.hash_fields(),
            "model": {"name": segmenter, **dataclasses.asdict(model.config)},
            "pixel_f1": config.evaluation.pixel_f1,
        }
    )


def classify_hash(config: RunConfig, gen_hash: str) -> str:
    """Hash of the generation hash and the classification protocol."""
    return config_hash({"generation": gen_hash, "classifier": dataclasses.asdict(config.classifier)})


def genmetrics_hash(config: RunConfig, gen_hash: str) -> str:
    """Hash of the generation hash and the generation-metrics settings.

    ``pair_quality`` counts only when enabled: results made before it existed stay valid.
    """
    settings = dataclasses.asdict(config.genmetrics)
    if not config.genmetrics.pair_quality.enabled:
        del settings["pair_quality"]
    return config_hash({"generation": gen_hash, "genmetrics": settings})


def filter_hash(config: RunConfig, gen_hash: str, keep: list[str]) -> str:
    """Hash of the source set's generation hash, the rules and the pair-quality settings that score it."""
    pair_quality = dataclasses.asdict(config.genmetrics.pair_quality)
    return config_hash({"generation": gen_hash, "keep": keep, "pair_quality": pair_quality})


def detector_hash(config: RunConfig, dataset: Path, detector: DetectorConfig) -> str:
    """Hash of the dataset, split, evaluation size and the detector's settings."""
    return config_hash(
        {
            **_data_key(config, dataset),
            "image_size": config.segmenter.image_size,
            "pixel_f1": config.evaluation.pixel_f1,
            "detector": dataclasses.asdict(detector),
        }
    )


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
            "smoke_size": smoke_size(job.config, job.key.generator),
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

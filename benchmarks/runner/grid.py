"""The job generator: expand a run config into the grid of keyed jobs with their dependencies.

Before expanding, :func:`dataset_root`, :func:`grid_categories` and :func:`data_fingerprints` resolve
and check the run's inputs, so a mistake fails before any job runs. Every job key carries the
fingerprint of its category's split (:func:`split_fingerprint`): a changed, added or deleted dataset
file reruns the jobs that read it. :func:`record_grid` records the grid as the run folder's last run.

Example:
    >>> from anobench.benchmarks.config import load_config
    >>> from anobench.benchmarks.runner.grid import expand_grid
    >>> jobs = expand_grid(load_config("quick"), dataset="/data/synthetic", run_dir="runs/q",
    ...                    categories=["nut"])  # doctest: +SKIP
    >>> record_grid(Path("runs/q"), "quick", jobs)["run_config"]  # doctest: +SKIP
    '3f2a9c0d41be'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.data.datasets import list_categories, read_category
from anobench.benchmarks.data.splits import SplitManifest, make_split
from anobench.benchmarks.data.synth import embedded_dataset
from anobench.benchmarks.errors import ConfigError
from anobench.benchmarks.runner.jobs import (
    Job,
    JobKey,
    classify_hash,
    detector_hash,
    downstream_hash,
    filter_hash,
    generation_hash,
    genmetrics_hash,
)
from anobench.benchmarks.runner.record import append_run
from anobench.benchmarks.runner.stage_names import (
    CLASSIFY,
    DETECTOR,
    DOWNSTREAM,
    FILTER,
    GENERATE,
    GENMETRICS,
)
from anobench.benchmarks.runner.stages import generated_dir
from anobench.generation.base import config_hash


def dataset_root(config: RunConfig) -> Path:
    """The dataset named by the config, or the embedded synthetic dataset (built once, cached)."""
    if config.data.root is not None:
        return Path(config.data.root).expanduser()
    return embedded_dataset(Path(config.data.cache_dir).expanduser(), config.data.synthetic_seed)


def grid_categories(config: RunConfig, root: Path) -> list[str]:
    """The categories of the run (``data.categories``, checked against the dataset; None: all)."""
    available = list_categories(root, **config.data.options())
    if not config.data.categories:
        return available
    missing = [c for c in config.data.categories if c not in available]
    if missing:
        raise ConfigError(
            f"data.categories: {', '.join(missing)} not in {root} (available: {', '.join(available)}); "
            "set --set data.categories=[...] or data.categories=null for all"
        )
    return config.data.categories


def grid_generators(config: RunConfig) -> list[str]:
    """The generators of the run: the configured ones plus the reference rows, without repeats."""
    names = [*config.generation.reference, *config.generation.generators]
    return list(dict.fromkeys(names))


def downstream_configs(config: RunConfig) -> list[RunConfig]:
    """One config per value of the ``downstream.normal_fractions`` grid axis (or ``config`` alone).

    Each value replaces ``segmenter.normal_fraction`` (checked against ``real_fraction``).
    """
    fractions = config.downstream.normal_fractions
    if not fractions:
        return [config]
    try:
        return [
            dataclasses.replace(config, segmenter=dataclasses.replace(config.segmenter, normal_fraction=f))
            for f in dict.fromkeys(fractions)
        ]
    except ValueError as exc:
        raise ConfigError(f"downstream.normal_fractions: {exc}") from None


def split_fingerprint(manifest: SplitManifest) -> str:
    """Hash of a split and of the files it lists: relative names, sizes and modification times.

    Cheap (no file is read), and it changes when a file of the split is replaced, added or deleted
    (a deleted defect type folder, a re-exported image).
    """
    files = [*manifest.train_good, *manifest.test_good]
    for split in manifest.defects.values():
        files += [entry[kind] for entry in [*split.fewshot, *split.test] for kind in ("image", "mask")]
    stats = {}
    for relative in files:
        stat = manifest.absolute(relative).stat()
        stats[relative] = [stat.st_size, stat.st_mtime_ns]
    return config_hash({"split": dataclasses.asdict(manifest), "files": stats})


def data_fingerprints(config: RunConfig, root: Path, names: list[str]) -> dict[str, str]:
    """:func:`split_fingerprint` of each category (reads and splits it: a bad category raises here)."""
    return {
        name: split_fingerprint(
            make_split(read_category(root, name, **config.data.options()), config.data.split)
        )
        for name in names
    }


def expand_grid(
    config: RunConfig,
    dataset: str | Path,
    run_dir: str | Path,
    categories: list[str],
    fingerprints: Mapping[str, str] | None = None,
) -> list[Job]:
    """Jobs in dependency order.

    Per (generator, category, seed): generate, then downstream (one job per segmenter and per value of
    the ``downstream.normal_fractions`` axis), classify and genmetrics; per (detector, category, seed):
    one detector job. ``fingerprints``: each category's data fingerprint, as
    :func:`data_fingerprints` returns them (None: computed here).
    """
    dataset, run_dir = Path(dataset), Path(run_dir)
    data = fingerprints if fingerprints is not None else data_fingerprints(config, dataset, categories)
    jobs: list[Job] = []

    def evaluate(source: JobKey, set_hash: str) -> None:
        """Downstream (per segmenter and normal fraction), classify and genmetrics jobs of a set."""
        for variant in downstream_configs(config):
            for name in config.downstream.segmenters:
                down_hash = downstream_hash(variant, set_hash, name)
                key = dataclasses.replace(source, stage=DOWNSTREAM, config_hash=down_hash, segmenter=name)
                jobs.append(Job(key, variant, dataset, run_dir, depends_on=[source]))
        stages = []
        if config.evaluation.classify:
            stages.append((CLASSIFY, classify_hash(config, set_hash)))
        if config.genmetrics.enabled:
            stages.append((GENMETRICS, genmetrics_hash(config, set_hash)))
        for stage, stage_hash in stages:
            key = dataclasses.replace(source, stage=stage, config_hash=stage_hash)
            jobs.append(Job(key, config, dataset, run_dir, depends_on=[source]))

    for generator in grid_generators(config):
        gen_hash = generation_hash(config, dataset, generator)
        filters = [f for f in config.generation.filters if f.generator == generator]
        for category in categories:
            for seed in config.seeds:
                gen_key = JobKey(GENERATE, generator, category, seed, gen_hash, data=data[category])
                jobs.append(Job(gen_key, config, dataset, run_dir))
                evaluate(gen_key, gen_hash)
                for rule_set in filters:
                    filt_hash = filter_hash(config, gen_hash, rule_set.keep)
                    filt_key = JobKey(FILTER, rule_set.row, category, seed, filt_hash, data=data[category])
                    jobs.append(Job(filt_key, config, dataset, run_dir, depends_on=[gen_key]))
                    evaluate(filt_key, filt_hash)
    for detector in config.evaluation.detectors:
        det_hash = detector_hash(config, dataset, detector)
        for category in categories:
            for seed in config.seeds:
                key = JobKey(DETECTOR, detector.row_name, category, seed, det_hash, data=data[category])
                jobs.append(Job(key, config, dataset, run_dir, detector=detector))
    return jobs


def record_grid(run_dir: Path, name: str, jobs: list[Job]) -> dict[str, Any]:
    """Append the grid of ``jobs`` to ``run_dir``'s run records (see :mod:`.record`)."""
    results = [job.result_path.relative_to(run_dir).as_posix() for job in jobs]
    generated = [
        generated_dir(run_dir, job.key.name).relative_to(run_dir).as_posix()
        for job in jobs
        if job.key.stage in (GENERATE, FILTER)
    ]
    return append_run(run_dir, name, results, generated)

"""The job generator: expand a run config into the grid of keyed jobs with their dependencies.

Example:
    >>> from anobench.benchmarks.config import load_config
    >>> from anobench.benchmarks.runner.grid import expand_grid
    >>> jobs = expand_grid(load_config("quick"), dataset="/data/synthetic", run_dir="runs/q",
    ...                    categories=["nut"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.runner.jobs import (
    CLASSIFY,
    DETECTOR,
    DOWNSTREAM,
    GENERATE,
    GENMETRICS,
    Job,
    JobKey,
    classify_hash,
    detector_hash,
    downstream_hash,
    generation_hash,
    genmetrics_hash,
)


def grid_generators(config: RunConfig) -> list[str]:
    """The generators of the run: the configured ones plus the reference rows, without repeats."""
    names = [*config.generation.reference, *config.generation.generators]
    return list(dict.fromkeys(names))


def expand_grid(
    config: RunConfig, dataset: str | Path, run_dir: str | Path, categories: list[str]
) -> list[Job]:
    """Jobs in dependency order.

    Per (generator, category, seed): generate, then downstream, classify and genmetrics; per (detector,
    category, seed): one detector job.
    """
    dataset, run_dir = Path(dataset), Path(run_dir)
    jobs: list[Job] = []
    for generator in grid_generators(config):
        gen_hash = generation_hash(config, dataset, generator)
        down_hash = downstream_hash(config, gen_hash)
        cls_hash = classify_hash(config, gen_hash)
        metrics_hash = genmetrics_hash(config, gen_hash)
        for category in categories:
            for seed in config.seeds:
                gen_key = JobKey(GENERATE, generator, category, seed, gen_hash)
                jobs.append(Job(gen_key, config, dataset, run_dir))
                down_key = JobKey(DOWNSTREAM, generator, category, seed, down_hash)
                jobs.append(Job(down_key, config, dataset, run_dir, depends_on=[gen_key]))
                if config.evaluation.classify:
                    cls_key = JobKey(CLASSIFY, generator, category, seed, cls_hash)
                    jobs.append(Job(cls_key, config, dataset, run_dir, depends_on=[gen_key]))
                if config.genmetrics.enabled:
                    metrics_key = JobKey(GENMETRICS, generator, category, seed, metrics_hash)
                    jobs.append(Job(metrics_key, config, dataset, run_dir, depends_on=[gen_key]))
    for detector in config.evaluation.detectors:
        det_hash = detector_hash(config, dataset, detector)
        for category in categories:
            for seed in config.seeds:
                key = JobKey(DETECTOR, detector.row_name, category, seed, det_hash)
                jobs.append(Job(key, config, dataset, run_dir, detector=detector))
    return jobs

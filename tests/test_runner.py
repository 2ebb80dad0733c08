import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import load_config
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.runner.backends import DaskBackend, SerialBackend, run_grid
from anobench.benchmarks.runner.grid import expand_grid, split_fingerprint
from anobench.benchmarks.runner.jobs import JobKey, generation_hash, smoke_size
from anobench.benchmarks.runner.stage_names import CLASSIFY, DETECTOR, DOWNSTREAM, GENERATE, GENMETRICS
from anobench.benchmarks.runner.stages import split_path
from anobench.generation.base import Generator
from anobench.generation.registry import _REGISTRY, get_generator, register_generator

TINY = [
    "segmenter.image_size=32", "segmenter.base_width=4", "segmenter.epochs=2",
    "segmenter.samples_per_epoch=16", "segmenter.batch_size=8", "generation.n_per_defect=4",
    "generation.generators=[]", "generation.reference=[real-fewshot]",
    "evaluation.classify=false", "evaluation.detectors=[]", "genmetrics.enabled=false",
    "data.categories=null",
    "runner.backend=serial",
]  # fmt: skip


#: Data fingerprints of categories that exist only as names (grid-shape tests read no files).
FAKE_DATA = {"nut": "nut-files", "brick": "brick-files"}


def _tiny(*extra: str):
    return load_config("quick", [*TINY, *extra])


def _results(run_dir: Path, stage: str) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((run_dir / "raw" / stage).glob("*.json"))}


def test_grid_expands_every_cell_with_dependencies(tmp_path):
    config = _tiny(
        "seeds=[0,1]", "generation.reference=[real-fewshot]", "generation.generators=[real-fewshot]"
    )
    jobs = expand_grid(config, tmp_path, tmp_path / "run", ["nut", "brick"], FAKE_DATA)
    assert len(jobs) == 1 * 2 * 2 * 2  # generators (deduplicated) x categories x seeds x stages
    keys = {j.key for j in jobs}
    assert len(keys) == len(jobs)
    for job in jobs:
        if job.key.stage == DOWNSTREAM:
            (dep,) = job.depends_on
            assert dep.stage == GENERATE and dep in keys
            assert (dep.generator, dep.category, dep.seed) == (
                job.key.generator,
                job.key.category,
                job.key.seed,
            )


@pytest.mark.parametrize(
    ("a", "b"), [("nut ü", "nut ä"), ("螺母", "螺丝"), ("pcb 1", "pcb-1"), ("Nut", "nut"), ("a b", "a__b")]
)
def test_names_built_from_category_names_never_collide(tmp_path, a, b):
    key_a, key_b = (JobKey(DOWNSTREAM, "real-fewshot", c, 0, "0123456789ab") for c in (a, b))
    assert key_a.name != key_b.name
    assert split_path(tmp_path, a, "strict") != split_path(tmp_path, b, "strict")
    for name in (key_a.name, split_path(tmp_path, a, "strict").name):
        assert name.isascii() and "/" not in name and " " not in name


def test_readable_names_stay_as_they_are_and_parts_never_run_together(tmp_path):
    key = JobKey(DOWNSTREAM, "real-fewshot", "nut", 0, "0123456789ab", data="ba9876543210")
    assert key.name == "real-fewshot__nut__all__seed0__0123456789ab__dba9876543210"
    assert split_path(tmp_path, "nut", "strict").name == "nut.strict.json"
    split_ab = JobKey(DOWNSTREAM, "a__b", "c", 0, "h").name
    assert split_ab != JobKey(DOWNSTREAM, "a", "b__c", 0, "h").name


TINY_EVAL = [
    "evaluation.classify=true", "classifier.arch=resnet18", "classifier.image_size=32",
    "classifier.epochs=1", "classifier.epoch_repeats=1",
    "evaluation.detectors=[{name: padim, image_size: 32}]",
]  # fmt: skip


def test_grid_adds_classify_per_generated_set_and_detectors_per_cell(tmp_path):
    config = _tiny("seeds=[0,1]", *TINY_EVAL)
    jobs = expand_grid(config, tmp_path, tmp_path / "run", ["nut", "brick"], FAKE_DATA)
    by_stage = {stage: [j for j in jobs if j.key.stage == stage] for stage in (GENERATE, CLASSIFY, DETECTOR)}
    assert len(by_stage[CLASSIFY]) == len(by_stage[GENERATE]) == 4
    assert len(by_stage[DETECTOR]) == 4 and all(not j.depends_on for j in by_stage[DETECTOR])
    generate_keys = {j.key for j in by_stage[GENERATE]}
    assert all(j.depends_on[0] in generate_keys for j in by_stage[CLASSIFY])
    assert {j.key.generator for j in by_stage[DETECTOR]} == {"padim[random]"}
    assert all("[random]" in j.key.name for j in by_stage[DETECTOR])  # file-name-safe, still readable


def test_classify_and_detector_jobs_write_their_metrics(tmp_path, nut_root):
    config = _tiny(f"data.root={nut_root}", *TINY_EVAL)
    summary = run_grid(expand_grid(config, nut_root, tmp_path, ["nut"]), SerialBackend(), progress=False)
    assert summary.count("done") == 4 and not summary.failures
    (classify,) = _results(tmp_path, CLASSIFY).values()
    assert 0.0 <= classify["metrics"]["cls_accuracy"] <= 1.0
    (detector,) = _results(tmp_path, DETECTOR).values()
    assert detector["row"] == "padim[random]"
    assert 0.0 <= detector["metrics"]["image_auroc"] <= 1.0 and detector["split"]["preset"] == "strict"


def test_genmetrics_job_scores_each_generated_set(tmp_path, nut_root):
    config = _tiny(
        f"data.root={nut_root}", "genmetrics.enabled=true", "genmetrics.metrics=[ic_lpips]",
        "genmetrics.ic_lpips_variant=dfmgan", "generation.n_per_defect=6",
        "genmetrics.pair_quality.enabled=false",  # quick's pair quality: test_catalogue, test_run_e2e
    )  # fmt: skip
    jobs = expand_grid(config, nut_root, tmp_path, ["nut"])
    (metrics_job,) = [j for j in jobs if j.key.stage == GENMETRICS]
    assert [d.stage for d in metrics_job.depends_on] == [GENERATE]
    summary = run_grid(jobs, SerialBackend(), progress=False)
    assert not summary.failures
    (result,) = _results(tmp_path, GENMETRICS).values()
    assert set(result["metrics"]) == {
        "ic_lpips",
        "mask_area",
        "mask_components",
        "mask_empty",
        "mask_on_object",
    }
    per_defect = result["per_defect"]
    assert set(per_defect) == {"scratch", "stain", "missing"}
    # the category value is the mean over its defect types (the reference's averaging)
    values = [row["ic_lpips"] for row in per_defect.values()]
    assert result["metrics"]["ic_lpips"] == pytest.approx(sum(values) / len(values))
    areas = [row["mask"]["area_mean"] for row in per_defect.values()]
    assert result["metrics"]["mask_area"] == pytest.approx(sum(areas) / len(areas))
    assert result["settings"]["ic_lpips_variant"]["name"] == "dfmgan"
    assert {w["official"] for w in result["weights"].values()} == {True}  # the real LPIPS weights


def test_config_change_changes_the_key(tmp_path):
    a = expand_grid(_tiny(), tmp_path, tmp_path, ["nut"], FAKE_DATA)
    b = expand_grid(_tiny("segmenter.epochs=3"), tmp_path, tmp_path, ["nut"], FAKE_DATA)
    assert a[0].key == b[0].key  # generation unchanged
    assert a[1].key != b[1].key  # downstream protocol changed
    c = expand_grid(_tiny(), tmp_path, tmp_path, ["nut"], {"nut": "other-files"})
    assert all(x.key != y.key and x.result_path != y.result_path for x, y in zip(a, c, strict=True))


def test_split_fingerprint_follows_the_files_of_the_split(tmp_path, nut_root):
    shutil.copytree(nut_root / "nut", tmp_path / "nut")

    def fingerprint() -> str:
        return split_fingerprint(make_split(read_category(tmp_path, "nut"), "strict"))

    before = fingerprint()
    assert fingerprint() == before  # cheap and stable: nothing changed
    image = tmp_path / "nut" / "test" / "scratch" / "000.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the image was replaced
    touched = fingerprint()
    assert touched != before
    shutil.rmtree(tmp_path / "nut" / "test" / "stain")
    shutil.rmtree(tmp_path / "nut" / "ground_truth" / "stain")
    assert fingerprint() not in (before, touched)


def test_generate_key_follows_the_resolved_generator_config(tmp_path, monkeypatch):
    def key(config):
        return generation_hash(config, tmp_path, "crop-paste")

    cls = get_generator("crop-paste")
    default = cls.Config().margin
    base = key(_tiny())
    assert key(_tiny(f"generation.options.crop-paste.margin={default}")) == base  # a default spelled out
    assert key(_tiny(f"generation.options.crop-paste.margin={default + 1}")) != base

    @dataclasses.dataclass
    class NewDefault(cls.Config):
        margin: int = default + 1

    monkeypatch.setattr(cls, "Config", NewDefault)  # a default changed in code: a new generated set
    assert key(_tiny()) != base
    assert key(_tiny(f"generation.options.crop-paste.margin={default}")) == base


class _Broken(Generator):
    """Always fails (for the failure-collection test)."""

    def fit(self, fewshot):
        raise RuntimeError("boom")

    def sample(self, defect, n, seed):
        raise AssertionError("unreachable")


@pytest.fixture
def broken_generator():
    register_generator("broken-test")(_Broken)
    yield "broken-test"
    _REGISTRY.pop("broken-test", None)


def test_failures_are_collected_without_stopping_other_jobs(tmp_path, nut_root, broken_generator, capsys):
    config = _tiny(f"data.root={nut_root}", f"generation.generators=[{broken_generator}]")
    jobs = expand_grid(config, nut_root, tmp_path, ["nut"])
    summary = run_grid(jobs, SerialBackend(), progress=False)
    statuses = {(o.key.generator, o.key.stage): o.status for o in summary.outcomes}
    assert statuses[("real-fewshot", GENERATE)] == statuses[("real-fewshot", DOWNSTREAM)] == "done"
    assert statuses[(broken_generator, GENERATE)] == "failed"
    assert statuses[(broken_generator, DOWNSTREAM)] == "blocked"
    assert "boom" in summary.failures[0].error
    # the CLI reports them at the end and exits 1
    sets = [a for s in [*TINY, f"generation.generators=[{broken_generator}]"] for a in ("--set", s)]
    code = main(["run", "--dataset", str(nut_root), "--out", str(tmp_path), "--no-progress", *sets])
    assert code == 1
    out = capsys.readouterr().out
    assert "failed: generate broken-test/nut" in out and "1 already done" not in out


def _cli(run_dir: Path, dataset: Path, *extra: str) -> list[str]:
    sets = [a for s in [*TINY, "seeds=[0,1]"] for a in ("--set", s)]
    return [sys.executable, "-m", "anobench.benchmarks.cli", "run", "--dataset", str(dataset),
            "--out", str(run_dir), "--no-progress", *sets, *extra]  # fmt: skip


def test_kill_9_then_rerun_completes_the_grid_with_the_same_numbers(tmp_path, nut_root):
    reference = tmp_path / "reference"
    subprocess.run(_cli(reference, nut_root), check=True, capture_output=True, timeout=300)

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_cli(interrupted, nut_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not list((interrupted / "raw" / DOWNSTREAM).glob("*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: one downstream result exists, the rest is in flight
    proc.wait()
    assert len(_results(interrupted, DOWNSTREAM)) < 2, "the run finished before it could be killed"

    subprocess.run(_cli(interrupted, nut_root), check=True, capture_output=True, timeout=300)
    ref, got = _results(reference, DOWNSTREAM), _results(interrupted, DOWNSTREAM)
    assert sorted(ref) == sorted(got) and len(got) == 2
    for name in ref:
        assert got[name]["metrics"] == pytest.approx(ref[name]["metrics"], abs=1e-6)
    for manifest in (interrupted / "generated").glob("*/manifest.jsonl"):
        records = [json.loads(line) for line in manifest.read_text().splitlines()]
        keys = [(r["category"], r["defect"], r["index"]) for r in records]
        assert len(keys) == len(set(keys)) == 3 * 4  # no lost and no duplicated pair
    assert not list(interrupted.rglob("*.tmp"))


def test_dask_local_cluster_runs_the_grid_like_serial(tmp_path, nut_root):
    config = _tiny(f"data.root={nut_root}")
    serial = run_grid(
        expand_grid(config, nut_root, tmp_path / "serial", ["nut"]), SerialBackend(), progress=False
    )
    dask = run_grid(
        expand_grid(config, nut_root, tmp_path / "dask", ["nut"]), DaskBackend(n_workers=2), progress=False
    )
    assert serial.count("done") == dask.count("done") == 2 and not dask.failures
    a, b = _results(tmp_path / "serial", DOWNSTREAM), _results(tmp_path / "dask", DOWNSTREAM)
    assert a.keys() == b.keys()
    for name in a:  # workers run torch with one thread each, so training floats may differ slightly
        assert b[name]["metrics"].keys() == a[name]["metrics"].keys()
        assert all(0.0 <= v <= 1.0 for v in b[name]["metrics"].values())
    # the deterministic part, the generated pairs, is byte-identical
    (gen_a,), (gen_b,) = (list((tmp_path / run / "generated").iterdir()) for run in ("serial", "dask"))
    files_a = sorted(p.relative_to(gen_a) for p in gen_a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(gen_b) for p in gen_b.rglob("*.png")) and files_a
    assert all((gen_a / f).read_bytes() == (gen_b / f).read_bytes() for f in files_a)


def test_offline_dualanodiff_is_marked_smoke_size_and_the_rest_is_not():
    quick = load_config("quick")
    assert smoke_size(quick, "dualanodiff") and smoke_size(quick, "dualanodiff-bcm")
    assert not any(smoke_size(quick, g) for g in ("crop-paste", "real-fewshot", "padim", "nonexistent"))
    sd15 = "generation.options.dualanodiff.pretrained_model_name_or_path=/models/sd15"
    with_sd = load_config("quick", [sd15])
    assert not smoke_size(with_sd, "dualanodiff")


def test_dask_starts_the_longest_chain_first(tmp_path, nut_root, monkeypatch):
    import anobench.benchmarks.runner.backends as backends

    # stored costs that make the detector job (listed last) the longest chain: one worker runs it first
    costs = {"cpu_cores": 2, "stages": {"detector": {"seconds": 1000.0}, "generate": {"seconds": 1.0}}}
    monkeypatch.setattr(backends, "load_costs", lambda: costs)
    config = _tiny(f"data.root={nut_root}", "evaluation.detectors=[{name: padim, image_size: 32}]")
    jobs = expand_grid(config, nut_root, tmp_path / "run", ["nut"])
    assert [j.key.stage for j in jobs] == [GENERATE, DOWNSTREAM, DETECTOR]
    order = []
    DaskBackend(n_workers=1).run(jobs, lambda outcome: order.append((outcome.key.stage, outcome.status)))
    assert order == [(DETECTOR, "done"), (GENERATE, "done"), (DOWNSTREAM, "done")]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),  # cgroup v2
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota_caps_the_usable_cpus(tmp_path, files, expected):
    from anobench.benchmarks.cpus import affinity_cpus, cgroup_cpu_quota, usable_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == expected
    affinity = affinity_cpus()
    assert usable_cpus(tmp_path) == (affinity if expected is None else min(affinity, math.ceil(expected)))


def test_local_workers_get_torch_threads_and_not_dasks_malloc_trim(monkeypatch):
    import dask
    from distributed import Client, LocalCluster

    from anobench.benchmarks.runner.backends import local_worker_settings, spawn_settings

    def worker_environment():
        return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

    # as left by an earlier cluster with Dask's defaults: the nanny would pass this on to new workers
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    before = dict(os.environ)
    settings = spawn_settings(local_worker_settings(1))
    cluster_args = {"n_workers": 1, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    with settings, LocalCluster(**cluster_args) as cluster, Client(cluster) as client:
        (seen,) = client.run(worker_environment).values()
        profiling = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert tuple(seen) == ("1", None)
    assert list(profiling.values()) == [False]
    assert dict(os.environ) == before  # this process's environment as it was


def test_dask_workers_benchmark_runs_every_setting(capsys):
    from anobench.benchmarks.perf import dask_workers

    assert dask_workers.main(["--steps", "1", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(dask_workers.SETTINGS)
    assert all(float(line.split()[1]) > 0 for line in lines)

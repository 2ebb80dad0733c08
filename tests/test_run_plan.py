from pathlib import Path

import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import load_config
from anobench.benchmarks.runner.plan import job_seconds, load_costs


def test_plan_prints_the_grid_and_totals_and_runs_nothing(tmp_path, nut_root, capsys):
    run_dir = tmp_path / "run"
    args = ["--dataset", str(nut_root), "--out", str(run_dir), "--set", "data.categories=null", "--plan"]
    code = main(["run", "quick", *args, "--no-probe"])
    assert code == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    # one category: 7 generators -> 7 segmenter jobs, the two DualAnoDiff variants costed apart
    assert rows["downstream"][1] == "7" and rows["generate:dualanodiff"][1] == "1"
    costs = load_costs()
    expected = 7 * costs["stages"]["downstream"]["seconds"]
    assert float(rows["downstream"][3]) == pytest.approx(expected, abs=0.1)
    assert "total: 30 jobs" in out and "hours" in out
    assert not run_dir.exists()  # no job ran, nothing written


def test_segmenter_cost_scales_with_its_settings():
    entry = load_costs()["stages"]["downstream"]
    quick = load_config("quick")
    bigger = load_config("quick", ["segmenter.image_size=128", "segmenter.epochs=40"])
    assert job_seconds(entry, quick) == pytest.approx(entry["seconds"])
    assert job_seconds(entry, bigger) == pytest.approx(entry["seconds"] * 4 * 2)


def _job(stage, generator, *deps, config=None):
    from anobench.benchmarks.runner.jobs import Job, JobKey

    key = JobKey(stage, generator, "nut", 0, "h")
    return Job(
        key, config or load_config("quick"), Path("data"), Path("run"), depends_on=[d.key for d in deps]
    )


COSTS = {"cpu_cores": 2, "stages": {"generate": {"seconds": 10.0}, "generate:slow": {"seconds": 100.0},
                                    "downstream": {"seconds": 50.0}}}  # fmt: skip


def test_critical_paths_and_wall_clock_longest_chain_first():
    from anobench.benchmarks.runner.plan import critical_paths, longest_chain_first, wall_seconds

    short = [_job("generate", f"short{i}") for i in range(4)]
    slow = _job("generate", "slow")
    after = _job("downstream", "slow", slow)
    jobs = [*short, slow, after]  # dependency order, the slow chain submitted last
    paths = critical_paths(jobs, COSTS)
    assert paths[slow.key] == 150.0 and paths[after.key] == 50.0 and paths[short[0].key] == 10.0
    assert longest_chain_first(jobs, paths) == [slow, after, *short]  # a dependency order
    assert wall_seconds(jobs, COSTS, workers=1) == 190.0  # the sum
    # by hand: the slow chain at once on one worker (0-100, 100-150), the four short jobs on the other
    # (0-40); in submission order the slow chain would start at 20 and end at 170
    assert wall_seconds(jobs, COSTS, workers=2) == 150.0
    assert wall_seconds(jobs, COSTS, workers=8) == 150.0
    unknown = _job("classify", "slow", slow)  # no measurement: counts 0 s
    assert wall_seconds([*jobs, unknown], COSTS, workers=2) == 150.0


def test_plan_prints_the_wall_clock_of_a_parallel_backend(tmp_path, nut_root, capsys):
    args = ["--dataset", str(nut_root), "--out", str(tmp_path / "run"), "--set", "data.categories=null"]
    args += ["--plan", "--no-probe"]
    assert main(["run", "quick", *args, "--backend", "dask", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("wall clock with 2 workers"))
    total = float(out.split("total: ")[1].split("about ")[1].split(" s")[0])
    wall = float(line.split("about ")[1].split(" s")[0])
    assert total / 2 <= wall < total
    assert main(["run", "quick", *args, "--backend", "serial"]) == 0
    assert "wall clock" not in capsys.readouterr().out


def test_plan_scales_the_stored_seconds_by_the_speed_probe(tmp_path, nut_root, capsys, monkeypatch):
    import anobench.benchmarks.commands.run as run_command

    costs = load_costs()
    stored = float(costs["probe"]["seconds"])
    monkeypatch.setattr(run_command, "probe_seconds", lambda: 2.5 * stored)  # a machine 2.5x slower
    args = ["--dataset", str(nut_root), "--out", str(tmp_path / "run"), "--set", "data.categories=null"]
    assert main(["run", "quick", *args, "--plan"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    expected = 2.5 * 7 * costs["stages"]["downstream"]["seconds"]
    assert float(rows["downstream"][3]) == pytest.approx(expected, abs=0.1)
    assert "on this machine, serial (costs.json x 2.50" in out


def test_speed_probe_times_quick_size_segmenter_steps():
    from anobench.benchmarks.runner.plan import PROBE, probe_seconds, probed_costs

    seconds = probe_seconds()
    assert 0 < seconds < 60
    costs = {"probe": {"seconds": 2.0}, "stages": {"generate": {"seconds": 3.0}}}
    scaled = probed_costs(costs, 5.0)
    assert scaled["stages"]["generate"]["seconds"] == 7.5 and scaled["probed"]["factor"] == 2.5
    assert costs["stages"]["generate"]["seconds"] == 3.0  # the stored table is left as it was
    assert PROBE["image_size"] == load_config("quick").segmenter.image_size

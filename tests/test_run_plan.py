import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import load_config
from anobench.benchmarks.runner.plan import job_seconds, load_costs


def test_plan_prints_the_grid_and_totals_and_runs_nothing(tmp_path, nut_root, capsys):
    run_dir = tmp_path / "run"
    args = ["--dataset", str(nut_root), "--out", str(run_dir), "--set", "data.categories=null", "--plan"]
    code = main(["run", "quick", *args])
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

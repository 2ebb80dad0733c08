import json

from anobench.benchmarks.perf import run_times
from anobench.benchmarks.runner.jobs import JobKey, result_path
from anobench.benchmarks.runner.record import append_run

#: (stage, generator, category, segmenter, seconds, finished, minutes after 12:00)
JOBS = [
    ("generate", "dualanodiff", "nut", None, 90.0, 2),
    ("generate", "dualanodiff", "brick", None, 110.0, 4),
    ("generate", "crop-paste", "nut", None, 1.0, 1),
    ("downstream", "dualanodiff", "nut", "draem-unet", 20.0, 5),
    ("downstream", "crop-paste", "nut", "draem-unet", 16.0, 3),
    ("downstream", "crop-paste", "nut", "smp-unet", 50.0, 10),
]


def _fake_run(tmp_path):
    run_dir = tmp_path / "run"
    paths = []
    for stage, generator, category, segmenter, seconds, minutes in JOBS:
        key = JobKey(stage, generator, category, 0, "h", segmenter=segmenter)
        path = result_path(run_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key.__dict__, "metrics": {}, "timings": {"seconds": seconds},
                   "finished_at": f"2026-12-03T12:{minutes:02d}:00+00:00"}  # fmt: skip
        path.write_text(json.dumps(payload))
        paths.append(path.relative_to(run_dir).as_posix())
    record = append_run(run_dir, "quick", paths, [])
    record["started_at"] = "2026-12-03T12:00:00+00:00"  # the record, rewritten with a known start
    (run_dir / "runs.jsonl").write_text(json.dumps(record) + "\n")
    return run_dir


def test_times_per_stage_and_generator_and_the_wall_clock(tmp_path, capsys):
    times, wall = run_times.job_times(_fake_run(tmp_path))
    assert len(times) == 6 and wall == 600.0  # 12:00 to the last finish, 12:10
    rows = {(r["stage"], r["generator"]): r for r in run_times.time_rows(times)}
    assert rows["generate", "dualanodiff"] == {"stage": "generate", "generator": "dualanodiff", "jobs": 2,
                                               "total_s": 200.0, "mean_s": 100.0, "max_s": 110.0}  # fmt: skip
    assert rows["downstream", "crop-paste"]["total_s"] == 66.0
    assert run_times.main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "per stage: generate 201 s, downstream 86 s" in out
    assert "6 jobs, 287 s of jobs; wall clock 600 s" in out


def test_write_costs_takes_the_mean_per_costed_stage_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    run_dir = _fake_run(tmp_path)
    stored = {
        "source": "old", "cpu_cores": 2, "gpu": None, "probe": {"seconds": 9.0},
        "stages": {
            "generate:dualanodiff": {"seconds": 1.0},
            "generate": {"seconds": 1.0},
            "downstream": {"seconds": 1.0, "reference": {"segmenter.epochs": 20},
                           "exponents": {"segmenter.epochs": 1}, "peak_mb": 780},
            "downstream:smp-unet": {"seconds": 1.0},
            "classify": {"seconds": 1.8},
        },
    }  # fmt: skip
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(stored))
    monkeypatch.setattr(run_times, "probe_median", lambda: 1.25)
    assert run_times.main([str(run_dir), "--write-costs", str(costs), "--source", "a test run"]) == 0
    written = json.loads(costs.read_text())
    stages = written["stages"]
    assert stages["generate:dualanodiff"]["seconds"] == 100.0  # (90 + 110) / 2
    assert stages["generate"]["seconds"] == 1.0  # crop-paste's one job
    assert stages["downstream"] == {**stored["stages"]["downstream"], "seconds": 18.0}  # (20 + 16) / 2
    assert stages["downstream:smp-unet"]["seconds"] == 50.0
    assert stages["classify"] == {"seconds": 0.25}  # no classify job in the run: 1.8 x probes 1.25 / 9
    assert written["probe"] == {"seconds": 1.25} and written["source"] == "a test run"
    assert "wrote" in capsys.readouterr().out


def test_a_folder_without_results_is_one_line(tmp_path, capsys):
    assert run_times.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no raw/ folder" in err and len(err.splitlines()) == 1


def test_probe_median_runs_the_probe_in_fresh_processes():
    assert 0 < run_times.probe_median(processes=1) < 60

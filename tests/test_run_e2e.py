import json
import shutil
from pathlib import Path

import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.gate import run_metrics
from anobench.benchmarks.report.collect import collect_results
from anobench.benchmarks.report.tables import metric_table
from anobench.generation.format import read_generated_set

TINY_SETTINGS = [
    "segmenter.image_size=32", "segmenter.base_width=4", "segmenter.epochs=1",
    "segmenter.samples_per_epoch=8", "segmenter.batch_size=8", "generation.n_per_defect=4",
    "generation.generators=[]", "generation.reference=[real-fewshot]", "runner.backend=serial",
    "evaluation.classify=false", "evaluation.detectors=[]", "genmetrics.enabled=false",
    "data.categories=null",
]  # fmt: skip
TINY = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]


def test_run_end_to_end_on_a_tiny_configuration(tmp_path, nut_root, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", "quick", "--dataset", str(nut_root), "--out", str(run_dir), "--no-progress", *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "image_auroc" in out and "pixel_auroc" in out and "nut" in out

    (result_file,) = (run_dir / "raw" / "downstream").glob("real-fewshot__nut__all__seed0__*.json")
    result = json.loads(result_file.read_text())
    assert set(result) >= {"cell", "metrics", "config", "versions", "git_sha", "timings", "split"}
    assert 0.0 <= result["metrics"]["image_auroc"] <= 1.0 and 0.0 <= result["metrics"]["pixel_auroc"] <= 1.0
    assert result["config"]["segmenter.epochs"] == 1
    assert result["versions"]["torch"].startswith("2.14.1")
    assert result["split"] == {"preset": "strict", "overlap_count": 0, "format": "mvtec"}

    (generated,) = (run_dir / "generated").glob("real-fewshot__nut__all__seed0__*")
    lines = (generated / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 4  # three defect types x n_per_defect
    record = json.loads(lines[0])
    assert record["generator"] == "real-fewshot" and (generated / record["mask"]).exists()
    assert (run_dir / "splits" / "nut.strict.json").exists()


def test_run_with_a_bad_dataset_exits_2(tmp_path, capsys):
    assert main(["run", "--dataset", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "data.root" in capsys.readouterr().err


def test_generate_command_writes_a_resumable_set(tmp_path, nut_root, capsys):
    out = tmp_path / "gen"
    args = [
        "generate",
        "--generator",
        "real-fewshot",
        "--dataset",
        str(nut_root),
        "--out",
        str(out),
        "-n",
        "3",
    ]
    assert main(args) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 9
    assert main(args) == 0  # rerun: everything exists, nothing is written twice
    assert (out / "manifest.jsonl").read_text().splitlines() == lines
    assert (out / "splits" / "nut.strict.json").exists()
    assert main([*args[:-2], "-n", "0"]) == 2
    assert main([*args, "--option", "colour=red"]) == 2
    assert "unknown option(s) colour" in capsys.readouterr().err


def test_run_with_a_category_the_dataset_lacks_exits_2(tmp_path, nut_root, capsys):
    code = main(
        ["run", "--dataset", str(nut_root), "--out", str(tmp_path), "--no-progress"]
    )  # quick: brick, nut
    assert code == 2
    err = capsys.readouterr().err
    assert "data.categories: brick not in" in err and "available: nut" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("generation.generators=[foo]", "generation.generators: no generator named foo"),
        ("generation.options.perlin.texture_dir=/definitely/not/here", "texture_dir=/definitely/not/here"),
        ("generation.options.perlinn.beta_max=0.5", "generation.options.perlinn: no generator named perlinn"),
        ("generation.options.nsa.tries=0", "generation.options.nsa.tries=0: must be at least 1"),
        ("genmetrics.inception_weights=/definitely/not/here.pth", "genmetrics.inception_weights"),
    ],
)
def test_run_checks_generators_and_paths_before_any_job(tmp_path, nut_root, capsys, setting, message):
    run_dir = tmp_path / "run"
    args = ["run", "quick", "--dataset", str(nut_root), "--out", str(run_dir), "--no-progress", *TINY]
    assert main([*args, "--set", "generation.generators=[nsa]", "--set", setting]) == 2  # last --set wins
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (run_dir / "raw").exists()


def test_run_checks_the_dataset_before_any_job(tmp_path, nut_root, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(nut_root / "nut", broken / "nut")
    (broken / "nut" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    run_dir = tmp_path / "run"
    args = ["run", "quick", "--dataset", str(broken), "--out", str(run_dir), "--no-progress", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "000.png: no mask" in err and "Traceback" not in err
    assert not (run_dir / "raw").exists()


def _run(dataset, run_dir, *settings: str) -> list[str]:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    return ["run", "quick", "--dataset", str(dataset), "--out", str(run_dir), "--no-progress", *TINY, *sets]


def _drop_defect(category_dir, defect: str) -> None:
    shutil.rmtree(category_dir / "test" / defect)
    shutil.rmtree(category_dir / "ground_truth" / defect)


def test_categories_whose_names_slug_alike_get_their_own_results(tmp_path, nut_root, capsys):
    dataset = tmp_path / "data"
    for name in ("pcb 1", "pcb-1"):
        shutil.copytree(nut_root / "nut", dataset / name)
    _drop_defect(dataset / "pcb-1", "stain")  # so the two categories' results differ
    run_dir = tmp_path / "run"
    assert main(_run(dataset, run_dir)) == 0
    assert "4 jobs run, 0 already done" in capsys.readouterr().out  # both categories ran

    results = [json.loads(p.read_text()) for p in (run_dir / "raw" / "downstream").glob("*.json")]
    per_defect = {r["cell"]["category"]: set(r["per_defect"]) for r in results}
    assert per_defect == {"pcb 1": {"missing", "scratch", "stain"}, "pcb-1": {"missing", "scratch"}}
    splits = {json.loads(p.read_text())["category"] for p in (run_dir / "splits").glob("*.json")}
    assert splits == {"pcb 1", "pcb-1"}
    sets = {p.name for p in (run_dir / "generated").iterdir()}
    assert len(sets) == 2 and all((run_dir / "generated" / s / "manifest.jsonl").is_file() for s in sets)

    assert main(["report", str(run_dir)]) == 0
    table = (run_dir / "report" / "tables" / "detection_image_auroc.csv").read_text()
    assert "pcb 1," in table and "pcb-1," in table
    curves = {p.name for p in (run_dir / "report" / "figures").glob("curves_*.png")}
    assert len(curves) in (0, 2)  # one figure per category when scores are saved


def test_report_and_check_use_only_the_last_run_configuration(tmp_path, nut_root, capsys):
    run_dir = tmp_path / "run"
    assert main(_run(nut_root, run_dir, "generation.generators=[crop-paste]")) == 0
    first = json.loads((run_dir / "runs.jsonl").read_text().splitlines()[-1])["run_config"]
    old = {p.name for p in (run_dir / "raw" / "downstream").glob("*.json")}
    assert len(old) == 2
    # rerun in the same folder: another segmenter and the crop-paste generator removed from the config
    assert main(_run(nut_root, run_dir, "segmenter.epochs=2")) == 0
    assert "1 jobs run, 1 already done" in capsys.readouterr().out  # real-fewshot's generated set reused
    (new,) = {p.name for p in (run_dir / "raw" / "downstream").glob("*.json")} - old
    expected = json.loads((run_dir / "raw" / "downstream" / new).read_text())["metrics"]

    assert main(["report", str(run_dir)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("report: run config ") and "3 older results ignored" in line  # 2 downstream, 1 set
    assert first not in line
    frame = collect_results(run_dir)
    assert set(frame["generator"]) == {"real-fewshot"}
    assert set(frame["path"].map(lambda p: p.rsplit("/", 1)[-1])) == {new}
    assert dict(zip(frame["metric"], frame["value"], strict=True)) == expected
    table = (run_dir / "report" / "tables" / "detection_image_auroc.csv").read_text()
    assert "crop-paste" not in table
    assert run_metrics(run_dir)["downstream/real-fewshot/nut/image_auroc"] == expected["image_auroc"]
    baseline = tmp_path / "baseline.json"
    assert main(["check", str(run_dir), "--write-baseline", str(baseline)]) == 0
    assert not [k for k in json.loads(baseline.read_text())["metrics"] if "crop-paste" in k]
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "check: run config" in out and "3 older results ignored" in out

    # the first configuration stays reachable by its hash (a prefix is enough); unknown ones are errors
    older = run_metrics(run_dir, first[:6])
    assert "downstream/crop-paste/nut/image_auroc" in older
    assert main(["report", str(run_dir), "--run-config", "ffffffff"]) == 2
    assert "matches no run config" in capsys.readouterr().err


def test_a_deleted_defect_type_reruns_the_affected_jobs(tmp_path, nut_root, capsys):
    dataset = tmp_path / "data"
    shutil.copytree(nut_root / "nut", dataset / "nut")
    run_dir = tmp_path / "run"
    assert main(_run(dataset, run_dir)) == 0
    assert main(_run(dataset, run_dir)) == 0
    assert "0 jobs run, 2 already done" in capsys.readouterr().out  # same files: nothing to redo

    _drop_defect(dataset / "nut", "stain")
    assert main(_run(dataset, run_dir)) == 0
    assert "2 jobs run, 0 already done" in capsys.readouterr().out
    frame = collect_results(run_dir)
    (path,) = set(frame["path"])
    assert "stain" not in json.loads(Path(path).read_text())["per_defect"]


# ---------------------------------------------- generation.filters: a filtered set is its own row

FILTERED = "crop-paste+filtered"
SETTINGS = [
    "generation.generators=[crop-paste]", "generation.reference=[]",
    "generation.filters=[{generator: crop-paste, keep: ['nn_distance <= p50']}]",
    "genmetrics.pair_quality.detector_image_size=64", "genmetrics.pair_quality.feature_size=64",
    "genmetrics.pair_quality.coreset_sampling_ratio=0.05",
]  # fmt: skip


@pytest.mark.slow  # the filter job scores the pairs (detector fit + features): ~1-2 min on 2 loaded cores
def test_a_filtered_set_is_its_own_row_with_fewer_pairs(tmp_path, nut_root):
    run_dir = tmp_path / "run"
    args = ["run", "quick", "--dataset", str(nut_root), "--out", str(run_dir), "--no-progress", *TINY]
    assert main([*args, *(a for s in SETTINGS for a in ("--set", s))]) == 0
    (result,) = (run_dir / "raw" / "filter").glob("*.json")
    payload = json.loads(result.read_text())
    summary, filtered = payload["filter"], Path(payload["generated_dir"])
    source = Path(summary["source"])
    assert 0 < summary["kept"] < summary["total"] == sum(map(len, read_generated_set(source).values()))
    assert sum(map(len, read_generated_set(filtered).values())) == summary["kept"]
    assert (source / "scores.jsonl").is_file()  # the source set's scores the rules read
    shown, _ = metric_table(collect_results(run_dir), "image_auroc")
    assert set(shown.columns) == {"crop-paste", FILTERED}


def test_filters_are_checked_at_load(tmp_path, nut_root, capsys):
    args = [
        "run",
        "quick",
        "--dataset",
        str(nut_root),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        *TINY,
    ]
    bad = [
        ("generation.filters=[{generator: crop-paste, keep: ['mask_adherence >> 1']}]", "keep: filter rule"),
        ("generation.filters=[{generator: nsa, keep: ['mask_adherence >= 0.5']}]", "generation.filters"),
    ]
    for setting, message in bad:
        assert main([*args, "--set", "generation.generators=[crop-paste]", "--set", setting]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

import json
import shutil

import pytest

from anobench.benchmarks.cli import main

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
    assert result["split"] == {"preset": "strict", "overlap_count": 0}

    (generated,) = (run_dir / "generated").glob("real-fewshot__seed0__*")
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

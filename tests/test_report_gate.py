import json
import re
from pathlib import Path

import pandas as pd
import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.report.collect import HELD_OUT_ROW, collect_results, select_run
from anobench.benchmarks.report.page import render_report
from anobench.benchmarks.report.tables import metric_table, summary_table


def _write(
    run_dir: Path,
    generator: str,
    category: str,
    seed: int,
    metrics: dict,
    selection="last-epoch",
    when="1",
    scores_file: Path | None = None,
):
    path = run_dir / "raw" / "downstream" / f"{generator}__{category}__all__seed{seed}__h.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": {"stage": "downstream", "generator": generator, "category": category, "seed": seed,
                "config_hash": "h", "defect": "all"},
        "cell": {"generator": generator, "category": category, "seed": seed},
        "metrics": metrics, "selection": selection, "finished_at": when,
        "scores_file": str(scores_file) if scores_file else None,
    }  # fmt: skip
    path.write_text(json.dumps(payload))


@pytest.fixture
def run_dir(tmp_path):
    values = {("a", "nut", 0): 0.9, ("a", "nut", 1): 0.7, ("a", "brick", 0): 0.5, ("a", "brick", 1): 0.3,
              ("b", "nut", 0): 0.6, ("b", "brick", 0): 0.4}  # fmt: skip
    for (gen, cat, seed), v in values.items():
        _write(
            tmp_path,
            gen,
            cat,
            seed,
            {"image_auroc": v, "pixel_auroc": v / 2},
            "best-on-test" if gen == "b" else "last-epoch",
        )
    return tmp_path


def test_tables_are_mean_and_std_over_seeds(run_dir):
    frame = collect_results(run_dir)
    shown, means = metric_table(frame, "image_auroc")
    assert shown.loc["nut", "a"] == "0.800 ± 0.141"  # mean(0.9, 0.7), sample std 0.1414
    assert shown.loc["brick", "a"] == "0.400 ± 0.141"
    # Average: per seed over categories (0.7, 0.5), then mean ± std over seeds
    assert shown.loc["Average", "a"] == "0.600 ± 0.141"
    assert means.loc["Average", "a"] == pytest.approx(0.6)
    assert shown.loc["nut", "b†"] == "0.600"  # best-on-test is marked with a dagger, one seed: no std
    assert summary_table(frame).loc["a", "pixel_auroc"] == "0.300 ± 0.071"


def test_newest_result_wins_for_a_repeated_key(run_dir):
    _write(run_dir, "a", "nut", 0, {"image_auroc": 0.1}, when="2")
    path = run_dir / "raw" / "downstream" / "a__nut__all__seed0__h2.json"
    (run_dir / "raw" / "downstream" / "a__nut__all__seed0__h.json").rename(path)
    _write(run_dir, "a", "nut", 0, {"image_auroc": 0.9}, when="1")
    frame = collect_results(run_dir)
    rows = frame[
        (frame.generator == "a")
        & (frame.category == "nut")
        & (frame.seed == 0)
        & (frame.metric == "image_auroc")
    ]
    assert rows["value"].tolist() == [0.1]
    assert select_run(run_dir).describe() == "no run record (runs.jsonl): the newest of 7 results per cell"


def test_report_writes_tables_figures_and_page(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    page = run_dir / "report" / "report.md"
    text = page.read_text()
    assert "image_auroc" in text and "†" in text and "Published numbers" in text
    for ext in ("md", "csv", "tex"):
        assert (run_dir / "report" / "tables" / f"detection_image_auroc.{ext}").exists()
    assert "DualAnoDiff" in (run_dir / "report" / "tables" / "paper_reported.csv").read_text()
    figure = run_dir / "report" / "figures" / "bars_image_auroc.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "figures/bars_image_auroc.png" in text
    assert render_report(run_dir, run_dir / "elsewhere").exists()


def test_report_on_an_empty_run_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "run `anobench run` first" in capsys.readouterr().err


def test_gate_passes_within_tolerance_and_fails_on_regression(run_dir, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert (
        main(["check", str(run_dir), "--write-baseline", str(baseline), "--tolerance", "pixel_auroc=0.02"])
        == 0
    )
    payload = json.loads(baseline.read_text())
    assert payload["metrics"]["downstream/a/nut/image_auroc"] == pytest.approx(0.8)
    assert payload["tolerances"] == {"default": 0.05, "pixel_auroc": 0.02}
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0

    _write(run_dir, "a", "nut", 1, {"image_auroc": 0.65, "pixel_auroc": 0.35})  # mean 0.775: -0.025, ok
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0
    _write(run_dir, "a", "nut", 1, {"image_auroc": 0.5, "pixel_auroc": 0.35})  # mean 0.70: -0.10, fails
    capsys.readouterr()
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "regression: downstream/a/nut/image_auroc" in out and "REGRESSED" in out
    assert "pixel_auroc" not in out.split("regression:")[1]


def test_gate_names_run_metrics_the_baseline_lacks(run_dir, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert main(["check", str(run_dir), "--write-baseline", str(baseline)]) == 0
    payload = json.loads(baseline.read_text())
    del payload["metrics"]["downstream/a/nut/image_auroc"]  # e.g. a metric added after calibration
    baseline.write_text(json.dumps(payload))
    capsys.readouterr()
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0
    err = capsys.readouterr().err
    assert "not in the baseline" in err and "downstream/a/nut/image_auroc" in err


def test_gate_compares_the_average_over_categories(run_dir, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert main(["check", str(run_dir), "--write-baseline", str(baseline)]) == 0
    metrics = json.loads(baseline.read_text())["metrics"]
    assert metrics["downstream/a/Average/image_auroc"] == pytest.approx((0.8 + 0.4) / 2)
    assert "downstream/b/Average/image_auroc" in metrics  # b has nut and brick (one seed each)
    # -0.04 in both categories: each cell within 0.05, and so is the average.
    _write(run_dir, "a", "nut", 1, {"image_auroc": 0.62, "pixel_auroc": 0.35})
    _write(run_dir, "a", "brick", 1, {"image_auroc": 0.22, "pixel_auroc": 0.15})
    capsys.readouterr()
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 0


def _copy_run(run_dir: Path, target: Path, shift: dict) -> Path:
    """A copy of ``run_dir`` whose (generator, category) image_auroc values move by ``shift``."""
    for path in (run_dir / "raw" / "downstream").glob("*.json"):
        payload = json.loads(path.read_text())
        cell = payload["cell"]
        payload["metrics"]["image_auroc"] += shift.get((cell["generator"], cell["category"]), 0.0)
        out = target / "raw" / "downstream" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload))
    return target


def test_baseline_from_perturbed_runs_calibrates_the_tolerances(run_dir, tmp_path, capsys):
    # Three runs of "the same" grid; cell (a, nut) is noisy (+-0.2 per seed), the others move 0.01.
    runs = [run_dir]
    for i, d in enumerate([0.2, -0.2]):
        shift = {("a", "nut"): d, ("a", "brick"): 0.01 * (i + 1), ("b", "nut"): 0.01, ("b", "brick"): -0.01}
        runs.append(_copy_run(run_dir, tmp_path / f"run{i}", shift))
    baseline = tmp_path / "baseline.json"
    args = ["check", *map(str, runs), "--write-baseline", str(baseline), "--noise-factor", "3"]
    assert main(args) == 0
    payload = json.loads(baseline.read_text())
    # Mean over the runs; (a, nut) has std 0.2 over the three runs, so its tolerance is 3 x 0.2.
    assert payload["metrics"]["downstream/a/nut/image_auroc"] == pytest.approx(0.8)
    assert payload["tolerances"]["downstream/a/nut/image_auroc"] == pytest.approx(0.6)
    # The quiet cells get the pooled noise of every downstream/image_auroc cell (sqrt of mean variance).
    stds = {("a", "nut"): 0.2, ("a", "brick"): 0.01, ("b", "nut"): 0.005773, ("b", "brick"): 0.005773}
    pooled = (sum(v**2 for v in stds.values()) / 4) ** 0.5
    assert payload["calibration"]["pooled_noise"]["downstream/image_auroc"] == pytest.approx(pooled, abs=1e-4)
    assert payload["tolerances"]["downstream/b/nut/image_auroc"] == pytest.approx(3 * pooled, abs=1e-3)
    # pixel_auroc never moved: no calibrated entry, the floor applies.
    assert not any(k.endswith("pixel_auroc") for k in payload["tolerances"] if "/" in k)
    # Every calibration run passes its own gate; a drop beyond the calibrated tolerance fails.
    for run in runs:
        assert main(["check", str(run), "--baseline", str(baseline)]) == 0
    broken = _copy_run(run_dir, tmp_path / "broken", {("b", "nut"): -0.5})
    capsys.readouterr()
    assert main(["check", str(broken), "--baseline", str(baseline)]) == 1
    assert "regression: downstream/b/nut/image_auroc" in capsys.readouterr().out


def test_baseline_records_which_values_each_run_fails_against_the_others(run_dir, tmp_path, capsys):
    """Leave-one-out: a run far off in one cell fails it against a baseline of the quiet runs."""
    quiet = {(g, c): d for g in "ab" for c in ("nut", "brick") for d in [0.01]}
    runs = [
        run_dir,
        _copy_run(run_dir, tmp_path / "up", quiet),
        _copy_run(run_dir, tmp_path / "down", {k: -v for k, v in quiet.items()}),
        _copy_run(run_dir, tmp_path / "off", {("b", "nut"): -0.3}),
    ]
    baseline = tmp_path / "baseline.json"
    capsys.readouterr()
    assert main(["check", *map(str, runs), "--write-baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    loo = json.loads(baseline.read_text())["calibration"]["leave_one_out"]
    # b/nut: 0.6 (three runs, std 0.01) against the held-out 0.3; b's Average: 0.5 against 0.35
    assert loo[str(runs[3])] == ["downstream/b/Average/image_auroc", "downstream/b/nut/image_auroc"]
    assert all(loo[str(r)] == [] for r in runs[:3])
    gated = len(json.loads(baseline.read_text())["metrics"])
    assert f"leave-one-out: {runs[3]} fails 2 of {gated} against a baseline of the other runs: " in out
    assert f"leave-one-out: {runs[0]} fails 0 of {gated}" in out
    # two runs: nothing to hold out
    assert main(["check", *map(str, runs[:2]), "--write-baseline", str(baseline)]) == 0
    assert "leave_one_out" not in json.loads(baseline.read_text())["calibration"]
    assert "leave-one-out" not in capsys.readouterr().out


def test_check_compares_one_run_and_rejects_bad_tolerances(run_dir, tmp_path, capsys):
    assert main(["check", str(run_dir), str(run_dir), "--baseline", str(tmp_path / "b.json")]) == 2
    assert "one run at a time" in capsys.readouterr().err
    bad = ["check", str(run_dir), "--write-baseline", str(tmp_path / "b.json"), "--tolerance", "x"]
    assert main(bad) == 2


def test_gate_fails_on_missing_metric_and_respects_lower_is_better(run_dir, tmp_path, capsys):
    baseline = tmp_path / "b.json"
    metrics = {
        "downstream/a/nut/image_auroc": 0.8,
        "downstream/z/nut/image_auroc": 0.5,
        "downstream/a/nut/kid": 0.1,
    }
    baseline.write_text(json.dumps({"metrics": metrics}))
    _write(run_dir, "a", "nut", 0, {"image_auroc": 0.9, "kid": 0.2})
    _write(run_dir, "a", "nut", 1, {"image_auroc": 0.7, "kid": 0.2})
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "regression: downstream/z/nut/image_auroc: missing" in out
    assert "regression: downstream/a/nut/kid" in out  # 0.2 vs 0.1: worse, because lower is better
    assert "regression: downstream/a/nut/image_auroc" not in out
    assert main(["check", str(run_dir), "--baseline", str(tmp_path / "none.json")]) == 2


def test_report_draws_a_sample_grid_per_generated_set(tmp_path, nut_root):
    from anobench.benchmarks.cli import main as cli

    run_dir = tmp_path / "run"
    gen = run_dir / "generated" / "real-fewshot__seed0__abc"
    assert (
        cli(
            [
                "generate",
                "--generator",
                "real-fewshot",
                "--dataset",
                str(nut_root),
                "--out",
                str(gen),
                "-n",
                "2",
            ]
        )
        == 0
    )
    _write(run_dir, "real-fewshot", "nut", 0, {"image_auroc": 0.5})
    page = render_report(run_dir)
    grid = page.parent / "figures" / "samples_real-fewshot__seed0__abc.png"
    assert grid.read_bytes()[:4] == b"\x89PNG"
    assert "figures/samples_real-fewshot__seed0__abc.png" in page.read_text()


def test_report_draws_roc_and_pr_curves_from_the_saved_scores(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    scores = tmp_path / "a.npz"
    labels = np.r_[np.zeros(20), np.ones(20)].astype(bool)
    np.savez(
        scores,
        image_scores=labels + rng.normal(0, 0.5, 40), image_labels=labels,
        pixel_scores=rng.random(500), pixel_labels=rng.random(500) < 0.1,
    )  # fmt: skip
    _write(tmp_path, "a", "nut", 0, {"image_auroc": 0.9}, scores_file=scores)
    _write(tmp_path, "b", "nut", 0, {"image_auroc": 0.5}, scores_file=tmp_path / "gone.npz")  # skipped
    _write(tmp_path, "a", "brick", 0, {"image_auroc": 0.5})  # no scores saved: no figure
    page = render_report(tmp_path)
    figures = sorted(p.name for p in (page.parent / "figures").glob("curves_*.png"))
    assert figures == ["curves_nut.png"]
    assert "figures/curves_nut.png" in page.read_text()


def test_check_rejects_a_negative_tolerance_before_reading_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    bad = ["check", str(run_dir), "--write-baseline", str(out), "--tolerance", "image_auroc=-0.1"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "--tolerance image_auroc=-0.1: must be >= 0" in err and not out.exists()
    assert main([*bad[:4], "--noise-factor", "-1"]) == 2
    assert "--noise-factor=-1.0: must be > 0" in capsys.readouterr().err and not out.exists()


NASTY_CATEGORY = "a|b <i>x</i>"
NASTY_GENERATOR = "g_1 & 50% <b>|</b>"


def _cells(line: str) -> list[str]:
    """A Markdown table row split on its unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_report_escapes_names_in_markdown_csv_and_latex(tmp_path):
    for seed in (0, 1):
        _write(tmp_path, NASTY_GENERATOR, NASTY_CATEGORY, seed, {"image_auroc": 0.5 + seed / 10})
        _write(tmp_path, "plain", "nut", seed, {"image_auroc": 0.7})
    page = render_report(tmp_path)
    markdown = [page, *sorted((page.parent / "tables").glob("*.md"))]
    for path in markdown:
        text = path.read_text()
        assert "<i>" not in text and "<b>" not in text, path
        tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]
        for table in tables:
            assert {len(_cells(line)) for line in table} == {len(_cells(table[0]))}, (path, table)
    per_category = (page.parent / "tables" / "detection_image_auroc.md").read_text()
    row = next(line for line in per_category.splitlines() if "a\\|b" in line)
    assert _cells(row)[0].strip() == "a\\|b &lt;i&gt;x&lt;/i&gt;"
    assert "g_1 &amp; 50% &lt;b&gt;\\|&lt;/b&gt;" in per_category

    csv = pd.read_csv(page.parent / "tables" / "detection_image_auroc.csv", index_col=0)
    assert NASTY_CATEGORY in csv.index and NASTY_GENERATOR in csv.columns  # the csv module quotes
    for tex in (page.parent / "tables").glob("*.tex"):
        text = tex.read_text()
        body = re.sub(
            r"\\(textbar|textless|textgreater|textasciitilde|textasciicircum|textbackslash)\{\}", "", text
        )
        body = re.sub(r"\\[&%$#_{}]", "", body)
        for line in body.splitlines():
            if line.startswith("\\caption"):
                line = line[len("\\caption{") : -1]
            elif line.startswith("\\") or not line.strip():
                continue
            cells = line.removesuffix("\\\\").split("&")
            assert not re.search(r"[%$#_{}~^\\<>|]", "".join(cells)), (tex.name, line)
    tex = (page.parent / "tables" / "detection_image_auroc.tex").read_text()
    assert r"a\textbar{}b \textless{}i\textgreater{}x\textless{}/i\textgreater{}" in tex
    assert r"g\_1 \& 50\% " in tex


def test_smoke_size_rows_are_marked_in_every_table(tmp_path):
    for gen, smoke in (("dualanodiff", True), ("crop-paste", False)):
        _write(tmp_path, gen, "nut", 0, {"image_auroc": 0.5})
        path = next((tmp_path / "raw" / "downstream").glob(f"{gen}__*.json"))
        payload = json.loads(path.read_text())
        payload["cell"]["smoke_size"] = smoke
        path.write_text(json.dumps(payload))
    # a smoke-size generator's genmetrics job also carries the held-out real anomalies' values
    quality = tmp_path / "raw" / "genmetrics" / "dualanodiff__nut__all__seed0__h.json"
    quality.parent.mkdir(parents=True)
    quality.write_text(json.dumps({
        "key": {"stage": "genmetrics", "generator": "dualanodiff", "category": "nut", "seed": 0},
        "cell": {"generator": "dualanodiff", "category": "nut", "seed": 0, "smoke_size": True},
        "metrics": {"mask_adherence": 0.6}, "reference": {"metrics": {"mask_adherence": 0.9}},
    }))  # fmt: skip
    frame = collect_results(tmp_path)
    shown, _ = metric_table(frame, "image_auroc")
    assert list(shown.columns) == ["crop-paste", "dualanodiff (smoke-size)"]
    assert list(summary_table(frame).index) == ["crop-paste", "dualanodiff (smoke-size)", HELD_OUT_ROW]
    shown, _ = metric_table(frame, "mask_adherence")
    assert list(shown.columns) == ["dualanodiff (smoke-size)", HELD_OUT_ROW]  # real images: no mark

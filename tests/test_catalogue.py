"""The metric catalogue knows every key a stage writes, and the gate, tables and report follow it."""

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.gate import compare, run_metrics, write_baseline
from anobench.benchmarks.metrics.catalogue import (
    CATALOGUE,
    CELL,
    DESCRIPTIVE,
    GROUPS,
    HIGHER,
    METRICS,
    PER_DEFECT,
    headline,
    metric,
    written_by,
)
from anobench.benchmarks.metrics.defaults import (
    KEY_IC_LPIPS_ANOMALY,
    KEY_KID_O2MAG,
    KEY_MASK_ADHERENCE,
    KEY_NN_DISTANCE,
    KEY_TYPE_FIDELITY,
    METRIC_NAMES,
    PAIR_METRIC_NAMES,
)
from anobench.benchmarks.report.collect import HELD_OUT_ROW, collect_results
from anobench.benchmarks.report.page import render_report
from anobench.benchmarks.report.tables import PAPER_CSV, metric_table, paper_table, summary_table
from anobench.benchmarks.runner.stage_names import CLASSIFY, DETECTOR, DOWNSTREAM, GENMETRICS
from anobench.downstream.evaluation import PER_DEFECT_KEYS
from anobench.downstream.metrics import CLS_ACCURACY, IMAGE_AUROC, PIXEL_AUROC, SEGMENTATION_KEYS
from anobench.generation.quality import DEFECT_STATISTICS, MASK_METRICS

BASELINE = Path(__file__).parents[1] / "results" / "baseline" / "quick.json"
# Every metric-writing stage as small as it runs: one category, seed and generator, one epoch, and
# all four generation metrics (Inception from the random test weights).
TINY = [
    "segmenter.image_size=32", "segmenter.base_width=4", "segmenter.epochs=1",
    "segmenter.samples_per_epoch=8", "segmenter.batch_size=8", "generation.n_per_defect=6",
    "generation.generators=[]", "generation.reference=[real-fewshot]", "data.categories=null",
    "runner.backend=serial", "evaluation.classify=true", "classifier.arch=resnet18",
    "classifier.image_size=32", "classifier.epochs=1", "classifier.epoch_repeats=1",
    "evaluation.detectors=[{name: padim, image_size: 32}]", "genmetrics.enabled=true",
    "genmetrics.metrics=[is,ic_lpips,kid,fid]", "genmetrics.ic_lpips_variant=dfmgan",
    "genmetrics.pair_quality.enabled=true", "genmetrics.pair_quality.detector_image_size=64",
    "genmetrics.pair_quality.feature_size=64", "genmetrics.pair_quality.coreset_sampling_ratio=0.05",
]  # fmt: skip
# Pair-quality metrics whose weights are never present offline: reported ``unavailable``, not written.
UNAVAILABLE_OFFLINE = {KEY_KID_O2MAG, KEY_IC_LPIPS_ANOMALY}
# genmetrics: each defect's mask statistics row sits under this key of its per-defect block
# (benchmarks/runner/stages.py), next to its category/defect labels (strings).
MASK_ROW = "mask"


def _fake_fidelity(**kwargs: object) -> dict[str, float]:
    """torch-fidelity's result keys for what is asked (its Inception pass costs ~40 s here)."""
    import torch_fidelity as tf

    out = {}
    if kwargs.get("isc"):
        out |= {tf.KEY_METRIC_ISC_MEAN: 1.5, tf.KEY_METRIC_ISC_STD: 0.1}
    if kwargs.get("kid"):
        out |= {tf.KEY_METRIC_KID_MEAN: 0.01, tf.KEY_METRIC_KID_STD: 0.002}
    if kwargs.get("fid"):
        out[tf.KEY_METRIC_FID] = 80.0
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, nut_root, random_inception) -> tuple[Path, str]:
    """``anobench run`` of every metric-writing stage on ``nut``: the run folder and what it printed."""
    import torch_fidelity

    run_dir = tmp_path_factory.mktemp("catalogue") / "run"
    settings = [*TINY, f"genmetrics.inception_weights={random_inception}"]
    args = ["run", "quick", "--dataset", str(nut_root), "--out", str(run_dir), "--no-progress"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(torch_fidelity, "calculate_metrics", _fake_fidelity)
        assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
    return run_dir, out.getvalue()


def _written(run_dir: Path) -> set[tuple[str, str, str]]:
    """(stage, place, key) of every metric in every result JSON of the run."""
    found = set()
    for path in (run_dir / "raw").rglob("*.json"):
        payload = json.loads(path.read_text())
        stage = payload["key"]["stage"]
        found |= {(stage, CELL, key) for key in payload.get("metrics", {})}
        for block in (payload.get("per_defect") or {}).values():
            for key, value in block.items():
                if key == MASK_ROW:
                    found |= {(stage, PER_DEFECT, k) for k, v in value.items() if not isinstance(v, str)}
                else:
                    found.add((stage, PER_DEFECT, key))
    return found


def test_every_written_metric_key_is_catalogued_with_its_stage_and_place(tiny_run):
    run_dir, _ = tiny_run
    written = _written(run_dir)
    assert {stage for stage, _, _ in written} == {DOWNSTREAM, DETECTOR, CLASSIFY, GENMETRICS}
    catalogued = {(stage, place, m.key) for m in CATALOGUE for stage in m.stages for place in m.places}
    assert written - catalogued == set(), "written but not in benchmarks/metrics/catalogue.py"
    unwritten = {
        (stage, place, key) for stage, place, key in catalogued - written if key not in UNAVAILABLE_OFFLINE
    }
    assert unwritten == set(), "catalogued for a stage/place that does not write it"


def test_run_summary_shows_the_catalogue_headline_metrics(tiny_run):
    _, out = tiny_run
    assert headline(DOWNSTREAM) == [IMAGE_AUROC, PIXEL_AUROC]
    header = next(line for line in out.splitlines() if line.startswith("category"))
    assert header.split() == ["category", "generator", "seed", IMAGE_AUROC, PIXEL_AUROC]


def test_pair_quality_is_recorded_with_its_held_out_reference_in_tables_and_gate(tiny_run):
    run_dir, _ = tiny_run
    (path,) = (run_dir / "raw" / GENMETRICS).rglob("*.json")
    payload = json.loads(path.read_text())
    reference = payload["reference"]["metrics"]
    assert {KEY_MASK_ADHERENCE, KEY_TYPE_FIDELITY, KEY_NN_DISTANCE} <= set(reference) & set(
        payload["metrics"]
    )
    assert set(payload["reference"]["per_defect"]) == set(payload["per_defect"])  # every type has one
    assert KEY_KID_O2MAG in payload["unavailable"]  # default metric list, no local Inception weights
    values = run_metrics(run_dir)
    for generator in ("real-fewshot", HELD_OUT_ROW):
        assert metric(f"genmetrics/{generator}/nut/{KEY_MASK_ADHERENCE}").gated
    assert values[f"genmetrics/{HELD_OUT_ROW}/nut/{KEY_NN_DISTANCE}"] == pytest.approx(
        reference[KEY_NN_DISTANCE]
    )
    assert values[f"genmetrics/real-fewshot/nut/{KEY_NN_DISTANCE}"] == payload["metrics"][KEY_NN_DISTANCE]
    shown, _ = metric_table(collect_results(run_dir), KEY_TYPE_FIDELITY)
    assert set(shown.columns) == {"real-fewshot", HELD_OUT_ROW} and "-" not in shown.to_numpy()


def test_library_key_tuples_are_catalogued():
    def keys(stage: str, place: str = CELL) -> set[str]:
        return {m.key for m in written_by(stage, place)}

    assert keys(DOWNSTREAM) == keys(DETECTOR) == set(SEGMENTATION_KEYS)
    assert keys(DOWNSTREAM, PER_DEFECT) == keys(DETECTOR, PER_DEFECT) == set(PER_DEFECT_KEYS)
    assert keys(GENMETRICS) == set(METRIC_NAMES) | set(MASK_METRICS) | set(PAIR_METRIC_NAMES)
    assert set(DEFECT_STATISTICS) <= keys(GENMETRICS, PER_DEFECT)
    assert keys(CLASSIFY) == {CLS_ACCURACY}
    assert len(METRICS) == len(CATALOGUE)  # one entry per key
    assert {metric(m).direction for m in MASK_METRICS} == {DESCRIPTIVE}
    assert set(pd.read_csv(PAPER_CSV)["metric"]) <= set(METRICS)  # else the paper table drops them


# ----------------------------------------------------------------------------------------------- gate


def _write(run_dir: Path, stage: str, generator: str, category: str, metrics: dict) -> None:
    path = run_dir / "raw" / stage / f"{generator}__{category}__all__seed0__h.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": {"stage": stage, "generator": generator, "category": category, "seed": 0, "config_hash": "h"},
        "metrics": metrics, "selection": "last-epoch", "finished_at": "1",
    }  # fmt: skip
    path.write_text(json.dumps(payload))


def _cells(shift: float) -> dict[tuple[str, str], float]:
    """Every cell metric of every stage at 0.5, moved by ``shift`` in its better direction."""
    out = {}
    for m in CATALOGUE:
        if CELL in m.places:
            step = 0.0 if not m.gated else shift if m.direction == HIGHER else -shift
            out |= {(stage, m.key): 0.5 + step + (0.3 if not m.gated else 0.0) for stage in m.stages}
    return out


def _run_of(cells: dict[tuple[str, str], float], run_dir: Path, generators=("g",)) -> Path:
    for stage in {s for s, _ in cells}:
        for generator in generators:
            _write(run_dir, stage, generator, "nut", {k: v for (s, k), v in cells.items() if s == stage})
    return run_dir


def test_gate_takes_the_better_direction_from_the_catalogue(tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {f"{s}/g/nut/{k}": 0.5 for s, k in _cells(0.0)}}))
    gated = {f"{s}/g/nut/{k}" for s, k in _cells(0.0) if metric(k).gated}
    # 0.1 worse than the baseline (tolerance 0.05) in each metric's own direction: every gated one fails,
    # `kid` and `fid` by rising; the descriptive ones (moved by 0.3) are not compared at all.
    worse, _ = compare(_run_of(_cells(-0.1), tmp_path / "worse"), baseline)
    assert {r.key for r in worse} == gated and not any(r.passed for r in worse)
    better, _ = compare(_run_of(_cells(0.1), tmp_path / "better"), baseline)
    assert {r.key for r in better} == gated and all(r.passed for r in better)
    assert next(r for r in worse if r.key.endswith("/kid")).delta == pytest.approx(0.1)  # kid rose


def test_descriptive_metrics_never_enter_a_baseline(tmp_path):
    path = write_baseline(_run_of(_cells(0.0), tmp_path / "run"), tmp_path / "b.json", "tiny", {})
    keys = {k.rsplit("/", 1)[-1] for k in json.loads(path.read_text())["metrics"]}
    assert keys == {m.key for m in CATALOGUE if m.gated and CELL in m.places}


def test_a_metric_the_catalogue_does_not_know_is_a_user_error(tmp_path, capsys):
    run_dir = _run_of({(DOWNSTREAM, "made_up"): 0.5}, tmp_path / "run")
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({"metrics": {"downstream/g/nut/made_up": 0.5}}))
    assert main(["check", str(run_dir), "--baseline", str(baseline)]) == 2
    assert "'made_up' is not in the metric catalogue" in capsys.readouterr().err


def test_the_committed_baseline_is_catalogued_and_checks(tmp_path, capsys):
    baseline = json.loads(BASELINE.read_text())
    assert all(metric(key).gated for key in baseline["metrics"])
    # A run holding exactly the baseline's cell values passes `anobench check` (its Average rows too).
    cells: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in baseline["metrics"].items():
        stage, generator, category, name = key.split("/")
        if category != "Average":
            cells.setdefault((stage, generator, category), {})[name] = value
    run_dir = tmp_path / "run"
    for (stage, generator, category), metrics in cells.items():
        _write(run_dir, stage, generator, category, metrics)
    assert main(["check", str(run_dir), "--baseline", str(BASELINE)]) == 0
    out = capsys.readouterr().out
    assert f"{len(baseline['metrics'])} of {len(baseline['metrics'])} metrics within tolerance" in out


# --------------------------------------------------------------------------------------- tables, page


@pytest.fixture
def every_cell_metric(tmp_path) -> Path:
    """A run holding every cell metric (written in reverse catalogue order) and one unknown metric."""
    cells = {**dict(reversed(_cells(0.0).items())), (DOWNSTREAM, "made_up"): 0.5}
    return _run_of(cells, tmp_path / "run", generators=("a", "b"))


def test_tables_order_and_format_metrics_by_the_catalogue(every_cell_metric):
    frame = collect_results(every_cell_metric)
    cell_keys = [m.key for m in CATALOGUE if CELL in m.places]
    assert list(summary_table(frame).columns) == cell_keys  # catalogue order; `made_up` left out
    shown, _ = metric_table(frame, "mask_area")
    assert shown.loc["nut", "a"] == "80.00%"  # percent, as catalogued
    assert summary_table(frame).loc["a", "kid"] == "0.5000"  # four digits
    assert list(paper_table().columns) == [k for k in cell_keys if k in set(pd.read_csv(PAPER_CSV)["metric"])]


def test_report_sections_follow_the_catalogue_groups_and_labels(every_cell_metric):
    text = render_report(every_cell_metric).read_text()
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    titles = [t for t in sections if t in GROUPS.values()]
    assert titles == list(GROUPS.values())  # every group present, in catalogue order
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headings == [f"{m.label} (`{m.key}`)" for m in CATALOGUE if CELL in m.places]
    assert (
        "| `kid` | KID | lower | yes |" in text
        and "| `mask_area` | Mask area | none | no (descriptive) |" in text
    )

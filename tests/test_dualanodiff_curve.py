"""The quality/time curve script's table: one row per (setting, category), means over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anobench.benchmarks.perf.dualanodiff_curve import OPTIONS, collect


def _record(
    run: Path, stage: str, name: str, generator: str, category: str, seed: int, steps, **fields
) -> None:
    config = {f"{OPTIONS}.base_unet_steps": steps[0], f"{OPTIONS}.max_train_steps": steps[1]}
    key = {"stage": stage, "generator": generator, "category": category, "seed": seed}
    path = run / "raw" / stage / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "config": config, **fields}))


def test_collect_groups_by_setting_and_category_and_averages_seeds(tmp_path: Path) -> None:
    for seed, (seconds, adherence, auroc) in enumerate([(100.0, 0.6, 0.5), (140.0, 0.8, 0.7)]):
        for steps in ((300, 35), (800, 200)):
            name = f"dualanodiff-{steps[0]}-{steps[1]}-nut-{seed}"
            _record(
                tmp_path, "generate", name, "dualanodiff", "nut", seed, steps, timings={"seconds": seconds}
            )
            quality = {"mask_adherence": adherence + steps[1] / 1000, "kid_effnet_lite0": None}
            _record(tmp_path, "genmetrics", name, "dualanodiff", "nut", seed, steps, metrics=quality)
            _record(tmp_path, "downstream", name, "dualanodiff", "nut", seed, steps,
                    metrics={"image_auroc": auroc, "pixel_auroc": auroc})  # fmt: skip
        _record(
            tmp_path,
            "generate",
            f"real-{seed}",
            "real-fewshot",
            "nut",
            seed,
            (300, 35),
            timings={"seconds": 0.2},
        )
        _record(tmp_path, "downstream", f"real-{seed}", "real-fewshot", "nut", seed, (800, 200),
                metrics={"image_auroc": 0.9, "pixel_auroc": 0.8})  # fmt: skip

    rows = {(r["generator"], r["base_steps"], r["dual_steps"]): r for r in collect(tmp_path)}

    assert set(rows) == {("dualanodiff", 300, 35), ("dualanodiff", 800, 200), ("real-fewshot", "-", "-")}
    fast, slow = rows["dualanodiff", 300, 35], rows["dualanodiff", 800, 200]
    assert fast["seeds"] == 2 and fast["generate_s"] == pytest.approx(120.0)
    assert fast["mask_adherence"] == pytest.approx(0.735) and slow["mask_adherence"] == pytest.approx(0.9)
    assert fast["image_auroc"] == pytest.approx(0.6)
    assert "kid_effnet_lite0" not in fast  # a metric a record lacks is not averaged as zero
    reference = rows["real-fewshot", "-", "-"]  # the reference's own settings do not split its rows
    assert reference["seeds"] == 2 and reference["image_auroc"] == pytest.approx(0.9)

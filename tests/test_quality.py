import json

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.runner.stages import fewshot_set
from anobench.generation import create_generator
from anobench.generation.format import GeneratedSetWriter, read_generated_set
from anobench.generation.quality import component_count, defect_quality, mask_quality, quality_figure


def _masks():
    """Hand-made masks with known area and components (20 x 20 = 400 px)."""
    two = np.zeros((20, 20), bool)
    two[0:2, 0:2] = two[10:14, 10:15] = True  # 4 + 20 px, two components
    diagonal = np.zeros((20, 20), bool)
    diagonal[5, 5] = diagonal[6, 6] = diagonal[7, 7] = True  # one component with 8-connectivity
    left = np.zeros((20, 20), bool)
    left[0:10, 5:15] = True  # 100 px: 50 in the left half, 50 in the right
    return [two, diagonal, np.zeros((20, 20), bool), left]


@pytest.fixture
def hand_set(tmp_path):
    writer = GeneratedSetWriter(tmp_path / "set", "toy", "h")
    for i, mask in enumerate(_masks()):
        writer.write_arrays("nut", "crack", i, np.full((20, 20, 3), 100, np.uint8), mask, seed=i)
        writer.write_arrays("brick", "hole", i, np.full((20, 20, 3), 50, np.uint8), mask, seed=i)
    return tmp_path / "set"


def test_statistics_match_hand_computed_values(hand_set):
    entries = read_generated_set(hand_set)[("nut", "crack")]
    left_half = np.zeros((20, 20), bool)
    left_half[:, :10] = True
    row = defect_quality(entries, left_half)
    areas = np.array([24, 3, 0, 100]) / 400
    assert row["n"] == 4
    assert row["area_mean"] == pytest.approx(areas.mean())
    assert row["area_median"] == pytest.approx(np.median(areas))
    assert row["area_p5"] == pytest.approx(np.percentile(areas, 5))
    assert row["area_p95"] == pytest.approx(np.percentile(areas, 95))
    assert row["components"] == {"0": 1, "1": 2, "2": 1, "3": 0, "4+": 0}
    assert row["components_mean"] == pytest.approx((2 + 1 + 0 + 1) / 4)
    assert row["empty_fraction"] == pytest.approx(0.25)
    # inside the left half: 4/24 (the 2x2 square), 3/3 (the diagonal), 50/100; the empty mask is skipped
    assert row["inside_object"] == pytest.approx(np.mean([4 / 24, 1.0, 0.5]))
    assert defect_quality(entries)["inside_object"] is None


def test_component_count_uses_8_connectivity():
    mask = np.eye(5, dtype=bool)
    mask[0, 4] = True
    assert component_count(mask) == 2 and component_count(np.zeros((3, 3), bool)) == 0


def test_foreground_is_resized_to_the_masks(hand_set):
    entries = read_generated_set(hand_set)[("nut", "crack")]
    big = np.zeros((40, 40), bool)
    big[:, :20] = True  # the same left half at twice the size
    rows = mask_quality({("nut", "crack"): entries}, {"nut": big})
    assert rows[0]["inside_object"] == pytest.approx(np.mean([4 / 24, 1.0, 0.5]))


def test_figure_has_one_row_per_defect_and_three_panels_per_sample(hand_set, tmp_path):
    generated = read_generated_set(hand_set)
    path = quality_figure(generated, tmp_path / "fig.png", per_defect=3)
    width, height = Image.open(path).size
    assert width == int(1.25 * 9 * 100) and height == int((1.45 * 2 + 0.4) * 100)
    assert np.asarray(Image.open(path).convert("L")).std() > 10  # something is drawn


@pytest.fixture(scope="module")
def crop_paste_set(nut_root, tmp_path_factory):
    fewshot = fewshot_set(make_split(read_category(nut_root, "nut"), "strict"))
    gen = create_generator("crop-paste")
    gen.fit(fewshot)
    root = tmp_path_factory.mktemp("cp")
    writer = GeneratedSetWriter(root, "crop-paste", gen.config_hash())
    for defect in fewshot.defects:
        for i, pair in enumerate(gen.sample(defect, 4, seed=0)):
            writer.write("nut", defect, i, pair)
    return root


def test_cli_inspect_json_with_dataset_foreground(crop_paste_set, nut_root, tmp_path, capsys):
    fig = tmp_path / "inspect.png"
    code = main(["inspect", str(crop_paste_set), "--dataset", str(nut_root), "--out", str(fig), "--json",
                 "--per-defect", "2"])  # fmt: skip
    assert code == 0 and fig.exists()
    report = json.loads(capsys.readouterr().out)
    assert [d["defect"] for d in report["defects"]] == ["missing", "scratch", "stain"]
    for d in report["defects"]:
        assert d["n"] == 4 and d["empty_fraction"] == 0.0 and d["components"]["1"] >= 1
        assert d["inside_object"] > 0.8  # crop-paste keeps anomalies on the nut


def test_cli_inspect_table_and_errors(hand_set, capsys):
    assert main(["inspect", str(hand_set)]) == 0
    out = capsys.readouterr().out
    assert "area_median" in out and "1/2/1/0/0" in out and (hand_set / "inspect.png").exists()
    Image.fromarray(np.full((20, 20), 77, np.uint8)).save(hand_set / "nut/crack/mask/0001.png")
    assert main(["inspect", str(hand_set)]) == 2
    assert "mask is not binary" in capsys.readouterr().err

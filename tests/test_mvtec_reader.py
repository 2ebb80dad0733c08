import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.benchmarks.data.mvtec import check_dataset, read_category
from anobench.benchmarks.errors import DatasetError


@pytest.fixture
def nut_copy(tmp_path, nut_root) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(nut_root / "nut", root / "nut")
    return root


def _problem(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read_category(root, "nut")
    assert len(info.value.problems) == 1, info.value.problems
    line = info.value.problems[0]
    assert "\n" not in line
    return line


def test_reads_a_valid_category(nut_root):
    cat = read_category(nut_root, "nut")
    assert len(cat.train_good) == 60 and len(cat.test_good) == 10
    assert sorted(cat.defects) == ["missing", "scratch", "stain"]
    assert cat.image_size == (128, 128)
    first = cat.defects["scratch"][0]
    assert first.image.name == "000.png" and first.mask.name == "000_mask.png"


def test_missing_folder(nut_copy):
    shutil.rmtree(nut_copy / "nut" / "train" / "good")
    line = _problem(nut_copy)
    assert "train/good" in line and "missing folder" in line


def test_defect_image_without_mask(nut_copy):
    (nut_copy / "nut" / "ground_truth" / "stain" / "003_mask.png").unlink()
    line = _problem(nut_copy)
    assert "003.png" in line and "003_mask.png" in line and "add the binary mask" in line


def test_mask_of_another_size(nut_copy):
    path = nut_copy / "nut" / "ground_truth" / "stain" / "002_mask.png"
    Image.open(path).resize((64, 64), Image.NEAREST).save(path)
    line = _problem(nut_copy)
    assert "002_mask.png" in line and "64x64" in line and "128x128" in line


def test_non_binary_mask(nut_copy):
    path = nut_copy / "nut" / "ground_truth" / "scratch" / "001_mask.png"
    Image.fromarray(np.linspace(0, 255, 128 * 128).reshape(128, 128).astype(np.uint8)).save(path)
    line = _problem(nut_copy)
    assert "001_mask.png" in line and "not binary" in line


def test_unreadable_image(nut_copy):
    (nut_copy / "nut" / "test" / "good" / "004.png").write_bytes(b"not a png at all")
    line = _problem(nut_copy)
    assert "004.png" in line and "unreadable" in line


def test_non_image_file(nut_copy):
    (nut_copy / "nut" / "train" / "good" / "notes.txt").write_text("hello")
    line = _problem(nut_copy)
    assert "notes.txt" in line and "not an image" in line


def test_empty_defect_folder(nut_copy):
    (nut_copy / "nut" / "test" / "dent").mkdir()
    line = _problem(nut_copy)
    assert "dent" in line and "empty defect folder" in line


def test_jpg_where_png_expected(nut_copy):
    src = nut_copy / "nut" / "test" / "good" / "000.png"
    Image.open(src).convert("RGB").save(src.with_suffix(".jpg"))
    line = _problem(nut_copy)
    assert "000.jpg" in line and "JPG" in line and "PNG" in line


def test_cli_check_reports_summary(nut_root, capsys):
    assert main(["data", "check", str(nut_root)]) == 0
    out = capsys.readouterr().out
    assert "nut" in out and "scratch:12" in out and "missing:9" in out and "128x128" in out


def test_cli_check_bad_input_exits_2_without_traceback(nut_copy, capsys):
    (nut_copy / "nut" / "ground_truth" / "stain" / "003_mask.png").unlink()
    assert main(["data", "check", str(nut_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert main(["data", "check", str(nut_copy / "nowhere")]) == 2


def test_all_problems_are_reported_together(nut_copy):
    (nut_copy / "nut" / "ground_truth" / "stain" / "003_mask.png").unlink()
    (nut_copy / "nut" / "train" / "good" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        check_dataset(nut_copy)
    assert len(info.value.problems) == 2


def test_lists_the_same_samples_as_anomalib(synthetic_root):
    from anomalib.data.datasets import MVTecADDataset

    for category in ("nut", "brick"):
        ours = read_category(synthetic_root, category)
        train = MVTecADDataset(root=synthetic_root, category=category, split="train")
        test = MVTecADDataset(root=synthetic_root, category=category, split="test")
        assert set(train.samples.image_path) == {str(p) for p in ours.train_good}
        ours_test = {str(p) for p in ours.test_good} | {
            str(s.image) for v in ours.defects.values() for s in v
        }
        assert set(test.samples.image_path) == ours_test
        theirs_masks = {m for m in test.samples.mask_path if m}
        assert theirs_masks == {str(s.mask) for v in ours.defects.values() for s in v}

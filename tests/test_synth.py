import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.data.synth import (
    CATEGORIES,
    DEFECT_COUNTS,
    N_TEST_GOOD,
    N_TRAIN_GOOD,
    build_synthetic_dataset,
    defective_image,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def test_same_seed_gives_byte_identical_files(tmp_path, synthetic_root):
    again = build_synthetic_dataset(tmp_path / "again", seed=0)
    assert _digest(again) == _digest(synthetic_root)


def test_other_seed_gives_other_images(tmp_path, synthetic_root):
    other = build_synthetic_dataset(tmp_path / "other", seed=1, categories=["nut"])
    a, b = _digest(other), _digest(synthetic_root)
    assert a["nut/train/good/000.png"] != b["nut/train/good/000.png"]


def test_layout_and_counts(synthetic_root):
    assert len(CATEGORIES) >= 3
    assert {s.kind for s in CATEGORIES} == {"texture", "object"}
    for spec in CATEGORIES:
        base = synthetic_root / spec.name
        assert len(list((base / "train" / "good").glob("*.png"))) == N_TRAIN_GOOD >= 60
        assert len(list((base / "test" / "good").glob("*.png"))) == N_TEST_GOOD >= 10
        assert len(spec.defects) >= 3
        for defect, count in zip(spec.defects, DEFECT_COUNTS, strict=True):
            images = sorted((base / "test" / defect).glob("*.png"))
            masks = sorted((base / "ground_truth" / defect).glob("*_mask.png"))
            assert len(images) == len(masks) == count >= 9
            assert [m.name for m in masks] == [f"{i.stem}_mask.png" for i in images]


def test_masks_are_binary_nonempty_and_same_size(synthetic_root):
    for mask_path in synthetic_root.rglob("*_mask.png"):
        mask = np.asarray(Image.open(mask_path))
        assert set(np.unique(mask).tolist()) == {0, 255}
        image_path = (
            mask_path.parents[2] / "test" / mask_path.parent.name / mask_path.name.replace("_mask", "")
        )
        assert Image.open(image_path).size == Image.open(mask_path).size


@pytest.mark.parametrize("spec", CATEGORIES, ids=lambda s: s.name)
def test_defect_changes_exactly_the_masked_pixels(spec):
    rng = np.random.default_rng(123)
    for defect in spec.defects:
        normal, defective, mask = defective_image(spec, defect, rng)
        assert mask.any()
        np.testing.assert_array_equal(defective[~mask], normal[~mask])
        changed = np.any(defective != normal, axis=-1)
        assert changed[mask].mean() > 0.9, f"{spec.name}/{defect}: most masked pixels must change"

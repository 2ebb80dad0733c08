import json

import numpy as np
import pytest
from PIL import Image

from anobench.generation.base import GeneratedPair
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import MANIFEST, GeneratedSetWriter, read_generated_set


def _pair(rng, seed, size=(16, 16), fg=False):
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    mask = np.zeros(size, bool)
    mask[2:6, 3:9] = True
    return GeneratedPair(image=image, mask=mask, seed=seed, fg=image // 2 if fg else None)


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    writer = GeneratedSetWriter(tmp_path / "set", "toy", "abc123")
    pairs = {}
    for defect in ("hole", "scratch"):
        for i in range(3):
            pairs[(defect, i)] = _pair(rng, 100 + i, fg=defect == "hole")
            writer.write("nut", defect, i, pairs[(defect, i)])
    return tmp_path / "set", pairs


def test_round_trip_keeps_pixels_seeds_and_manifest(written):
    root, pairs = written
    sets = read_generated_set(root)
    assert sorted(sets) == [("nut", "hole"), ("nut", "scratch")]
    for (_, defect), entries in sets.items():
        assert [e.index for e in entries] == [0, 1, 2]
        for e in entries:
            pair = pairs[(defect, e.index)]
            assert e.image.relative_to(root).as_posix() == f"nut/{defect}/image/{e.index:04d}.png"
            assert np.array_equal(np.asarray(Image.open(e.image)), pair.image)
            mask = np.asarray(Image.open(e.mask))
            assert set(np.unique(mask)) <= {0, 255} and np.array_equal(mask == 255, pair.mask)
            assert e.seed == 100 + e.index and e.generator == "toy"
            assert (e.fg is not None) == (defect == "hole")
    records = [json.loads(line) for line in (root / MANIFEST).read_text().splitlines()]
    assert len(records) == 6 and {r["config_hash"] for r in records} == {"abc123"}
    assert records[0]["fg"] == "nut/hole/fg/0000.png" and records[-1]["fg"] is None


def test_existing_lists_complete_pairs_for_resume(written):
    root, _ = written
    writer = GeneratedSetWriter(root, "toy", "abc123")
    assert writer.existing("nut", "hole") == {0, 1, 2}
    (root / "nut/hole/mask/0001.png").unlink()
    assert writer.existing("nut", "hole") == {0, 2}
    assert writer.existing("nut", "stain") == set()


def test_a_line_cut_by_a_crash_is_ignored(written):
    root, _ = written
    with open(root / MANIFEST, "a") as fh:
        fh.write('{"generator": "toy", "categ')
    assert len(read_generated_set(root)[("nut", "hole")]) == 3


def test_write_arrays_records_imported_pairs(tmp_path):
    writer = GeneratedSetWriter(tmp_path, "anomalydiffusion", "h")
    image = np.zeros((8, 8, 3), np.uint8)
    extra = {"source": "bottle/crack/image/7.jpg", "mask_threshold": 0.5}
    record = writer.write_arrays("bottle", "crack", 0, image, np.eye(8, dtype=bool), extra=extra)
    line = json.loads((tmp_path / MANIFEST).read_text())
    assert line == record and line["seed"] is None and line["source"] == "bottle/crack/image/7.jpg"
    with pytest.raises(TypeError, match="bool"):
        writer.write_arrays("bottle", "crack", 1, image, np.eye(8, dtype=np.uint8) * 255)
    with pytest.raises(ValueError, match="differ in size"):
        writer.write_arrays("bottle", "crack", 1, image, np.ones((4, 4), bool))


def _problems(root, **kwargs):
    with pytest.raises(GenerationInputError) as info:
        read_generated_set(root, **kwargs)
    return info.value.problems


def test_missing_mask_is_one_line_naming_the_file(written):
    root, _ = written
    (root / "nut/scratch/mask/0002.png").unlink()
    (problem,) = _problems(root)
    assert "nut/scratch/image/0002.png: no mask at" in problem and "same name" in problem


def test_mask_without_image_is_reported(written):
    root, _ = written
    (root / "nut/scratch/image/0000.png").unlink()
    (problem,) = _problems(root)
    assert "0000.png: 1 mask(s) without an image" in problem


def test_size_mismatch_is_reported(written):
    root, _ = written
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(root / "nut/hole/mask/0001.png")
    (problem,) = _problems(root)
    assert "nut/hole/mask/0001.png: mask is 10x8 but the image is 16x16" in problem


def test_non_binary_mask_is_rejected_with_the_fix(written):
    root, _ = written
    soft = np.zeros((16, 16), np.uint8)
    soft[4:8, 4:8] = 200
    soft[0, 0] = 255
    Image.fromarray(soft).save(root / "nut/hole/mask/0000.png")
    (problem,) = _problems(root)
    assert "nut/hole/mask/0000.png: mask is not binary" in problem and "e.g. 200" in problem
    assert "--mask-threshold 0.5" in problem
    assert len(read_generated_set(root, validate=False)[("nut", "hole")]) == 3  # validate=False skips it


def test_empty_folders_are_reported(written):
    root, _ = written
    for f in (root / "nut/scratch/image").iterdir():
        f.unlink()
    (root / "gravel").mkdir()
    problems = _problems(root)
    assert any("gravel: no <defect>/ folders" in p for p in problems)
    assert any("nut/scratch/image: empty image folder" in p for p in problems)


def test_non_png_images_point_to_the_importer(written):
    root, _ = written
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "nut/hole/image/0003.jpg")
    (problem,) = _problems(root)
    assert "0003.jpg: 1 non-PNG image(s)" in problem and "anobench import --layout folder" in problem


def test_missing_root_category_and_subfolders(tmp_path, written):
    root, _ = written
    assert "not found" in _problems(tmp_path / "nothing")[0]
    assert "no generated pairs for category 'bottle'" in _problems(root, category="bottle")[0]
    (root / "nut" / "stain").mkdir()
    assert "needs both image/ and mask/" in _problems(root)[0]


def test_splits_folder_and_hidden_folders_are_not_categories(written):
    root, _ = written
    (root / "splits").mkdir()
    (root / "splits" / "nut.strict.json").write_text("{}")
    (root / ".cache").mkdir()
    assert sorted(read_generated_set(root)) == [("nut", "hole"), ("nut", "scratch")]

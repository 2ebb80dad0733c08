"""``anobench export``: a generated set read back by anomalib's Folder, a COCO reader and the MVTec reader."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import load_config
from anobench.benchmarks.data.datasets import read_category
from anobench.benchmarks.data.export import rle_encode
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.runner.stages import generate_stage
from anobench.generation.base import read_mask
from anobench.generation.format import read_generated_set


@pytest.fixture(scope="module")
def generated(nut_root, tmp_path_factory):
    manifest = make_split(read_category(nut_root, "nut"), "strict")
    out = tmp_path_factory.mktemp("set")
    generate_stage(
        load_config("quick", ["generation.n_per_defect=3"]), manifest, "real-fewshot", 0, out, False
    )
    return out


def _decode_rle(rle):
    """Independent reader of COCO's uncompressed RLE (alternating runs of 0 and 1, column-major)."""
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    position = 0
    for i, run in enumerate(rle["counts"]):
        flat[position : position + run] = i % 2 == 1
        position += run
    assert position == h * w
    return flat.reshape((h, w), order="F")


def test_rle_round_trip_hand_case():
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)  # column-major: 1 1 0 1 0 0
    assert rle_encode(mask) == {"counts": [0, 2, 1, 1, 2], "size": [2, 3]}
    np.testing.assert_array_equal(_decode_rle(rle_encode(mask)), mask)
    np.testing.assert_array_equal(_decode_rle(rle_encode(~mask)), ~mask)


def test_coco_export_reads_back_as_the_masks(generated, tmp_path):
    assert main(["export", str(generated), "--to", "coco", str(tmp_path)]) == 0
    coco = json.loads((tmp_path / "annotations.json").read_text())
    pairs = read_generated_set(generated)
    assert sorted(c["name"] for c in coco["categories"]) == sorted(f"{c}/{d}" for c, d in pairs)
    assert len(coco["images"]) == sum(len(v) for v in pairs.values()) == 9
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for image in coco["images"]:
        category, defect, stem = image["file_name"].split("/")[1:]
        entry = next(e for e in pairs[(category, defect)] if f"{e.index:04d}.png" == stem)
        expected = read_mask(entry.mask) > 0
        assert Image.open(tmp_path / image["file_name"]).size == (image["width"], image["height"])
        anns = by_image.get(image["id"], [])
        decoded = [_decode_rle(a["segmentation"]) for a in anns]
        np.testing.assert_array_equal(np.any(decoded, axis=0) if decoded else expected * False, expected)
        assert len(anns) == ndimage.label(expected, structure=np.ones((3, 3)))[1]
        for ann, region in zip(anns, decoded, strict=True):
            x, y, w, h = ann["bbox"]
            rows, cols = np.nonzero(region)
            assert (x, y, w, h) == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)
            assert ann["area"] == region.sum() and names[ann["category_id"]] == f"{category}/{defect}"


def test_anomalib_folder_export_reads_with_folder_dataset(generated, nut_root, tmp_path):
    from anomalib.data.datasets.image.folder import FolderDataset

    assert (
        main(["export", str(generated), "--to", "anomalib-folder", str(tmp_path), "--dataset", str(nut_root)])
        == 0
    )
    dataset = FolderDataset(name="nut", root=tmp_path / "nut", normal_dir="normal", abnormal_dir="abnormal",
                            mask_dir="mask")  # fmt: skip
    samples = dataset.samples
    n_normal = len(read_category(nut_root, "nut").train_good)
    assert (samples["label_index"] == 0).sum() == n_normal and (samples["label_index"] == 1).sum() == 9
    abnormal = samples[samples["label_index"] == 1]
    for image_path, mask_path in zip(abnormal["image_path"], abnormal["mask_path"], strict=True):
        assert image_path.split("/")[-1] == mask_path.split("/")[-1]  # pairs matched by name
    item = dataset[int(np.flatnonzero(samples["label_index"] == 1)[0])]
    name = samples.iloc[int(np.flatnonzero(samples["label_index"] == 1)[0])]["image_path"].split("/")[-1]
    defect, index = name[: -len("_0000.png")], int(name[-8:-4])
    entry = next(e for e in read_generated_set(generated)[("nut", defect)] if e.index == index)
    np.testing.assert_array_equal(item.gt_mask.numpy().astype(bool).squeeze(), read_mask(entry.mask) > 0)


def test_mvtec_export_reads_with_the_mvtec_reader(generated, nut_root, tmp_path, capsys):
    assert (
        main(["export", str(generated), "--to", "mvtec", str(tmp_path / "m"), "--dataset", str(nut_root)])
        == 0
    )
    back, real = read_category(tmp_path / "m", "nut"), read_category(nut_root, "nut")
    pairs = read_generated_set(generated)
    assert {d: len(s) for d, s in back.defects.items()} == {d: len(v) for (_, d), v in pairs.items()}
    assert len(back.train_good) == len(real.train_good) and not back.problems
    assert main(["export", str(generated), "--to", "mvtec", str(tmp_path / "x")]) == 2
    assert "needs --dataset DIR" in capsys.readouterr().err

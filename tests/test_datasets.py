"""Dataset adapters: every layout read back from the embedded dataset, detection, errors, anomalib parity."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.benchmarks.config import load_config
from anobench.benchmarks.data import datasets
from anobench.benchmarks.data.datasets import (
    detect_format,
    detection_order,
    get_dataset,
    list_datasets,
    read_category,
    register_dataset,
)
from anobench.benchmarks.data.mvtec import MVTecAD
from anobench.benchmarks.data.splits import SplitManifest, make_split
from anobench.benchmarks.errors import ConfigError, DatasetError
from anobench.generation.base import load_rgb, read_image, read_mask

LAYOUTS = ["btad", "mpdd", "mvtec", "mvtec-3d", "mvtec-ad2", "mvtec-loco", "real-iad", "visa"]
LOSSLESS = {"btad", "mpdd", "mvtec", "mvtec-3d", "mvtec-ad2", "mvtec-loco"}  # VisA/Real-IAD write JPG
# VisA labels as the real image_anno.csv has them: free text, several per image, some on 1-2 images
# (the synthetic nut's 'missing' anomalies are 000-008)
RARE_LABELS = {
    "000.JPG": "Chunk of wax missing",
    "001.JPG": "burnt",
    "002.JPG": "burnt",
    "003.JPG": "scratch,burnt",
}
RARE_FOLDS = {"burnt": "combined", "chunk_of_wax_missing": "combined"}


@pytest.fixture(scope="module")
def source(nut_root):
    return read_category(nut_root, "nut", format="mvtec")


@pytest.fixture(scope="module")
def written(tmp_path_factory, source):
    """The synthetic ``nut`` category written in every layout (one folder per layout)."""
    out = tmp_path_factory.mktemp("layouts")
    for layout in LAYOUTS:
        get_dataset(layout).write([source], out / layout)
    return out


def relabel(anno: Path, labels: dict[str, str]) -> None:
    """Give the anomalies named in ``labels`` (file name -> label) that label in VisA's image_anno.csv."""
    with anno.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["label"] = labels.get(Path(row["image"]).name, row["label"])
    with anno.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "mask"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def visa_rare(tmp_path_factory, written):
    """The VisA layout with rare labels: chunk_of_wax_missing (1 image), burnt (2), combined (1)."""
    root = tmp_path_factory.mktemp("visa-rare") / "visa"
    shutil.copytree(written / "visa", root)
    relabel(root / "nut" / "image_anno.csv", RARE_LABELS)
    return root


# ---------------------------------------------------------------- one image reader, one mask rule
def test_image_reader_converts_every_mode(tmp_path):
    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    cases = {
        "rgb8.png": (Image.fromarray(rgb), rgb),
        "grey8.png": (Image.fromarray(rgb[..., 0]), np.repeat(rgb[..., :1], 3, -1)),
        # 16 bit: 32896 = 128 * 257 -> 128 (clipping would give 255)
        "grey16.png": (Image.fromarray(np.full((4, 4), 32896, np.uint16)), np.full((4, 4, 3), 128, np.uint8)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, np.zeros((4, 4), np.uint8)])), rgb),
        "la.png": (
            Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"),
            np.repeat(rgb[..., :1], 3, -1),
        ),
    }
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    cases["palette.png"] = (palette, np.broadcast_to(np.array([200, 10, 30], np.uint8), (4, 4, 3)))
    for name, (im, expected) in cases.items():
        im.save(tmp_path / name)
        got = load_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (4, 4, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # really a 16-bit file
    bmp = tmp_path / "x.bmp"
    Image.fromarray(rgb).save(bmp)
    np.testing.assert_array_equal(np.asarray(read_image(bmp)), rgb)


def test_mask_rule_is_greater_than_zero(tmp_path):
    values = np.array([[0, 1, 2, 255]], np.uint8)
    expected = np.array([[False, True, True, True]])
    Image.fromarray(values).save(tmp_path / "grey.png")
    Image.fromarray(values.astype(np.uint16) * 200).save(tmp_path / "grey16.png")
    Image.fromarray(np.dstack([np.zeros_like(values), np.zeros_like(values), values])).save(
        tmp_path / "rgb.png"
    )
    Image.fromarray(values > 0).save(tmp_path / "bit.png")
    palette = Image.fromarray(values.clip(0, 3), "P")
    palette.putpalette([0, 0, 0] + [255, 255, 255] * 3 + [0] * 756)
    palette.save(tmp_path / "palette.png")
    for name in ("grey.png", "grey16.png", "rgb.png", "bit.png", "palette.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), expected, err_msg=name)
    folder = tmp_path / "regions"  # MVTec LOCO: one file per region, ORed
    folder.mkdir()
    Image.fromarray(np.array([[0, 0, 0, 9]], np.uint8)).save(folder / "000.png")
    Image.fromarray(np.array([[0, 7, 0, 0]], np.uint8)).save(folder / "001.png")
    np.testing.assert_array_equal(read_mask(folder), [[False, True, False, True]])


# ---------------------------------------------------------------- registry and detection
def test_registry_lists_with_wildcards_and_detects_in_a_fixed_order():
    assert list_datasets() == LAYOUTS
    assert list_datasets("mvtec-*") == ["mvtec-3d", "mvtec-ad2", "mvtec-loco"]
    assert detection_order()[-1] == "mvtec" and detection_order()[0] == "real-iad"
    with pytest.raises(Exception, match="unknown dataset format 'nope'"):
        get_dataset("nope")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back_the_same_samples(written, source, layout):
    root = written / layout
    assert detect_format(root) == layout
    cat = read_category(root, "nut")  # detected, validated
    assert cat.format == layout and cat.image_size == (128, 128)
    assert len(cat.train_good) == 60 and len(cat.test_good) == 10
    ours = [s for d in cat.defects.values() for s in d]
    theirs = [s for d in source.defects.values() for s in d]
    assert len(ours) == len(theirs) == 31
    # each anomaly comes back with its own mask (matched by mask content, the types may be renamed)
    source_masks = {read_mask(s.mask).tobytes(): s for s in theirs}
    for sample in ours:
        original = source_masks[read_mask(sample.mask).tobytes()]
        if layout in LOSSLESS:
            np.testing.assert_array_equal(load_rgb(sample.image), load_rgb(original.image))
        else:  # JPG: close, not equal
            diff = np.abs(load_rgb(sample.image).astype(int) - load_rgb(original.image).astype(int))
            assert diff.mean() < 6
    split = make_split(cat, "strict")
    assert split.format == layout and split.overlap_count == 0


def test_layout_specific_defect_types(written):
    types = {layout: sorted(read_category(written / layout, "nut").defects) for layout in LAYOUTS}
    assert types["visa"] == ["missing", "scratch", "stain"]
    assert types["btad"] == ["ko"] and types["mvtec-ad2"] == ["bad"]
    assert types["mvtec-loco"] == ["logical_anomalies", "structural_anomalies"]
    assert types["real-iad"] == ["contamination", "missing_parts", "scratch"]  # HS, QS, ZW codes mapped
    # VisA masks are label-valued (type index + 1), read with the > 0 rule
    visa = read_category(written / "visa", "nut")
    assert set(np.unique(np.asarray(Image.open(visa.defects["stain"][0].mask)))) == {0, 3}


def test_visa_rare_labels_fold_into_combined(tmp_path, visa_rare):
    cat = read_category(visa_rare, "nut")
    assert {d: len(s) for d, s in cat.defects.items()} == {
        "combined": 4,
        "missing": 5,
        "scratch": 12,
        "stain": 10,
    }
    combined = cat.defects["combined"]  # sorted by file index; each image keeps its own type
    assert [(s.image.name, s.defect) for s in combined] == [
        ("000.JPG", "chunk_of_wax_missing"),
        ("001.JPG", "burnt"),
        ("002.JPG", "burnt"),
        ("003.JPG", "combined"),
    ]
    assert cat.notes == [
        "nut: label(s) with fewer than 3 images folded into 'combined': burnt (2), chunk_of_wax_missing (1)"
    ]
    for preset in ("strict", "dualanodiff-official", "dualanodiff-bcm-official"):
        split = make_split(cat, preset)
        assert split.folded == RARE_FOLDS and split.defects["combined"].n_total == 4
    strict = make_split(cat, "strict").defects["combined"]
    assert strict.fewshot == [
        {
            "image": "nut/Data/Images/Anomaly/000.JPG",
            "mask": "nut/Data/Masks/Anomaly/000.png",
            "folded_from": "chunk_of_wax_missing",
        }
    ]
    assert [e.get("folded_from") for e in strict.test] == ["burnt", "burnt", None]
    get_dataset("visa").write([cat], tmp_path / "again")  # written back with the rare labels
    again = read_category(tmp_path / "again", "nut")
    assert again.notes == cat.notes and [s.defect for s in again.defects["combined"]] == [
        s.defect for s in combined
    ]


def test_visa_fold_is_printed_once_and_recorded_in_the_manifest(tmp_path, visa_rare, capsys):
    note = "note: nut: label(s) with fewer than 3 images folded into 'combined'"
    assert main(["data", "check", str(visa_rare)]) == 0
    assert capsys.readouterr().out.count(note) == 1
    assert main(["data", "split", str(visa_rare), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(note) == 1
    path = tmp_path / "nut.strict.json"
    payload = json.loads(path.read_text())
    assert payload["folded"] == RARE_FOLDS and payload["format"] == "visa"
    assert payload["defects"]["combined"]["test"][0]["folded_from"] == "burnt"
    assert SplitManifest.read(path) == make_split(read_category(visa_rare, "nut"), "strict")


def test_visa_type_still_too_small_after_folding_is_read_and_refused_by_the_strict_split(
    tmp_path, written, capsys
):
    """As in every layout: the category reads (with a note); only a split that cannot split it fails."""
    root = tmp_path / "visa"
    shutil.copytree(written / "visa", root)
    anno = root / "nut" / "image_anno.csv"
    relabel(anno, {"000.JPG": "burnt", "001.JPG": "scratch,burnt"})  # combined: 2 images
    cat = read_category(root, "nut")
    assert len(cat.defects["combined"]) == 2
    note = "nut: type 'combined' has 2 image(s), fewer than the strict split needs (3)"
    assert cat.notes[-1].startswith(note)
    assert str(anno) in cat.notes[-1]
    assert make_split(cat, "dualanodiff-bcm-official").defects["combined"].n_total == 2
    assert main(["data", "split", str(root), "--out", str(tmp_path / "splits")]) == 2
    err = capsys.readouterr().err
    assert "type 'combined' of nut has 2 anomalies (000.JPG, 001.JPG)" in err and "Traceback" not in err
    # without image_anno.csv every anomaly is one type; two anomalies read too
    anno.unlink()
    split_csv = root / "split_csv" / "1cls.csv"
    rows = split_csv.read_text().splitlines()
    anomalies = [r for r in rows if ",anomaly," in r]
    split_csv.write_text("\n".join([r for r in rows if r not in anomalies[2:]]) + "\n")
    cat = read_category(root, "nut")
    assert {d: len(s) for d, s in cat.defects.items()} == {"anomaly": 2}
    assert str(split_csv) in cat.notes[-1]


def test_visa_types_from_image_anno_and_without_it(tmp_path, written):
    root = tmp_path / "visa"
    shutil.copytree(written / "visa", root)
    anno = root / "nut" / "image_anno.csv"
    relabel(anno, {f"00{i}.JPG": "Chunk of wax missing" if i < 3 else "Scratch , Burnt" for i in range(6)})
    cat = read_category(root, "nut")
    assert sorted(cat.defects) == ["chunk_of_wax_missing", "combined", "missing", "scratch", "stain"]
    assert not cat.notes  # three images: a type of its own, nothing folded
    anno.unlink()
    cat = read_category(root, "nut")
    assert list(cat.defects) == ["anomaly"] and make_split(cat).folded == {}
    assert "split_csv" not in datasets.list_categories(root)


def test_mvtec_ad2_notes_private_test_sets(written, capsys):
    assert main(["data", "check", str(written / "mvtec-ad2")]) == 0
    out = capsys.readouterr().out
    assert "format: mvtec-ad2 (detected)" in out and "test_private: private test set" in out


def test_real_iad_resolution_picks_the_folder(tmp_path, written):
    root = tmp_path / "realiad"
    shutil.copytree(written / "real-iad", root)
    shutil.copytree(root / "realiad_256", root / "realiad_512")
    assert read_category(root, "nut").path == root / "realiad_512" / "nut"  # the largest by default
    assert read_category(root, "nut", resolution=256).path == root / "realiad_256" / "nut"
    with pytest.raises(DatasetError, match="available: 256, 512"):
        read_category(root, "nut", resolution="1024")


def test_mvtec_grey_category_reads_as_rgb(tmp_path, nut_root):
    root = tmp_path / "grey"
    shutil.copytree(nut_root / "nut", root / "nut")
    for path in (root / "nut").rglob("*.png"):
        if "ground_truth" not in path.parts:
            Image.open(path).convert("L").save(path)
    cat = read_category(root, "nut", format="mvtec")
    assert Image.open(cat.train_good[0]).mode == "L" and load_rgb(cat.train_good[0]).shape == (128, 128, 3)


# ---------------------------------------------------------------- errors: one line per problem, exit 2
def _one_problem(root: Path, **options) -> str:
    with pytest.raises(DatasetError) as info:
        read_category(root, "nut", **options)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


@pytest.mark.parametrize(
    ("layout", "breaks", "expected"),
    [
        ("visa", lambda r: (r / "nut/Data/Masks/Anomaly/004.png").unlink(), "004.JPG: no mask at"),
        ("visa", lambda r: (r / "split_csv/1cls.csv").unlink(), "1cls.csv: missing split file"),
        ("visa", lambda r: (r / "nut/Data/Images/Normal/0003.JPG").unlink(), "0003.JPG: listed in"),
        ("btad", lambda r: (r / "nut/ground_truth/ko/stain_000.png").unlink(), "stain_000.bmp: no mask at"),
        ("mvtec-loco", lambda r: shutil.rmtree(r / "nut/test/good"), "test/good: missing folder"),
        ("mvtec-3d", lambda r: (r / "nut/test/stain/gt/002.png").unlink(), "002.png: no mask at"),
        ("mvtec-ad2", lambda r: (r / "nut/test_public/bad/x.txt").write_text("x"), "x.txt: not an image"),
        ("real-iad", lambda r: next((r / "realiad_256/nut/OK").rglob("*.jpg")).unlink(), "listed in"),
    ],
)
def test_each_adapter_reports_one_line_per_problem(tmp_path, written, capsys, layout, breaks, expected):
    root = tmp_path / layout
    shutil.copytree(written / layout, root)
    breaks(root)
    line = _one_problem(root)
    assert expected in line and "\n" not in line
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_btad_product_03_masks_are_bmp(tmp_path, written):
    """BTAD as distributed: product 03's masks are ``<stem>.bmp``, the others' ``<stem>.png``."""
    root = tmp_path / "btad"
    shutil.copytree(written / "btad", root)
    masks = sorted((root / "nut" / "ground_truth" / "ko").glob("*.png"))
    for mask in masks:
        Image.open(mask).save(mask.with_suffix(".bmp"))
        mask.unlink()
    cat = read_category(root, "nut")
    samples = cat.defects["ko"]
    assert len(samples) == len(masks) and {s.mask.suffix for s in samples} == {".bmp"}
    assert read_mask(samples[0].mask).any()


def test_mvtec_3d_masks_with_one_grey_value_per_defect_class(tmp_path, written):
    """MVTec 3D-AD's gt masks hold class values (class_ids.json: e.g. 254 crack, 253 + 254 combined)."""
    root = tmp_path / "mvtec3d"
    shutil.copytree(written / "mvtec-3d", root)
    mask_path = next((root / "nut" / "test" / "stain" / "gt").glob("*.png"))
    binary = np.asarray(Image.open(mask_path).convert("L")) > 0
    labelled = np.where(binary, 254, 0).astype(np.uint8)
    labelled[: labelled.shape[0] // 2][binary[: labelled.shape[0] // 2]] = 253
    Image.fromarray(labelled).save(mask_path)
    cat = read_category(root, "nut")
    sample = next(s for s in cat.defects["stain"] if s.mask == mask_path)
    np.testing.assert_array_equal(read_mask(sample.mask), binary)


def test_format_flag_overrides_detection(written, capsys):
    root = written / "mpdd"  # masks named <stem>.png: MPDD, not MVTec AD
    assert main(["data", "check", str(root)]) == 0
    assert "format: mpdd (detected)" in capsys.readouterr().out
    assert main(["data", "check", str(root), "--format", "mvtec"]) == 2
    assert "_mask.png; add the binary mask" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.format: unknown dataset format 'nope'"):
        load_config("quick", ["data.format=nope"])


def test_a_user_adapter_registers_and_is_detected_first(tmp_path, written):
    @register_dataset("flat-test")
    class Flat(MVTecAD):
        def detect(self, root: Path) -> bool:
            return (root / "FLAT").exists()

    try:
        root = tmp_path / "flat"
        shutil.copytree(written / "mvtec", root)
        (root / "FLAT").write_text("")
        assert "flat-test" in list_datasets("flat*") and detect_format(root) == "flat-test"
        assert read_category(root, "nut").format == "flat-test"
    finally:
        datasets._REGISTRY.pop("flat-test")
        datasets._PRIORITY.pop("flat-test")


def test_synth_cli_writes_a_layout(tmp_path, capsys):
    assert (
        main(["data", "synth", "--out", str(tmp_path / "v"), "--layout", "btad", "--categories", "nut"]) == 0
    )
    out = capsys.readouterr().out
    assert "btad layout" in out and "ko:31" in out
    assert detect_format(tmp_path / "v") == "btad"


# ---------------------------------------------------------------- anomalib lists the same samples
def _compare(train_paths: set[str], test, cat, mask_of=str) -> None:
    """anomalib's train paths and test samples against ours; ``mask_of`` maps its mask_path to ours."""
    assert train_paths == {str(p) for p in cat.train_good}
    samples = test.samples
    assert set(samples[samples.label_index == 0].image_path) == {str(p) for p in cat.test_good}
    anomalies = samples[samples.label_index == 1]
    theirs = dict(zip(anomalies.image_path, map(mask_of, anomalies.mask_path), strict=True))
    assert theirs == {str(s.image): str(s.mask) for d in cat.defects.values() for s in d}


@pytest.mark.parametrize("layout", ["btad", "mpdd", "mvtec-3d", "mvtec-ad2"])
def test_same_samples_as_anomalib(written, layout):
    from anomalib.data.datasets import BTechDataset, MPDDDataset, MVTec3DDataset
    from anomalib.data.datasets.image.mvtecad2 import MVTecAD2Dataset

    cls = {
        "btad": BTechDataset,
        "mpdd": MPDDDataset,
        "mvtec-3d": MVTec3DDataset,
        "mvtec-ad2": MVTecAD2Dataset,
    }
    root = written / layout
    cat = read_category(root, "nut")
    train = set(cls[layout](root=root, category="nut", split="train").samples.image_path)
    if layout == "mvtec-ad2":  # validation/good is anomalib's val split; we train on it too
        train |= set(cls[layout](root=root, category="nut", split="val").samples.image_path)
    _compare(train, cls[layout](root=root, category="nut", split="test"), cat)


def test_same_samples_as_anomalib_mvtec_loco(written):
    import pandas as pd
    from anomalib.data.datasets.image.mvtec_loco import MVTecLOCODataset

    root = written / "mvtec-loco"
    cat = read_category(root, "nut")
    # anomalib 2.7's make_dataset puts each image's list of region masks into a column it created
    # with "", which pandas 3 makes a str column and refuses ("TypeError: Invalid value for dtype
    # 'str'"); pandas' pre-3 string inference (deprecated option) lets anomalib's own code run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the option's deprecation notice
        with pd.option_context("future.infer_string", False):
            loco = {s: MVTecLOCODataset(root=root, category="nut", split=s) for s in ("train", "val", "test")}
    train = set(loco["train"].samples.image_path) | set(loco["val"].samples.image_path)  # we train on val too
    masks = loco["test"].samples.mask_path
    assert all(m == sorted(str(p) for p in Path(m[0]).parent.iterdir()) for m in masks if len(m))
    _compare(train, loco["test"], cat, mask_of=lambda files: str(Path(files[0]).parent))


def test_same_samples_as_anomalib_visa(tmp_path, source):
    from anomalib.data import Visa
    from anomalib.data.datasets.image.visa import VisaDataset

    root = tmp_path / "visa"  # anomalib prepares VisA's twelve categories only
    get_dataset("visa").write([dataclasses.replace(source, name="candle")], root)
    relabel(root / "candle" / "image_anno.csv", RARE_LABELS)  # types do not change the samples
    cat = read_category(root, "candle")
    Visa(root=root, category="candle").prepare_data()  # anomalib's 1cls.csv split into visa_pytorch/
    prepared = {split: VisaDataset(root=root / "visa_pytorch", category="candle", split=split).samples
                for split in ("train", "test")}  # fmt: skip

    def same_files(theirs, ours: list[Path]) -> None:  # anomalib copies the files: same names and bytes
        assert sorted(Path(p).name for p in theirs) == sorted(p.name for p in ours)
        by_name = {p.name: p for p in ours}
        assert all(Path(p).read_bytes() == by_name[Path(p).name].read_bytes() for p in theirs)

    test = prepared["test"]
    same_files(prepared["train"].image_path, cat.train_good)
    same_files(test[test.label_index == 0].image_path, cat.test_good)
    anomalies = test[test.label_index == 1]
    ours = {s.image.name: s for d in cat.defects.values() for s in d}
    same_files(anomalies.image_path, [s.image for s in ours.values()])
    for image, mask in zip(anomalies.image_path, anomalies.mask_path, strict=True):  # binarised copies
        np.testing.assert_array_equal(read_mask(mask), read_mask(ours[Path(image).name].mask))
        assert read_mask(mask).any()


def test_same_samples_as_anomalib_real_iad(tmp_path, source):
    from anomalib.data.datasets.image.realiad import RealIADDataset

    root = tmp_path / "realiad"  # anomalib accepts Real-IAD's category names only
    get_dataset("real-iad").write([dataclasses.replace(source, name="plastic_nut")], root)
    cat = read_category(root, "plastic_nut")
    kwargs = {"root": root, "category": "plastic_nut", "resolution": 256}
    train = set(RealIADDataset(split="train", **kwargs).samples.image_path)
    _compare(train, RealIADDataset(split="test", **kwargs), cat)


# ---------------------------------------------------------------- tiny runs on other layouts
@pytest.mark.parametrize("layout", ["visa", "mvtec-loco"])
def test_tiny_run_on_another_layout(tmp_path, written, visa_rare, capsys, layout):
    from test_run_e2e import TINY

    run_dir = tmp_path / "run"
    root = visa_rare if layout == "visa" else written / layout  # VisA with rare labels folded
    args = ["run", "quick", "--dataset", str(root), "--out", str(run_dir), "--no-progress", *TINY]
    assert main([*args, "--format", layout]) == 0
    out = capsys.readouterr().out
    assert f"({layout})" in out and "image_auroc" in out
    (result_file,) = (run_dir / "raw" / "downstream").glob("real-fewshot__nut__all__seed0__*.json")
    result = json.loads(result_file.read_text())
    assert result["split"]["format"] == layout and result["config"]["data.format"] == layout
    assert 0.0 <= result["metrics"]["image_auroc"] <= 1.0
    manifest = json.loads((run_dir / "splits" / "nut.strict.json").read_text())
    assert manifest["format"] == layout
    assert manifest["folded"] == (RARE_FOLDS if layout == "visa" else {})


def test_paper_visa_preset_reads_visa(written):
    config = load_config("paper-visa", [f"data.root={written / 'visa'}"])
    assert config.data.format == "visa" and config.name == "paper-visa"
    assert load_config("paper-mvtec", [f"data.root={written / 'visa'}"]).segmenter == config.segmenter


def test_formats_and_generate_print_the_format(tmp_path, written, capsys):
    assert main(["data", "formats"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LAYOUTS) and out.index("real-iad") < out.index("\nmvtec ")
    args = ["generate", "--generator", "real-fewshot", "--dataset", str(written / "visa"), "-n", "1"]
    assert main([*args, "--out", str(tmp_path / "gen")]) == 0
    assert "format: visa (detected)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "gen" / "splits" / "nut.strict.json").read_text())
    assert manifest["format"] == "visa"


# ---------------------------------------------------------------- symlinks and missing defect folders
def _linked(tmp_path: Path, nut_root: Path, link: str) -> Path:
    """A copy of ``nut`` elsewhere, reached through a symlinked category or ``train/good`` folder."""
    elsewhere = tmp_path / "elsewhere" / "nut"
    shutil.copytree(nut_root / "nut", elsewhere)
    root = tmp_path / "dataset"
    root.mkdir()
    if link == "category":
        (root / "nut").symlink_to(elsewhere, target_is_directory=True)
    else:
        shutil.copytree(elsewhere, root / "nut", ignore=shutil.ignore_patterns("good"))
        (root / "nut" / "test" / "good").symlink_to(elsewhere / "test" / "good")
        (root / "nut" / "train" / "good").symlink_to(elsewhere / "train" / "good")
    return root


@pytest.mark.parametrize("link", ["category", "train-good"])
def test_symlinked_folders_are_followed(tmp_path, nut_root, capsys, link):
    from test_run_e2e import TINY

    root = _linked(tmp_path, nut_root, link)
    assert main(["data", "check", str(root)]) == 0
    assert main(["data", "split", str(root), "--out", str(tmp_path / "splits")]) == 0
    manifest = json.loads((tmp_path / "splits" / "nut.strict.json").read_text())
    assert manifest["train_good"][0].startswith("nut/train/good/")  # relative to the unresolved root
    run = ["run", "quick", "--dataset", str(root), "--out", str(tmp_path / "run"), "--no-progress", *TINY]
    assert main(run) == 0, capsys.readouterr().err
    assert list((tmp_path / "run" / "raw" / "downstream").glob("real-fewshot__nut__*.json"))


def test_a_dangling_symlinked_image_is_one_line_naming_it(tmp_path, nut_root, capsys):
    root = tmp_path / "dataset"
    shutil.copytree(nut_root, root)
    dangling = root / "nut" / "test" / "good" / "999.png"
    dangling.symlink_to(tmp_path / "gone.png")
    line = _one_problem(root)
    assert line.startswith(f"{dangling}: ") and "symbolic link" in line
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{dangling}: " in err and "Traceback" not in err


def test_a_category_without_defect_folders_names_the_folder(tmp_path, nut_root, capsys):
    root = tmp_path / "dataset"
    shutil.copytree(nut_root, root)
    for folder in (root / "nut" / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    line = _one_problem(root)
    assert line.startswith(f"{root / 'nut'}: no defect folders") and "test/<defect>" in line
    run = ["run", "quick", "--dataset", str(root), "--set", "data.categories=null", "--no-progress"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert f"{root / 'nut'}: no defect folders" in err and "Traceback" not in err

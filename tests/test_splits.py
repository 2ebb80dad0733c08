import dataclasses
import json
import shutil

import pytest

from anobench.benchmarks.cli import main
from anobench.benchmarks.data.mvtec import CategoryData, DefectSample, read_category
from anobench.benchmarks.data.splits import (
    SplitManifest,
    check_overlap,
    fewshot_count,
    first_test_index,
    fold_rare_types,
    make_split,
)
from anobench.benchmarks.errors import UserError


@pytest.mark.parametrize(
    ("n", "strict", "official"),
    # official: n = N//3, +1 if n % 3 != 0 (the released code tests the quotient, not N)
    [(3, 1, 2), (9, 3, 3), (10, 3, 3), (12, 4, 5), (17, 5, 6), (18, 6, 6), (22, 7, 8), (30, 10, 11)],
)
def test_fewshot_counts(n, strict, official):
    assert fewshot_count(n, "strict") == strict
    assert fewshot_count(n, "dualanodiff-official") == official
    assert first_test_index(n) == strict


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="unknown split preset"):
        fewshot_count(9, "thirds")


def _fake_category(tmp_path, counts):
    def sample(name, i):
        return DefectSample(
            tmp_path / f"test/{name}/{i:03d}.png", tmp_path / f"gt/{name}/{i:03d}_mask.png", name
        )

    defects = {name: [sample(name, i) for i in range(n)] for name, n in counts.items()}
    return CategoryData(root=tmp_path, name="toy", train_good=[tmp_path / "train/good/000.png"],
                        test_good=[tmp_path / "test/good/000.png"], defects=defects)  # fmt: skip


def test_strict_is_disjoint_and_complete(tmp_path):
    manifest = make_split(_fake_category(tmp_path, {"crack": 22, "hole": 9}), "strict")
    crack = manifest.defects["crack"]
    assert [e["image"] for e in crack.fewshot] == [f"test/crack/{i:03d}.png" for i in range(7)]
    assert [e["image"] for e in crack.test] == [f"test/crack/{i:03d}.png" for i in range(7, 22)]
    assert crack.overlap == [] and manifest.overlap_count == 0
    assert len(manifest.defects["hole"].fewshot) == 3 and len(manifest.defects["hole"].test) == 6


def test_official_reports_the_overlap(tmp_path):
    manifest = make_split(_fake_category(tmp_path, {"crack": 22, "hole": 9}), "dualanodiff-official")
    crack = manifest.defects["crack"]
    assert len(crack.fewshot) == 8 and crack.test[0]["image"] == "test/crack/007.png"
    assert crack.overlap == ["test/crack/007.png"]
    assert manifest.defects["hole"].overlap == []
    assert manifest.overlap_count == 1


@pytest.mark.parametrize(
    ("n", "bcm"), [(3, 1), (9, 3), (10, 4), (12, 4), (17, 6), (18, 6), (22, 8), (30, 10)]
)
def test_bcm_official_is_ceil_of_a_third(n, bcm):
    # the released BCM script: num//3 + 1 when num % 3 else num//3 (tests N, unlike the plain one)
    assert fewshot_count(n, "dualanodiff-bcm-official") == bcm


def test_bcm_official_reports_the_overlap(tmp_path):
    manifest = make_split(
        _fake_category(tmp_path, {"crack": 22, "hole": 9, "cut": 10}), "dualanodiff-bcm-official"
    )
    crack, cut = manifest.defects["crack"], manifest.defects["cut"]
    assert [e["image"] for e in crack.fewshot] == [f"test/crack/{i:03d}.png" for i in range(8)]  # sorted
    assert crack.overlap == ["test/crack/007.png"] and cut.overlap == ["test/cut/003.png"]
    assert manifest.defects["hole"].overlap == [] and manifest.overlap_count == 2
    written = json.loads(manifest.write(tmp_path / "m.json").read_text())
    assert written["preset"] == "dualanodiff-bcm-official" and written["overlap_count"] == 2


def test_overlap_check_fails_loudly_for_strict(tmp_path):
    manifest = make_split(_fake_category(tmp_path, {"crack": 22}), "dualanodiff-official")
    manifest.preset = "strict"
    with pytest.raises(UserError, match="007.png"):
        check_overlap(manifest)


def test_too_few_anomalies(tmp_path):
    with pytest.raises(UserError, match="at least 3 images"):
        make_split(_fake_category(tmp_path, {"crack": 2}), "strict")


def test_fold_rare_types_keeps_each_image_and_its_own_type(tmp_path):
    cat = _fake_category(tmp_path, {"crack": 9, "hole": 2, "cut": 1, "combined": 1})
    groups, folded = fold_rare_types(cat.defects)
    assert folded == {"cut": 1, "hole": 2} and list(groups) == ["combined", "crack"]
    assert [(s.defect, s.image.name) for s in groups["combined"]] == [
        ("combined", "000.png"), ("cut", "000.png"), ("hole", "000.png"), ("hole", "001.png")
    ]  # fmt: skip
    assert groups["crack"] is cat.defects["crack"]
    unchanged = {"crack": cat.defects["crack"]}
    assert fold_rare_types(unchanged) == (unchanged, {})
    small, _ = fold_rare_types({"combined": cat.defects["combined"]})  # the target is never folded
    assert len(small["combined"]) == 1
    manifest = make_split(dataclasses.replace(cat, defects=groups), "strict")
    assert manifest.folded == {"cut": "combined", "hole": "combined"}
    assert manifest.defects["combined"].fewshot == [
        {"image": "test/combined/000.png", "mask": "gt/combined/000_mask.png"}
    ]
    assert [e.get("folded_from") for e in manifest.defects["combined"].test] == ["cut", "hole", "hole"]
    assert SplitManifest.read(manifest.write(tmp_path / "m.json")) == manifest
    assert make_split(dataclasses.replace(cat, defects=unchanged)).folded == {}


def test_mvtec_keeps_the_strict_error_for_small_types(tmp_path, nut_root, capsys):
    root = tmp_path / "dataset"
    shutil.copytree(nut_root, root)
    scratch = sorted((root / "nut" / "test" / "scratch").iterdir())
    for image in scratch[2:]:  # two scratch images left
        image.unlink()
        (root / "nut" / "ground_truth" / "scratch" / f"{image.stem}_mask.png").unlink()
    assert main(["data", "check", str(root)]) == 0
    assert "note:" not in capsys.readouterr().out  # nothing folded
    assert main(["data", "split", str(root), "--out", str(tmp_path / "splits")]) == 2
    err = capsys.readouterr().err
    folder = root / "nut" / "test" / "scratch"
    assert f"{folder}: type 'scratch' of nut has 2 anomalies (000.png, 001.png)" in err
    assert "give no few-shot image under split 'strict'" in err
    assert "at least 3 images" in err and "Traceback" not in err


def test_manifest_round_trip(tmp_path, nut_root):
    manifest = make_split(read_category(nut_root, "nut"), "dualanodiff-official")
    path = manifest.write(tmp_path / "m.json")
    again = SplitManifest.read(path)
    assert again == manifest
    assert (
        json.loads(path.read_text())["overlap_count"] == manifest.overlap_count == 1
    )  # scratch: 12 -> 5 vs 4
    for pairs in again.fewshot_samples().values():
        assert all(image.exists() and mask.exists() for image, mask in pairs)


def test_cli_split_writes_manifests(tmp_path, nut_root, capsys):
    assert (
        main(["data", "split", str(nut_root), "--preset", "dualanodiff-official", "--out", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "1 image(s) in both" in out
    payload = json.loads((tmp_path / "nut.dualanodiff-official.json").read_text())
    assert payload["defects"]["scratch"]["overlap"] == ["nut/test/scratch/004.png"]
    assert set(payload) >= {"preset", "dataset", "train_good", "test_good", "defects"}

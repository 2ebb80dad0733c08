import json

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.metrics.catalogue import metric, written_by
from anobench.benchmarks.runner.stage_names import DOWNSTREAM
from anobench.downstream import metrics as M
from anobench.downstream.scoring import read_map


def _write_maps(nut_root, out, fmt="npy", size=None):
    """Maps = GT mask * 0.5 + seeded noise * 0.6: imperfect, so the metrics are not all 1."""
    data = read_category(nut_root, "nut")
    rng = np.random.default_rng(0)
    entries = [("good", p, None) for p in data.test_good]
    entries += [(d, s.image, s.mask) for d, samples in data.defects.items() for s in samples]
    maps, masks, labels = [], [], []
    for defect, image, mask in entries:
        truth = (
            np.zeros((128, 128), bool) if mask is None else np.asarray(Image.open(mask).convert("L")) > 127
        )
        amap = (truth * 0.5 + rng.random(truth.shape) * 0.6).astype(np.float32)
        (out / defect).mkdir(parents=True, exist_ok=True)
        if fmt == "npy":
            np.save(out / defect / f"{image.stem}.npy", amap if size is None else amap[:size, :size])
        else:
            Image.fromarray((np.clip(amap, 0, 1) * 255).round().astype(np.uint8)).save(
                out / defect / f"{image.stem}.png"
            )
            amap = (np.clip(amap, 0, 1) * 255).round().astype(np.uint8) / np.float32(255.0)
        maps.append(amap), masks.append(truth), labels.append(defect != "good")
    return np.stack(maps), np.stack(masks), np.array(labels)


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_score_command_equals_the_metrics_module(nut_root, tmp_path, capsys, fmt):
    maps, masks, labels = _write_maps(nut_root, tmp_path / "maps", fmt)
    code = main(["score", "--dataset", str(nut_root), "--category", "nut", "--maps", str(tmp_path / "maps"),
                 "--json", "--pool-kernel", "1"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    expected = M.segmentation_metrics(maps, masks, maps.reshape(len(maps), -1).max(1), labels=labels)
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert 0.5 < result["metrics"][M.PIXEL_AUPRO] < 1.0
    assert result["n_images"] == len(maps) and result["split"] == "all-test"


def test_score_command_split_and_table(nut_root, tmp_path, capsys):
    _write_maps(nut_root, tmp_path / "maps" / "nut" / "test")  # MVTec's evaluation layout
    code = main(["score", "--dataset", str(nut_root), "--category", "nut", "--maps", str(tmp_path / "maps"),
                 "--split", "strict", "--pixel-f1", "grid-0.05"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "pixel_aupro" in out and "scratch" in out and "(strict)" in out and "pixel F1: grid-0.05" in out
    # one row per metric, labelled and ordered as the metric catalogue says
    rows = out.split("\n\n")[0].splitlines()[2:]
    assert [row.split()[-2] for row in rows] == [m.key for m in written_by(DOWNSTREAM)]
    assert rows[0].startswith(f"{metric(M.IMAGE_AUROC).label}  ")


def test_score_command_errors_are_one_line_each(nut_root, tmp_path, capsys):
    _write_maps(nut_root, tmp_path / "maps", size=64)
    args = ["score", "--dataset", str(nut_root), "--category", "nut", "--maps", str(tmp_path / "maps")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "map is 64x64, the test image is 128x128" in err and "--resize 256" in err
    assert "Traceback" not in err and "... and" in err  # capped list of problems
    assert main([*args, "--resize", "64"]) == 0  # same maps, scored at 64 px
    capsys.readouterr()
    next((tmp_path / "maps" / "good").glob("*.npy")).unlink()
    assert main(args) == 2
    assert "missing map for test image" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "nowhere")]) == 2
    assert "folder not found" in capsys.readouterr().err


def test_scores_file_replaces_the_pooling_rule(nut_root, tmp_path, capsys):
    maps, masks, labels = _write_maps(nut_root, tmp_path / "maps")
    data = read_category(nut_root, "nut")
    names = [f"good/{p.stem}" for p in data.test_good]
    names += [f"{d}/{s.image.stem}" for d, samples in data.defects.items() for s in samples]
    scores = np.where(labels, 1.0, 0.0)  # a perfect image-level detector
    (tmp_path / "scores.csv").write_text(
        "name,score\n" + "".join(f"{n},{s}\n" for n, s in zip(names, scores, strict=True))
    )
    args = [
        "score",
        "--dataset",
        str(nut_root),
        "--category",
        "nut",
        "--maps",
        str(tmp_path / "maps"),
        "--json",
    ]
    assert main([*args, "--scores", str(tmp_path / "scores.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"][M.IMAGE_AUROC] == 1.0
    (tmp_path / "bad.json").write_text('{"good/000": 1}')
    assert main([*args, "--scores", str(tmp_path / "bad.json")]) == 2
    assert "no score for" in capsys.readouterr().err


def test_read_map_formats(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "a.png")
    assert read_map(tmp_path / "a.png").max() == pytest.approx(1.0)
    Image.fromarray(np.full((4, 4), 0.25, np.float32)).save(tmp_path / "b.tiff")
    assert read_map(tmp_path / "b.tiff")[0, 0] == pytest.approx(0.25)

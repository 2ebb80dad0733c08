import json

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import MANIFEST, read_generated_set
from anobench.generation.importers import import_generated, natural_key, scan

SIZE = 32


def _soft_mask(k):
    """A soft (saliency-like) mask: a radial ramp, values 0..255, brighter centre."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(yy - 10 - k, xx - 16)
    return np.clip(255 - r * 20, 0, 255).astype(np.uint8)


def _image(k):
    return np.full((SIZE, SIZE, 3), 20 * k, np.uint8)


def _layout(root, cat, defect, stems, image_ext, mask_ext, fg=False, extra_dirs=()):
    base = root / cat / defect
    for sub in ("image", "mask", *(["fg"] if fg else []), *extra_dirs):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(stems):
        Image.fromarray(_image(k)).save(base / "image" / f"{stem}{image_ext}")
        Image.fromarray(_soft_mask(k)).save(base / "mask" / f"{stem}{mask_ext}")
        if fg:
            Image.fromarray(_image(k) // 2).save(base / "fg" / f"{stem}{image_ext}")
        for sub in extra_dirs:
            Image.fromarray(_image(k)).save(base / sub / f"{stem}{image_ext}")
    return base


def _manifest(out):
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def test_anomalydiffusion_layout_renumbers_in_numeric_order_and_binarises(tmp_path):
    src = tmp_path / "generated_dataset"
    base = _layout(src, "bottle", "broken_large", ["10", "2", "0", "1"], ".jpg", ".jpg",
                   extra_dirs=("image-mask", "ori", "recon"))  # fmt: skip
    _layout(src, "bottle", "contamination", ["0"], ".jpg", ".jpg")
    out = tmp_path / "out"
    counts = import_generated("anomalydiffusion", src, out, progress=False)
    assert counts == {("bottle", "broken_large"): 4, ("bottle", "contamination"): 1}

    entries = read_generated_set(out)[("bottle", "broken_large")]  # validates: binary, same size
    records = [r for r in _manifest(out) if r["defect"] == "broken_large"]
    assert [r["source"] for r in records] == [
        f"bottle/broken_large/image/{s}.jpg" for s in ("0", "1", "2", "10")
    ]
    assert all(r["mask_threshold"] == 0.5 and r["seed"] is None and r["generator"] == "anomalydiffusion"
               for r in records)  # fmt: skip
    for entry, stem in zip(entries, ("0", "1", "2", "10"), strict=True):
        soft = np.asarray(Image.open(base / "mask" / f"{stem}.jpg").convert("L"))
        mask = np.asarray(Image.open(entry.mask)) == 255
        assert np.array_equal(mask, soft / 255 > 0.5)
        expected = np.asarray(Image.open(base / "image" / f"{stem}.jpg").convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(entry.image)), expected)
        assert entry.fg is None


def test_dualanodiff_layout_keeps_fg_and_threshold_changes_masks(tmp_path):
    src = tmp_path / "generate_data"
    _layout(src, "nut", "crack", ["0", "1", "2"], ".png", ".png", fg=True)
    areas = {}
    for t in (0.2, 0.8):
        out = tmp_path / f"out{t}"
        import_generated("dualanodiff", src, out, mask_threshold=t, progress=False)
        entries = read_generated_set(out)[("nut", "crack")]
        assert all(e.fg is not None for e in entries)
        assert np.array_equal(np.asarray(Image.open(entries[1].fg)), _image(1) // 2)
        areas[t] = sum((np.asarray(Image.open(e.mask)) == 255).sum() for e in entries)
        assert {r["mask_threshold"] for r in _manifest(out)} == {t}
    assert areas[0.2] > areas[0.8] > 0


def test_folder_layout_any_extension_and_one_category_folder(tmp_path):
    src = tmp_path / "mine"  # one category: <defect>/{image,mask}
    _layout(src, ".", "dent", ["a", "b"], ".jpg", ".bmp")
    with pytest.raises(GenerationInputError, match="one category.*--category"):
        scan("folder", src)
    out = tmp_path / "out"
    assert import_generated("folder", src, out, category="widget", progress=False) == {("widget", "dent"): 2}
    assert [r["source"] for r in _manifest(out)] == ["dent/image/a.jpg", "dent/image/b.jpg"]


def test_import_resumes_without_duplicates(tmp_path):
    src = tmp_path / "src"
    _layout(src, "nut", "crack", ["0", "1"], ".png", ".png")
    out = tmp_path / "out"
    import_generated("dualanodiff", src, out, progress=False)
    (out / "nut/crack/mask/0001.png").unlink()
    import_generated("dualanodiff", src, out, progress=False)
    records = _manifest(out)
    assert len(records) == 3 and (out / "nut/crack/mask/0001.png").exists()  # only the lost pair again
    assert len(read_generated_set(out)[("nut", "crack")]) == 2


def test_import_errors_are_one_line_each(tmp_path):
    src = tmp_path / "src"
    base = _layout(src, "nut", "crack", ["0", "1", "2"], ".png", ".png")
    (base / "mask" / "1.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(base / "mask" / "2.png")
    with pytest.raises(GenerationInputError) as info:
        scan("dualanodiff", src)
    assert info.value.problems == [f"{base / 'image' / '1.png'}: no mask named 1.* in {base / 'mask'}"]
    (base / "image" / "1.png").unlink()
    with pytest.raises(GenerationInputError, match="2.png: size 8x8 differs from its image 32x32"):
        import_generated("dualanodiff", src, tmp_path / "out", progress=False)
    with pytest.raises(GenerationInputError, match="no pairs found in the 'anomalydiffusion' layout"):
        scan("anomalydiffusion", src)  # PNG files, but that layout is JPG
    with pytest.raises(GenerationInputError, match="unknown layout 'dfmgan'"):
        scan("dfmgan", src)
    with pytest.raises(GenerationInputError, match="mask-threshold must be in"):
        import_generated("folder", src, tmp_path / "o", mask_threshold=1.5)


def test_natural_key_orders_numbers_numerically(tmp_path):
    names = ["10.png", "2.png", "img_1.png", "b.png", "a.png"]
    assert [n for n in sorted(names, key=lambda n: natural_key(tmp_path / n))] == [
        "img_1.png", "2.png", "10.png", "a.png", "b.png"
    ]  # fmt: skip


def test_cli_import_prints_counts_and_exits_2_on_errors(tmp_path, capsys):
    src = tmp_path / "src"
    _layout(src, "nut", "crack", ["0", "1"], ".png", ".png", fg=True)
    out = tmp_path / "out"
    code = main(["import", "--layout", "dualanodiff", str(src), "--out", str(out), "--mask-threshold", "0.4",
                 "--generator", "dualanodiff-released", "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "crack" in printed and "imported 2 pairs" in printed and "0.4" in printed
    assert {r["generator"] for r in _manifest(out)} == {"dualanodiff-released"}
    assert main(["import", "--layout", "folder", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "error: " in capsys.readouterr().err

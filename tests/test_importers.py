import json

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import MANIFEST, read_generated_set
from anobench.generation.importers import NamePattern, import_generated, natural_key, scan

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
    assert info.value.problems == [f"{base / 'image' / '1.png'}: no mask 1.* in {base / 'mask'}"]
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


# ---- the peers' released layouts: one fixture each, built here in that layout -------------------


def _rect(r, size=SIZE):
    """Mask number ``r``: a 0/255 rectangle at its own place (disjoint for r = 0..4)."""
    m = np.zeros((size, size), np.uint8)
    s = size // SIZE
    m[4 * s : 12 * s, (2 + 6 * r) * s : (6 + 6 * r) * s] = 255
    return m


def _coded(v, fmt="PNG"):
    """An image whose first channel is ``v`` (decodes back from PNG exactly, from JPEG to +-3)."""
    a = np.full((SIZE, SIZE, 3), 128, np.uint8)
    a[..., 0] = v
    return a


def _save(array, path, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _imported(out):
    """(manifest record, image array, mask bool array) per pair, read back with the project's reader."""
    entries = [e for group in read_generated_set(out).values() for e in group]  # validates: binary, sizes
    records = {r["image"]: r for r in _manifest(out)}
    rows = []
    for e in entries:
        rel = e.image.relative_to(out).as_posix()
        mask = np.asarray(Image.open(e.mask))
        assert set(np.unique(mask)) <= {0, 255}
        rows.append((records[rel], np.asarray(Image.open(e.image)), mask == 255))
    return rows


def test_seas_layout(tmp_path):
    src = tmp_path / "outputs" / "images"  # SeaS: outputs/images/<product>/<defect>/{image,mask}/NNN.png
    for defect, n in (("broken_large", 3), ("contamination", 2)):
        for k in range(n):
            _save(_coded(40 * k + 10), src / "bottle" / defect / "image" / f"{k:03}.png")
            _save(_rect(k), src / "bottle" / defect / "mask" / f"{k:03}.png")
    out = tmp_path / "out"
    counts = import_generated("seas", src, out, progress=False)
    assert counts == {("bottle", "broken_large"): 3, ("bottle", "contamination"): 2}
    rows = _imported(out)
    assert len(rows) == 5
    for record, image, mask in rows:
        k = (int(image[0, 0, 0]) - 10) // 40
        assert record["source"] == f"bottle/{record['defect']}/image/{k:03}.png"
        assert record["source_mask"] == f"bottle/{record['defect']}/mask/{k:03}.png"
        assert record["layout"] == "seas" and record["generator"] == "seas"
        assert np.array_equal(mask, _rect(k) == 255)


def test_o2mag_layout_shares_masks_and_resizes_them_to_the_image(tmp_path):
    src = tmp_path / "generated_data_fewshot" / "mvtec"
    base = src / "bottle" / "broken_large"
    names = [(0, 3), (0, 7), (1, 2), (2, 5)]  # image {i:03d}_{k:03d}_triag.png uses mask {i}.jpg
    for i, k in names:
        _save(_coded(60 * i + k), base / "image" / f"{i:03d}_{k:03d}_triag.png")
    for i in range(3):  # AnomalyDiffusion's soft masks: half the image's size, JPEG
        small = Image.fromarray(_rect(i)).resize((SIZE // 2, SIZE // 2), Image.Resampling.BILINEAR)
        _save(np.asarray(small), base / "mask" / f"{i}.jpg")
    out = tmp_path / "out"
    assert import_generated("o2mag", src, out, progress=False) == {("bottle", "broken_large"): 4}
    rows = _imported(out)
    assert [r["source"].split("/")[-1] for r, _, _ in rows] == [
        "000_003_triag.png", "000_007_triag.png", "001_002_triag.png", "002_005_triag.png"
    ]  # fmt: skip
    for record, image, mask in rows:
        i, k = divmod(int(image[0, 0, 0]), 60)
        assert record["source"] == f"bottle/broken_large/image/{i:03d}_{k:03d}_triag.png"
        assert record["source_mask"] == f"bottle/broken_large/mask/{i}.jpg"
        assert record["mask_resized_from"] == f"{SIZE // 2}x{SIZE // 2}"
        assert mask.shape == image.shape[:2]
        assert _iou(mask, _rect(i) == 255) > 0.8  # its own mask, upsampled
        assert all(_iou(mask, _rect(j) == 255) == 0 for j in range(3) if j != i)


def test_anogen_layout_defect_from_names_with_dashes_and_shared_masks(tmp_path):
    src = tmp_path / "mvtec_anomaly_4"
    masks = {("017", "broken_large"): 0, ("003", "broken_large"): 1, ("003", "color-shift"): 2}
    images = [  # {img}-{mask}-{sample}-{defect}.png: JPEG data under a .png name, as makeDataset.py copies
        ("000", "017", "0000", "broken_large"),
        ("000", "017", "0001", "broken_large"),
        ("001", "003", "0000", "broken_large"),
        ("002", "003", "0000", "color-shift"),
    ]
    for n, (img, mask, sample, defect) in enumerate(images):
        _save(_coded(50 * n + 20), src / "bottle" / "images" / f"{img}-{mask}-{sample}-{defect}.png", "JPEG")
    for (mask, defect), r in masks.items():
        _save(_rect(r), src / "bottle" / "masks" / f"{mask}-{defect}.png")
    # screw: per-image masks <img>-<mask>.png, as DRAEM/data_loader.py reads them
    _save(_coded(220), src / "screw" / "images" / "000-001-0000-thread_top.png", "JPEG")
    _save(_rect(3), src / "screw" / "masks" / "000-001.png")
    out = tmp_path / "out"
    counts = import_generated("anogen", src, out, progress=False)
    assert counts == {("bottle", "broken_large"): 3, ("bottle", "color-shift"): 1, ("screw", "thread_top"): 1}
    rows = _imported(out)
    for record, image, mask in rows:
        if record["category"] == "screw":
            assert record["source_mask"] == "screw/masks/000-001.png"
            assert np.array_equal(mask, _rect(3) == 255)
            continue
        n = round((float(image[..., 0].mean()) - 20) / 50)
        img, mask_id, sample, defect = images[n]
        assert record["defect"] == defect
        assert record["source"] == f"bottle/images/{img}-{mask_id}-{sample}-{defect}.png"
        assert record["source_mask"] == f"bottle/masks/{mask_id}-{defect}.png"
        assert np.array_equal(mask, _rect(masks[(mask_id, defect)]) == 255)

    _save(_rect(0), src / "screw" / "images" / "thread_top-000.png")  # where makeDataset.py puts screw masks
    with pytest.raises(GenerationInputError) as info:
        scan("anogen", src)
    assert info.value.problems == [
        f"{src / 'screw/images/thread_top-000.png'}: name does not match the anogen image pattern "
        "'{img}-{mask}-{sample}-{defect}.*' (1 such file(s))"
    ]


def test_magic_layout_thresholds_jpeg_masks(tmp_path):
    src = tmp_path / "outputs" / "noise_0.0_anomaly_0.0_0.0_dynamic_999999_align"  # <output_name>/<run>
    base = src / "hazelnut" / "crack"
    stems = [0, 1, 2, 10]
    for r, idx in enumerate(stems):
        _save(_coded(40 * r + 20), base / "image" / f"{idx}.jpg")
        _save(np.repeat(_rect(r)[..., None], 3, axis=2), base / "masks" / f"{idx}.jpg")  # RGB 0/255 JPEG
        _save(_coded(0), base / "normal" / f"{idx}.jpg")
    (base / "debug_mask").mkdir()
    grey = np.asarray(Image.open(base / "masks" / "0.jpg").convert("L"))
    assert len(np.unique(grey)) > 2  # the JPEG artefacts the threshold removes
    out = tmp_path / "out"
    assert import_generated("magic", src, out, progress=False) == {("hazelnut", "crack"): 4}
    rows = _imported(out)
    assert [r["source"] for r, _, _ in rows] == [f"hazelnut/crack/image/{i}.jpg" for i in stems]
    for r, (record, image, mask) in enumerate(rows):
        assert record["source_mask"] == f"hazelnut/crack/masks/{stems[r]}.jpg"
        assert abs(float(image[..., 0].mean()) - (40 * r + 20)) < 4
        assert np.array_equal(mask, _rect(r) == 255)
        assert "mask_resized_from" not in record


def test_folder_patterns_and_mask_folder_aliases(tmp_path):
    src = tmp_path / "mine"
    for k, stem in enumerate(["a", "b"]):  # <cat>/<defect>/images/<stem>.png + ground_truth/<stem>_mask.png
        _save(_coded(40 * k + 10), src / "widget" / "dent" / "images" / f"{stem}.png")
        _save(_rect(k), src / "widget" / "dent" / "ground_truth" / f"{stem}_mask.png")
    out = tmp_path / "out"
    with pytest.raises(GenerationInputError, match=r"a\.png: no mask a\.\* in .*ground_truth \(1 more"):
        import_generated("folder", src, out, progress=False)  # default pattern: same stem
    code = main(["import", "--layout", "folder", str(src), "--out", str(out), "--no-progress",
                 "--image-pattern", "{stem}.png", "--mask-pattern", "{stem}_mask.png"])  # fmt: skip
    assert code == 0
    for record, image, mask in _imported(out):
        k = (int(image[0, 0, 0]) - 10) // 40
        assert record["source_mask"] == f"widget/dent/ground_truth/{'ab'[k]}_mask.png"
        assert np.array_equal(mask, _rect(k) == 255)

    flat = tmp_path / "flat"  # the defect in the name: <cat>/imgs/<defect>_<n>.png + <cat>/gt/...
    for k, name in enumerate(["dent_1", "dent_2", "scratch_1"]):
        _save(_coded(40 * k + 10), flat / "widget" / "imgs" / f"{name}.png")
        _save(_rect(k), flat / "widget" / "gt" / f"{name}_mask.png")
    regex = r"re:(?P<defect>[a-z]+)_(?P<n>\d+)_mask\.png"
    counts = import_generated(
        "folder",
        flat,
        tmp_path / "out2",
        image_pattern="{defect}_{n}.png",
        mask_pattern=regex,
        progress=False,
    )
    assert counts == {("widget", "dent"): 2, ("widget", "scratch"): 1}
    for record, image, mask in _imported(tmp_path / "out2"):
        k = (int(image[0, 0, 0]) - 10) // 40
        assert record["defect"] == ["dent", "dent", "scratch"][k]
        assert np.array_equal(mask, _rect(k) == 255)

    with pytest.raises(GenerationInputError, match=r"uses \{n\}, which --image-pattern '\{stem\}.png' lacks"):
        import_generated("folder", flat, out, image_pattern="{stem}.png", mask_pattern="{n}_mask.png")
    with pytest.raises(GenerationInputError, match="names no field"):
        NamePattern.parse("mask.png")
    with pytest.raises(GenerationInputError, match="redefinition of group name 'n'"):
        NamePattern.parse("{n}_{n}.png")
    with pytest.raises(GenerationInputError, match="apply to --layout folder"):
        import_generated("seas", flat, out, image_pattern="{stem}.png")


def test_layout_mistakes_are_one_line_naming_the_file(tmp_path, capsys):
    src = tmp_path / "o2mag"
    base = src / "bottle" / "broken_large"
    for i, k in [(0, 3), (1, 2), (2, 5)]:
        _save(_coded(60 * i + k), base / "image" / f"{i:03d}_{k:03d}_triag.png")
        _save(_rect(i), base / "mask" / f"{i}.jpg")
    with pytest.raises(GenerationInputError) as info:  # O2MAG's folder read as MAGIC: no JPG images
        scan("magic", src)
    assert "no pairs found in the 'magic' layout" in str(info.value)
    with pytest.raises(GenerationInputError) as info:  # as SeaS: the masks are not <stem>.png
        scan("seas", src)
    assert info.value.problems == [
        f"{base / 'image/000_003_triag.png'}: no mask 000_003_triag.* in {base / 'mask'} "
        "(2 more image(s) here lack a mask)"
    ]
    seas = tmp_path / "seas"
    _save(_coded(1), seas / "bottle" / "crack" / "image" / "000.png")
    _save(_rect(0), seas / "bottle" / "crack" / "mask" / "000.png")
    with pytest.raises(GenerationInputError) as info:  # SeaS read as O2MAG
        scan("o2mag", seas)
    assert info.value.problems == [
        f"{seas / 'bottle/crack/image/000.png'}: name does not match the o2mag image pattern "
        "'{i}_{k}_triag.png' (wrong --layout?)"
    ]
    (base / "mask" / "2.jpg").unlink()  # an image without its mask
    code = main(["import", "--layout", "o2mag", str(src), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {base / 'image/002_005_triag.png'}: no mask 2.* in {base / 'mask'}"]
    for sub in ("mask",):  # no mask folder at all
        for p in (base / sub).iterdir():
            p.unlink()
        (base / sub).rmdir()
    with pytest.raises(GenerationInputError, match=r"image: no mask folder next to it \(expected mask/\)"):
        scan("o2mag", src)

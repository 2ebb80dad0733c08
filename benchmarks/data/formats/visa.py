"""VisA as distributed: ``<cat>/Data/{Images/{Normal,Anomaly},Masks/Anomaly}`` + ``split_csv/1cls.csv``.

* The split comes from ``split_csv/1cls.csv`` (``object,split,label,image,mask``; paths relative to
  the root): train rows are normal training images, test ``normal`` rows good test images, every
  ``anomaly`` row a real anomaly with its mask.
* Masks are label-valued PNGs: anomalous where != 0 (the common > 0 rule).
* Defect types come from ``<cat>/image_anno.csv`` (``image,label,mask``): one type per label
  (lower case, ``_`` for spaces); an image with several comma-separated labels is of type
  ``combined``. Without that file every anomaly is of type ``anomaly``.
* A label with fewer than 3 images (VisA has several) cannot be split into few-shot and test
  images by ``strict``, so it is folded into ``combined``
  (:func:`~anobench.benchmarks.data.splits.fold_rare_types`):
  the type SeaS and O2MAG already use for VisA's mixed defects, whose published VisA type lists
  hold only the frequent labels and ``combined``. No anomaly leaves the test set. The fold is a
  note of ``anobench data check`` and ``data split`` and is recorded in the split manifest
  (``folded``; each folded entry's own label in ``folded_from``). A type still under 3 images
  (``combined``, or ``anomaly`` without ``image_anno.csv``) is read, with a note; the split
  presets that cannot split it say so, as for every layout.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import (
    JPG_SUFFIXES,
    PNG_SUFFIXES,
    CategoryData,
    DatasetAdapter,
    DefectSample,
    sort_key,
)
from anobench.benchmarks.data.mvtec import save_image, save_mask
from anobench.benchmarks.data.splits import MIN_TYPE_IMAGES, fold_rare_types
from anobench.benchmarks.errors import DatasetError

SPLIT_CSV = Path("split_csv") / "1cls.csv"
FOLD_INTO = "combined"
SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
ANNO_CSV = "image_anno.csv"


def defect_type(label: str) -> str:
    """``"chunk of wax missing"`` -> ``chunk_of_wax_missing``; several labels -> ``combined``.

    Example:
        >>> defect_type("Chunk of wax missing"), defect_type("scratch,burnt")
        ('chunk_of_wax_missing', 'combined')
    """
    labels = [part.strip() for part in label.split(",") if part.strip()]
    if len(labels) > 1:
        return "combined"
    return re.sub(r"[^a-z0-9]+", "_", labels[0].lower()).strip("_") if labels else "anomaly"


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(columns)}"
            )
        return list(reader)


@register_dataset("visa", priority=20)
class VisA(DatasetAdapter):
    """VisA in its distributed layout (not anomalib's MVTec-style conversion)."""

    description = "VisA: <cat>/Data/{Images/{Normal,Anomaly},Masks/Anomaly} + split_csv/1cls.csv"
    image_suffixes = JPG_SUFFIXES + PNG_SUFFIXES
    binary_masks = False
    hint = "a VisA category needs Data/Images/Normal, Data/Images/Anomaly and Data/Masks/Anomaly"

    def detect(self, root: Path) -> bool:
        """``split_csv/1cls.csv`` or a ``<cat>/Data/Images`` folder."""
        return (root / SPLIT_CSV).is_file() or any(p.is_dir() for p in root.glob("*/Data/Images"))

    def list_categories(self, root: Path) -> list[str]:
        """Folders with ``Data/Images`` (``split_csv`` is not a category)."""
        return self.category_folders(root, lambda p: (p / "Data" / "Images").is_dir())

    def defect_types(self, base: Path) -> dict[str, str] | None:
        """Anomaly file name -> defect type, from ``image_anno.csv`` (None without it).

        Keyed by file name, so the file's path prefix (``candle/Data/...`` or ``Data/...``) does not matter.
        """
        path = base / ANNO_CSV
        if not path.is_file():
            return None
        return {
            Path(row["image"]).name: defect_type(row["label"])
            for row in _rows(path, ("image", "label", "mask"))
            if row["label"].strip().lower() != "normal"
        }

    def read_category(self, root: Path, category: str, *, validate: bool = True) -> CategoryData:
        """Read one category from the split file; types from ``image_anno.csv``."""
        base = self.category_base(root, category)
        split_path = root / SPLIT_CSV
        if not split_path.is_file():
            raise DatasetError(
                f"{split_path}: missing split file; VisA's split_csv/1cls.csv ({','.join(SPLIT_COLUMNS)}) "
                "names each image's split"
            )
        problems: list[str] = []
        rows = [r for r in _rows(split_path, SPLIT_COLUMNS) if r["object"] == category]
        if not rows:
            raise DatasetError(
                f"{split_path}: no rows for {category}; use the split file that came with VisA"
            )
        types = self.defect_types(base)
        train_good, test_good = [], []
        defects: dict[str, list[DefectSample]] = {}
        for row in rows:
            image = root / row["image"]
            if not image.is_file():
                problems.append(f"{image}: listed in {split_path} but missing; restore the file")
                continue
            if image.suffix.lower() not in self.image_suffixes:
                problems.append(f"{image}: not an image file; fix its row in {split_path}")
                continue
            if row["label"] == "normal":
                (train_good if row["split"] == "train" else test_good).append(image)
                continue
            mask = root / row["mask"] if row["mask"] else None
            if mask is None or not mask.is_file():
                problems.append(f"{image}: no mask at {mask}; add the mask (PNG, anomalous where != 0)")
                continue
            if types is None:
                defect = "anomaly"
            elif image.name in types:
                defect = types[image.name]
            else:
                problems.append(
                    f"{image}: anomaly not listed in {base / ANNO_CSV}; add its row (image,label,mask)"
                )
                continue
            defects.setdefault(defect, []).append(DefectSample(image=image, mask=mask, defect=defect))
        defects = {d: sorted(s, key=lambda x: sort_key(x.image)) for d, s in sorted(defects.items())}
        notes = []
        if types is not None:
            defects, folded = fold_rare_types(defects, FOLD_INTO)
            if folded:
                counts = ", ".join(f"{d} ({n})" for d, n in folded.items())
                notes.append(
                    f"{category}: label(s) with fewer than {MIN_TYPE_IMAGES} images folded into "
                    f"'{FOLD_INTO}': {counts}"
                )
        fix = f"label more in {base / ANNO_CSV}" if types is not None else f"list more in {split_path}"
        notes += [
            f"{category}: type '{name}' has {len(samples)} image(s), fewer than the strict split needs "
            f"({MIN_TYPE_IMAGES}): {fix}, or split with 'dualanodiff-bcm-official' (ceil(N/3))"
            for name, samples in defects.items()
            if len(samples) < MIN_TYPE_IMAGES
        ]
        return self.finish(
            root,
            category,
            sorted(train_good, key=sort_key),
            sorted(test_good, key=sort_key),
            defects,
            problems,
            validate=validate,
            notes=notes,
        )

    def write(self, categories: list[CategoryData], out: Path) -> None:
        """JPG images, label-valued masks (type index + 1), ``image_anno.csv`` and ``1cls.csv``.

        Each anomaly keeps its own label in ``image_anno.csv`` (a folded one, its rare label).
        """
        split_rows = []
        for cat in categories:
            data, anno = Path(cat.name) / "Data", []
            normals = [("train", p) for p in cat.train_good] + [("test", p) for p in cat.test_good]
            for i, (split, path) in enumerate(normals):
                rel = data / "Images" / "Normal" / f"{i:04d}.JPG"
                save_image(path, out / rel)
                split_rows.append([cat.name, split, "normal", rel.as_posix(), ""])
            samples = [(i + 1, s) for i, group in enumerate(cat.defects.values()) for s in group]
            for j, (value, sample) in enumerate(samples):
                rel = data / "Images" / "Anomaly" / f"{j:03d}.JPG"
                mask = data / "Masks" / "Anomaly" / f"{j:03d}.png"
                save_image(sample.image, out / rel)
                save_mask(sample.mask, out / mask, value)
                split_rows.append([cat.name, "test", "anomaly", rel.as_posix(), mask.as_posix()])
                anno.append([rel.as_posix(), sample.defect, mask.as_posix()])
            _write_csv(out / cat.name / ANNO_CSV, ("image", "label", "mask"), anno)
        _write_csv(out / SPLIT_CSV, SPLIT_COLUMNS, split_rows)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)

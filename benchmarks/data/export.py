"""Export a generated set to the layouts other tools read: anomalib ``Folder``, COCO, MVTec AD.

* ``anomalib-folder``: ``<out>/<category>/{normal,abnormal,mask}/``; generated images go to
  ``abnormal/<defect>_<index>.png`` and their masks to ``mask/`` under the same names (anomalib's
  ``Folder`` pairs them in sorted order); ``normal/`` holds the dataset's ``train/good`` images.
* ``coco``: ``<out>/images/<category>/<defect>/<index>.png`` and ``<out>/annotations.json``, one
  COCO category per (category, defect) named ``<category>/<defect>``, one instance annotation per
  8-connected mask component as uncompressed RLE (column-major ``counts``, as pycocotools reads it),
  with its ``bbox`` and ``area``; no dataset needed.
* ``mvtec``: ``<out>/<category>/{train/good,test/good,test/<defect>,ground_truth/<defect>}`` written
  by the MVTec reader's own writer, the generated pairs as the test anomalies and the dataset's good
  images as train/test good, so :func:`anobench.benchmarks.data.datasets.read_category` reads it.

Example:
    >>> from anobench.benchmarks.data.export import export_generated_set  # doctest: +SKIP
    >>> export_generated_set("runs/q/generated/crop-paste__seed0__ab12", "coco", "out")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from anobench.benchmarks.data.datasets import get_dataset, read_category
from anobench.benchmarks.data.layout import CategoryData, DefectSample
from anobench.benchmarks.data.mvtec import save_image, save_mask
from anobench.benchmarks.errors import UserError
from anobench.generation.base import read_mask
from anobench.generation.format import GeneratedEntry, read_generated_set

EXPORT_FORMATS = ("anomalib-folder", "coco", "mvtec")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def export_generated_set(
    root: str | Path, to: str, out: str | Path, dataset: str | Path | None = None, **dataset_options: object
) -> Path:
    """Write the generated set at ``root`` in layout ``to`` under ``out``; return ``out``.

    ``dataset`` (any layout; ``dataset_options``: its ``format``/``resolution``) gives the normal
    images ``anomalib-folder`` and ``mvtec`` need; ``coco`` needs none.
    """
    if to not in EXPORT_FORMATS:
        raise UserError(f"--to {to}: choose one of {', '.join(EXPORT_FORMATS)}")
    pairs = read_generated_set(root)
    out = Path(out)
    if to == "coco":
        return write_coco(pairs, out)
    if dataset is None:
        raise UserError(f"--to {to} needs --dataset DIR: the normal images of the layout come from it")
    by_category: dict[str, dict[str, list[GeneratedEntry]]] = {}
    for (category, defect), entries in pairs.items():
        by_category.setdefault(category, {})[defect] = entries
    for category, defects in sorted(by_category.items()):
        real = read_category(Path(dataset), category, **dataset_options)
        if to == "mvtec":
            _write_mvtec(real, defects, out)
        else:
            _write_folder(real, defects, out / category)
    return out


def _write_folder(real: CategoryData, defects: dict[str, list[GeneratedEntry]], base: Path) -> None:
    for path in real.train_good:
        save_image(path, base / "normal" / f"{path.stem}.png")
    for defect, entries in sorted(defects.items()):
        for entry in entries:
            name = f"{defect}_{entry.index:04d}.png"
            shutil.copyfile(entry.image, _parent(base / "abnormal" / name))
            save_mask(entry.mask, base / "mask" / name)


def _write_mvtec(real: CategoryData, defects: dict[str, list[GeneratedEntry]], out: Path) -> None:
    samples = {d: [DefectSample(e.image, e.mask, d) for e in entries] for d, entries in defects.items()}
    category = CategoryData(real.root, real.name, real.train_good, real.test_good, samples)
    get_dataset("mvtec").write([category], out)


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def rle_encode(mask: np.ndarray) -> dict[str, object]:
    """COCO uncompressed RLE of a binary mask: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.r_[0, changes, flat.size]
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_coco(pairs: dict[tuple[str, str], list[GeneratedEntry]], out: Path) -> Path:
    """COCO instance segmentation: images, one category per (category, defect), one RLE per component."""
    names = sorted(pairs)
    categories = [{"id": i + 1, "name": f"{c}/{d}", "supercategory": c} for i, (c, d) in enumerate(names)]
    images, annotations = [], []
    for cat_id, (category, defect) in enumerate(names, start=1):
        for entry in pairs[(category, defect)]:
            relative = Path("images") / category / defect / f"{entry.index:04d}.png"
            shutil.copyfile(entry.image, _parent(out / relative))
            mask = read_mask(entry.mask) > 0
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": relative.as_posix(),
                           "height": int(mask.shape[0]), "width": int(mask.shape[1])})  # fmt: skip
            labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
            for component in range(1, n + 1):
                region = labels == component
                rows, cols = np.nonzero(region)
                x0, y0 = int(cols.min()), int(rows.min())
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                    "segmentation": rle_encode(region), "area": int(region.sum()),
                    "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1], "iscrowd": 0,
                })  # fmt: skip
    payload = {"images": images, "annotations": annotations, "categories": categories}
    (_parent(out / "annotations.json")).write_text(json.dumps(payload))
    return out

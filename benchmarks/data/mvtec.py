"""MVTec AD (and MPDD, same layout) readers; the folder-per-class reader other layouts build on.

Layout of one category::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

The MVTec reader is strict: PNG only (a JPG is a clear error), binary masks. Grey categories
(grid, screw, zipper) and images of 700-1024 px read like any other (every image is converted to
RGB by :func:`anobench.generation.base.read_image`).

``read_category``, ``list_categories``, ``check_dataset`` and ``summary_rows`` are re-exported from
:mod:`anobench.benchmarks.data.datasets`: they read any registered layout (detected, or ``format=``).

Example:
    >>> from anobench.benchmarks.data.mvtec import read_category
    >>> cat = read_category("/data/mvtec", "bottle")  # doctest: +SKIP
    >>> sorted(cat.defects)  # doctest: +SKIP
    ['broken_large', 'broken_small', 'contamination']
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from anobench.benchmarks.data.datasets import (
    check_dataset,
    list_categories,
    read_category,
    register_dataset,
    summary_rows,
)
from anobench.benchmarks.data.layout import CategoryData, DatasetAdapter, DefectSample, subdirs
from anobench.generation.base import read_image, read_mask

__all__ = [
    "CategoryData",
    "DefectSample",
    "FolderPerClass",
    "MVTecAD",
    "check_dataset",
    "list_categories",
    "read_category",
    "summary_rows",
]

MASK_SUFFIX = "_mask.png"
LAYOUT_HINT = "an MVTec-AD category needs train/good, test/good, test/<defect> and ground_truth/<defect>"


def save_image(image: Path, dest: Path) -> None:
    """Write a dataset image to ``dest`` in the format its suffix names (PNG, JPG, BMP)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    im = read_image(image)
    im.save(dest, quality=95) if dest.suffix.lower() in (".jpg", ".jpeg") else im.save(dest)


def save_mask(mask: Path, dest: Path, value: int = 255) -> None:
    """Write a mask as a PNG holding 0 and ``value``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(read_mask(mask).astype(np.uint8) * value).save(dest)


class FolderPerClass(DatasetAdapter):
    """Layouts with one folder per class: ``train/<good>``, ``test/<good>``, ``test/<defect>``.

    Subclasses change the hooks (folder names, mask names, extra normal folders).
    """

    good: ClassVar[str] = "good"
    test_dir: ClassVar[str] = "test"
    write_suffix: ClassVar[str] = ".png"
    hint = LAYOUT_HINT

    def detect(self, root: Path) -> bool:
        """A category folder with ``train/<good>``."""
        return any((root / n / "train" / self.good).is_dir() for n in subdirs(root))

    def list_categories(self, root: Path) -> list[str]:
        """Folders holding ``train/`` or the test folder."""
        return self.category_folders(root, lambda p: (p / "train").is_dir() or (p / self.test_dir).is_dir())

    # hooks
    def images_dir(self, base: Path, split: str, cls: str) -> Path:
        """The folder of ``split`` (train/test) images of class ``cls``."""
        return base / split / cls

    def defect_names(self, base: Path) -> list[str]:
        """The defect folders of the test set."""
        return [d for d in subdirs(base / self.test_dir) if d != self.good]

    def mask_dir(self, base: Path, defect: str) -> Path:
        """The folder of ``defect``'s masks."""
        return base / "ground_truth" / defect

    def mask_names(self, image: Path) -> list[str]:
        """Accepted mask names of ``image``, preferred first."""
        return [f"{image.stem}{MASK_SUFFIX}"]

    def extra_normals(self, base: Path) -> list[Path]:
        """Folders of further normal training images (validation/good in some layouts)."""
        return []

    def notes(self, base: Path) -> list[str]:
        """What the reader leaves out on purpose (shown by ``anobench data check``)."""
        return []

    def read_category(self, root: Path, category: str, *, validate: bool = True) -> CategoryData:
        """Read one category through the hooks; every problem is collected before raising."""
        base = self.category_base(root, category)
        train_dir = self.images_dir(base, "train", self.good)
        good_dir = self.images_dir(base, self.test_dir, self.good)
        self.require([train_dir, good_dir])
        problems: list[str] = []
        train_good = self.image_files(train_dir, problems)
        for folder in self.extra_normals(base):
            if folder.is_dir():
                train_good += self.image_files(folder, problems)
        test_good = self.image_files(good_dir, problems)
        defects: dict[str, list[DefectSample]] = {}
        for defect in self.defect_names(base):
            folder = self.images_dir(base, self.test_dir, defect)
            images = self.image_files(folder, problems) if folder.is_dir() else []
            if not images:
                problems.append(f"{folder}: empty defect folder; add its images or remove the folder")
                continue
            samples = []
            for image in images:
                candidates = [self.mask_dir(base, defect) / n for n in self.mask_names(image)]
                mask = next((m for m in candidates if m.exists()), None)
                if mask is None:
                    problems.append(
                        f"{image}: no mask at {candidates[0]}; add the binary mask (0/255 PNG) with that name"
                    )
                    continue
                samples.append(DefectSample(image=image, mask=mask, defect=defect))
            defects[defect] = samples
        return self.finish(
            root,
            category,
            train_good,
            test_good,
            defects,
            problems,
            validate=validate,
            notes=self.notes(base),
        )

    # writing (``anobench data synth --layout``)
    def defect_map(self, defects: list[str]) -> dict[str, str]:
        """Which defect type of this layout each source type becomes (identity here)."""
        return {d: d for d in defects}

    def write_mask(self, mask: Path, base: Path, defect: str, image_name: str) -> None:
        """Write the mask of the image written as ``image_name``."""
        save_mask(mask, self.mask_dir(base, defect) / self.mask_names(Path(image_name))[0])

    def write(self, categories: list[CategoryData], out: Path) -> None:
        """Write each category; source defect types map through :meth:`defect_map`."""
        for cat in categories:
            base = out / cat.name
            n_extra = len(cat.test_good) if self.extra_normals(base) else 0
            train, extra = (
                cat.train_good[: len(cat.train_good) - n_extra],
                cat.train_good[len(cat.train_good) - n_extra :],
            )
            for path in train:
                save_image(path, self.images_dir(base, "train", self.good) / (path.stem + self.write_suffix))
            for path in extra:
                save_image(path, self.extra_normals(base)[0] / (path.stem + self.write_suffix))
            for path in cat.test_good:
                save_image(
                    path, self.images_dir(base, self.test_dir, self.good) / (path.stem + self.write_suffix)
                )
            mapping = self.defect_map(list(cat.defects))
            for defect, samples in cat.defects.items():
                target = mapping[defect]
                merged = list(mapping.values()).count(target) > 1 or target != defect
                for sample in samples:
                    name = f"{defect}_{sample.image.stem}" if merged else sample.image.stem
                    save_image(
                        sample.image,
                        self.images_dir(base, self.test_dir, target) / (name + self.write_suffix),
                    )
                    self.write_mask(sample.mask, base, target, name + self.write_suffix)


@register_dataset("mvtec", priority=90)
class MVTecAD(FolderPerClass):
    """MVTec AD: PNG images, ``<stem>_mask.png`` binary masks (the fallback layout)."""

    description = "MVTec AD: <cat>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}"

    def detect(self, root: Path) -> bool:
        """Any folder with ``train/`` or ``test/`` (the fallback: its reader then names what is missing)."""
        return any((root / n / "train").is_dir() or (root / n / "test").is_dir() for n in subdirs(root))


MPDD_CATEGORIES = frozenset(
    {"bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"}
)


@register_dataset("mpdd", priority=80)
class MPDD(FolderPerClass):
    """MPDD: MVTec AD's layout; masks named ``<stem>_mask.png`` or ``<stem>.png``.

    Detected by MPDD's category names or by a mask named ``<stem>.png``.
    """

    description = "MPDD: MVTec layout, masks <stem>_mask.png or <stem>.png"

    def detect(self, root: Path) -> bool:
        names = set(subdirs(root))
        if names & MPDD_CATEGORIES and all(
            (root / n / "train" / "good").is_dir() for n in names & MPDD_CATEGORIES
        ):
            return True
        for name in names:
            gt = root / name / "ground_truth"
            if (root / name / "train" / "good").is_dir() and gt.is_dir():
                for defect in subdirs(gt):
                    masks = [p.name for p in (gt / defect).iterdir() if p.suffix == ".png"]
                    if masks and not any(m.endswith(MASK_SUFFIX) for m in masks):
                        return True
        return False

    def mask_names(self, image: Path) -> list[str]:
        return [f"{image.stem}{MASK_SUFFIX}", f"{image.stem}.png"]

    def write_mask(self, mask: Path, base: Path, defect: str, image_name: str) -> None:
        save_mask(mask, self.mask_dir(base, defect) / f"{Path(image_name).stem}.png")

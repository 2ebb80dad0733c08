"""The in-memory view every dataset adapter returns, and the checks they share.

An adapter (:class:`DatasetAdapter`) turns one folder layout into :class:`CategoryData`: normal
training images, good test images and real anomalies with their masks, grouped by defect type.
Images are read by :func:`anobench.generation.base.read_image` and masks by
:func:`anobench.generation.base.read_mask` (anomalous where > 0) wherever they are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from anobench.benchmarks.errors import DatasetError

PNG_SUFFIXES = (".png",)
JPG_SUFFIXES = (".jpg", ".jpeg")
BMP_SUFFIXES = (".bmp",)


@dataclass(frozen=True)
class DefectSample:
    """One real anomalous test image and its ground-truth mask (a file, or a folder of files ORed).

    ``defect`` is the image's own type; it differs from the type the image is grouped under
    (its key in :attr:`CategoryData.defects`) only when a rare type was folded into another.
    """

    image: Path
    mask: Path
    defect: str


@dataclass
class CategoryData:
    """The files of one category, in sorted (file index) order."""

    root: Path
    name: str
    train_good: list[Path]
    test_good: list[Path]
    defects: dict[str, list[DefectSample]]
    image_size: tuple[int, int] | None = None  # (width, height) when all images share one size
    problems: list[str] = field(default_factory=list)
    format: str = "mvtec"  # the adapter that read it
    notes: list[str] = field(default_factory=list)  # what was left out on purpose (private test sets)
    base: Path | None = None  # the category folder when it is not root/name (Real-IAD)

    @property
    def path(self) -> Path:
        """The category folder."""
        return self.base or self.root / self.name


def is_hidden(path: Path) -> bool:
    """Dot files and folders are never part of a dataset."""
    return path.name.startswith(".")


def sort_key(path: Path) -> tuple[int, int | str, str]:
    """Numeric file names sort by number (000, 001, ..., 10), others lexicographically."""
    stem = path.stem
    return (0, int(stem), stem) if stem.isdigit() else (1, stem, stem)


def subdirs(folder: Path) -> list[str]:
    """Visible sub-folder names, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p))


def open_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) of an image, or None with a problem when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        problems.append(f"{path}: unreadable image ({exc.__class__.__name__}); replace or remove the file")
        return None


class DatasetAdapter:
    """One folder layout. Subclasses register with ``@register_dataset("name")``.

    Override :meth:`detect`, :meth:`list_categories` and :meth:`read_category`; :meth:`write`
    (write categories in this layout) is what ``anobench data synth --layout`` uses.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    image_suffixes: ClassVar[tuple[str, ...]] = PNG_SUFFIXES
    binary_masks: ClassVar[bool] = True  # masks must hold two values (0/255 or 0/1); else any (> 0)
    hint: ClassVar[str] = ""  # how a category must look, appended to layout problems

    def __init__(self, resolution: str | None = None) -> None:
        self.resolution = resolution

    # -------------------------------------------------------------- the contract
    def detect(self, root: Path) -> bool:
        """Whether ``root`` looks like this layout (cheap: names only, no image is opened)."""
        raise NotImplementedError

    def list_categories(self, root: Path) -> list[str]:
        """Category names under ``root``."""
        raise NotImplementedError

    def read_category(self, root: Path, category: str, *, validate: bool = True) -> CategoryData:
        """The in-memory view of one category; :class:`DatasetError` with one line per problem."""
        raise NotImplementedError

    def write(self, categories: list[CategoryData], out: Path) -> None:
        """Write ``categories`` (read from any layout) into ``out`` in this layout."""
        raise NotImplementedError(f"format {self.name!r} cannot write datasets")

    # -------------------------------------------------------------- shared helpers
    def category_folders(self, root: Path, has: Callable[[Path], bool]) -> list[str]:
        """Sub-folders of ``root`` for which ``has(folder)``; a clear error when there are none."""
        if not root.is_dir():
            raise DatasetError(
                f"{root}: dataset folder not found; pass the folder that holds the category folders"
            )
        names = [n for n in subdirs(root) if has(root / n)]
        if not names:
            raise DatasetError(f"{root}: no category folders found; {self.hint}")
        return names

    def category_base(self, root: Path, category: str) -> Path:
        """``root/category``, or a DatasetError listing the categories there are."""
        base = root / category
        if not base.is_dir():
            raise DatasetError(
                f"{base}: category folder not found; available: {', '.join(self.list_categories(root))}"
            )
        return base

    def image_files(self, folder: Path, problems: list[str]) -> list[Path]:
        """Images of ``folder`` with this layout's suffixes; anything else becomes a problem."""
        files = []
        for path in sorted(
            (p for p in folder.iterdir() if not is_hidden(p) and not p.is_dir()), key=sort_key
        ):
            if not path.exists():  # only a symlink can name nothing
                problems.append(
                    f"{path}: dangling symbolic link to {os.readlink(path)}; fix the link or remove it"
                )
                continue
            suffix = path.suffix.lower()
            if suffix in self.image_suffixes:
                files.append(path)
            elif suffix in JPG_SUFFIXES and self.image_suffixes == PNG_SUFFIXES:
                problems.append(
                    f"{path}: JPG found where PNG is expected; convert it to PNG "
                    "(e.g. `mogrify -format png *.jpg`) and remove the JPG"
                )
            else:
                problems.append(f"{path}: not an image file; remove it from the dataset folder")
        return files

    def require(self, folders: list[Path]) -> None:
        """Raise one problem per missing folder."""
        missing = [f"{f}: missing folder; {self.hint}" for f in folders if not f.is_dir()]
        if missing:
            raise DatasetError(*missing)

    def check_mask(self, path: Path, expected: tuple[int, int] | None, problems: list[str]) -> None:
        """A mask (or each file of a mask folder) must read and match its image's size.

        Layouts with binary masks also need two values (0/255 or 0/1).
        """
        files = sorted(p for p in path.iterdir() if not is_hidden(p)) if path.is_dir() else [path]
        if not files:
            problems.append(f"{path}: empty mask folder; add the region masks (PNG) or remove the image")
        for file in files:
            size = open_size(file, problems)
            if size is None:
                continue
            if expected is not None and size != expected:
                problems.append(
                    f"{file}: mask is {size[0]}x{size[1]} but its image is {expected[0]}x{expected[1]}; "
                    "resize the mask with nearest-neighbour interpolation to the image size"
                )
                continue
            if not self.binary_masks:
                continue  # label-valued masks: anything > 0 is anomalous
            with Image.open(file) as im:
                values = set(np.unique(np.asarray(im.convert("L"))).tolist())
            if not (values <= {0, 255} or values <= {0, 1}):
                problems.append(
                    f"{file}: mask is not binary ({len(values)} grey levels); threshold it to 0/255 at 128"
                )

    def finish(
        self,
        root: Path,
        category: str,
        train_good: list[Path],
        test_good: list[Path],
        defects: dict[str, list[DefectSample]],
        problems: list[str],
        *,
        validate: bool,
        notes: list[str] | None = None,
        base: Path | None = None,
    ) -> CategoryData:
        """Check counts (and with ``validate`` every image and mask), then build the view."""
        where = base or root / category
        if not train_good:
            problems.append(f"{where}: no normal training images; {self.hint}")
        if not test_good:
            problems.append(f"{where}: no good test images; {self.hint}")
        if not defects:
            problems.append(f"{where}: no defect folders (no anomalous test images); {self.hint}")
        sizes: set[tuple[int, int]] = set()
        if validate:
            for path in [*train_good, *test_good]:
                size = open_size(path, problems)
                if size is not None:
                    sizes.add(size)
            for samples in defects.values():
                for sample in samples:
                    size = open_size(sample.image, problems)
                    if size is not None:
                        sizes.add(size)
                    self.check_mask(sample.mask, size, problems)
        if problems:
            raise DatasetError(*problems)
        return CategoryData(
            root=root,
            name=category,
            train_good=train_good,
            test_good=test_good,
            defects=defects,
            image_size=next(iter(sizes)) if len(sizes) == 1 else None,
            format=self.name,
            notes=notes or [],
            base=base,
        )

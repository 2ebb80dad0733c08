"""Reader and validator for datasets in the MVTec-AD layout (real MVTec AD included).

Layout of one category::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

Example:
    >>> from anobench.benchmarks.data.mvtec import read_category
    >>> cat = read_category("/data/mvtec", "bottle")  # doctest: +SKIP
    >>> sorted(cat.defects)  # doctest: +SKIP
    ['broken_large', 'broken_small', 'contamination']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anobench.benchmarks.errors import DatasetError

PNG_SUFFIXES = (".png",)
JPG_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIX = "_mask.png"
LAYOUT_HINT = "an MVTec-AD category needs train/good, test/good, test/<defect> and ground_truth/<defect>"


@dataclass(frozen=True)
class DefectSample:
    """One real anomalous test image and its ground-truth mask."""

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

    @property
    def path(self) -> Path:
        """The category folder."""
        return self.root / self.name


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _sort_key(path: Path) -> tuple[int, int | str, str]:
    """Numeric file names sort by number (000, 001, ..., 10), others lexicographically."""
    stem = path.stem
    return (0, int(stem), stem) if stem.isdigit() else (1, stem, stem)


def _image_files(folder: Path, problems: list[str]) -> list[Path]:
    """PNG files of ``folder``; JPG and non-image files become problems."""
    files = []
    for path in sorted((p for p in folder.iterdir() if p.is_file() and not _is_hidden(p)), key=_sort_key):
        suffix = path.suffix.lower()
        if suffix in PNG_SUFFIXES:
            files.append(path)
        elif suffix in JPG_SUFFIXES:
            problems.append(
                f"{path}: JPG found where PNG is expected; convert it to PNG "
                "(e.g. `mogrify -format png *.jpg`) and remove the JPG"
            )
        else:
            problems.append(f"{path}: not an image file; remove it from the dataset folder")
    return files


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def list_categories(root: str | Path) -> list[str]:
    """Category folders under ``root`` (those holding ``train/`` or ``test/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found; pass the folder that holds the category folders"
        )
    names = [n for n in _subdirs(root) if (root / n / "train").is_dir() or (root / n / "test").is_dir()]
    if not names:
        raise DatasetError(f"{root}: no category folders found; {LAYOUT_HINT}")
    return names


def _open_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        problems.append(f"{path}: unreadable image ({exc.__class__.__name__}); replace or remove the file")
        return None


def _check_mask(path: Path, expected: tuple[int, int] | None, problems: list[str]) -> None:
    size = _open_size(path, problems)
    if size is None:
        return
    if expected is not None and size != expected:
        problems.append(
            f"{path}: mask is {size[0]}x{size[1]} but its image is {expected[0]}x{expected[1]}; "
            "resize the mask with nearest-neighbour interpolation to the image size"
        )
        return
    values = np.unique(np.asarray(Image.open(path).convert("L")))
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        problems.append(
            f"{path}: mask is not binary ({len(values)} grey levels); threshold it to 0/255 at 128"
        )


def read_category(root: str | Path, category: str, *, validate: bool = True) -> CategoryData:
    """List (and by default validate) the files of one category.

    Raises:
        DatasetError: one line per problem, each naming the file and the fix.
    """
    root = Path(root)
    base = root / category
    problems: list[str] = []
    if not base.is_dir():
        raise DatasetError(
            f"{base}: category folder not found; available: {', '.join(list_categories(root))}"
        )
    for required in ("train/good", "test/good"):
        if not (base / required).is_dir():
            problems.append(f"{base / required}: missing folder; {LAYOUT_HINT}")
    if problems:
        raise DatasetError(*problems)

    train_good = _image_files(base / "train" / "good", problems)
    test_good = _image_files(base / "test" / "good", problems)
    for folder, files in (("train/good", train_good), ("test/good", test_good)):
        if not files:
            problems.append(f"{base / folder}: no PNG images; {LAYOUT_HINT}")

    defects: dict[str, list[DefectSample]] = {}
    for defect in (d for d in _subdirs(base / "test") if d != "good"):
        images = _image_files(base / "test" / defect, problems)
        if not images:
            problems.append(
                f"{base / 'test' / defect}: empty defect folder; add its images or remove the folder"
            )
            continue
        gt_dir = base / "ground_truth" / defect
        samples = []
        for image in images:
            mask = gt_dir / f"{image.stem}{MASK_SUFFIX}"
            if not mask.is_file():
                problems.append(f"{image}: no mask at {mask}; add the binary mask (0/255 PNG) with that name")
                continue
            samples.append(DefectSample(image=image, mask=mask, defect=defect))
        defects[defect] = samples

    sizes: set[tuple[int, int]] = set()
    if validate:
        for path in [*train_good, *test_good]:
            size = _open_size(path, problems)
            if size is not None:
                sizes.add(size)
        for samples in defects.values():
            for sample in samples:
                size = _open_size(sample.image, problems)
                if size is not None:
                    sizes.add(size)
                _check_mask(sample.mask, size, problems)
    if problems:
        raise DatasetError(*problems)
    return CategoryData(
        root=root,
        name=category,
        train_good=train_good,
        test_good=test_good,
        defects=defects,
        image_size=next(iter(sizes)) if len(sizes) == 1 else None,
    )


def check_dataset(root: str | Path, categories: list[str] | None = None) -> list[CategoryData]:
    """Validate every (or the named) category; all problems of all categories are reported together."""
    names = categories or list_categories(root)
    found, problems = [], []
    for name in names:
        try:
            found.append(read_category(root, name))
        except DatasetError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DatasetError(*problems)
    return found


def summary_rows(categories: list[CategoryData]) -> list[dict[str, object]]:
    """One row per category for ``anobench data check``."""
    rows = []
    for cat in categories:
        size = f"{cat.image_size[0]}x{cat.image_size[1]}" if cat.image_size else "mixed"
        rows.append(
            {
                "category": cat.name,
                "train_good": len(cat.train_good),
                "test_good": len(cat.test_good),
                "defects": ", ".join(f"{d}:{len(s)}" for d, s in cat.defects.items()),
                "image_size": size,
            }
        )
    return rows

"""Importers: released generated data (other papers' layouts) mapped onto the generated-set format.

Layouts (``SRC`` holds category folders, or is one category folder when ``category`` is given):

* ``anomalydiffusion``: ``<cat>/<defect>/{image,mask}/<k>.jpg`` (256 px JPG, masks soft JPG;
  the other sub-folders ``image-mask``, ``ori``, ``recon`` are ignored).
* ``dualanodiff``: ``<cat>/<defect>/{image,fg,mask}/<i>.png`` (masks are soft U2-Net saliency maps).
* ``folder``: the generic one: ``<cat>/<defect>/image/`` and ``<cat>/<defect>/mask/`` with matching
  file stems and any image extension (png, jpg, bmp, tif, webp), plus an optional ``fg/``.

Soft masks are binarised at ``mask_threshold`` (a fraction of full scale: grey / 255 > t is
anomalous, as DualAnoDiff's and AnomalyDiffusion's loaders do with t = 0.5); pairs are renumbered
0000.. in the numeric order of their source names and each manifest line records its ``source``
file and the ``mask_threshold``. Imports are resumable.

Example:
    >>> from anobench.generation.importers import import_generated
    >>> import_generated("anomalydiffusion", "generated_dataset", "imported/ad")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from anobench.generation.base import config_hash, read_image
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import FG_DIR, IMAGE_DIR, IMAGE_SUFFIXES, MASK_DIR, GeneratedSetWriter


@dataclass(frozen=True)
class Layout:
    """How one released dataset stores its pairs."""

    name: str
    suffixes: tuple[str, ...]  # image file extensions it uses
    description: str


LAYOUTS = {
    "anomalydiffusion": Layout("anomalydiffusion", (".jpg", ".jpeg"), "<cat>/<defect>/{image,mask}/<k>.jpg"),
    "dualanodiff": Layout("dualanodiff", (".png",), "<cat>/<defect>/{image,fg,mask}/<i>.png"),
    "folder": Layout("folder", IMAGE_SUFFIXES, "<cat>/<defect>/{image,mask[,fg]}/<stem>.<any image ext>"),
}


@dataclass(frozen=True)
class SourcePair:
    """One pair found in a source folder."""

    category: str
    defect: str
    image: Path
    mask: Path
    fg: Path | None


def natural_key(path: Path) -> tuple[int, int | str, str]:
    """Numeric stems first in numeric order (``2`` before ``10``), then the others by name."""
    match = re.fullmatch(r"\D*(\d+)", path.stem)
    return (0, int(match.group(1)), path.name) if match else (1, path.stem, path.name)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        p.stem: p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")
    }


def _defect_dirs(src: Path, category: str | None) -> list[tuple[str, Path]]:
    """(category, defect folder) pairs under ``src``."""
    if not src.is_dir():
        raise GenerationInputError(f"{src}: source folder not found")
    children = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any((p / IMAGE_DIR).is_dir() for p in children):  # src is one category folder
        if category is None:
            raise GenerationInputError(
                f"{src}: holds <defect>/{IMAGE_DIR}/ folders (one category); name it with --category"
            )
        return [(category, p) for p in children]
    if category is not None:
        if not (src / category).is_dir():
            raise GenerationInputError(f"{src / category}: no such category folder in the source")
        children = [src / category]
    return [(c.name, d) for c in children for d in sorted(p for p in c.iterdir() if p.is_dir())]


def scan(layout: str, src: str | Path, category: str | None = None) -> list[SourcePair]:
    """Every pair of ``src`` in ``layout``, per defect in numeric order of the source names.

    Raises:
        GenerationInputError: unknown layout, no pairs, or images without a mask (one line each).
    """
    if layout not in LAYOUTS:
        raise GenerationInputError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    suffixes = LAYOUTS[layout].suffixes
    pairs: list[SourcePair] = []
    problems: list[str] = []
    for cat, defect_dir in _defect_dirs(Path(src), category):
        images = _files(defect_dir / IMAGE_DIR, suffixes)
        if not images:
            continue  # not a defect folder of this layout
        masks = _files(defect_dir / MASK_DIR, suffixes)
        fgs = _files(defect_dir / FG_DIR, suffixes)
        for stem, image in sorted(images.items(), key=lambda item: natural_key(item[1])):
            if stem not in masks:
                problems.append(f"{image}: no mask named {stem}.* in {defect_dir / MASK_DIR}")
                continue
            pairs.append(SourcePair(cat, defect_dir.name, image, masks[stem], fgs.get(stem)))
    if problems:
        raise GenerationInputError(*problems)
    if not pairs:
        raise GenerationInputError(
            f"{src}: no pairs found in the {layout!r} layout ({LAYOUTS[layout].description}, "
            f"extensions {', '.join(suffixes)})"
        )
    return pairs


def binarise(path: Path, threshold: float) -> np.ndarray:
    """A soft grey mask read from ``path`` as bool: grey / 255 > ``threshold``."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")).astype(np.float32) / 255 > threshold


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(read_image(path))


def _numbered(pairs: list[SourcePair]) -> Iterator[tuple[int, SourcePair]]:
    index: dict[tuple[str, str], int] = {}
    for pair in pairs:
        key = (pair.category, pair.defect)
        index[key] = index.get(key, -1) + 1
        yield index[key], pair


def import_generated(
    layout: str,
    src: str | Path,
    out: str | Path,
    *,
    mask_threshold: float = 0.5,
    category: str | None = None,
    generator: str | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], int]:
    """Import released pairs from ``src`` (in ``layout``) into a generated set at ``out``.

    Args:
        layout: ``anomalydiffusion``, ``dualanodiff`` or ``folder``.
        src: the released data (category folders, or one category folder with ``category``).
        out: the generated set to write (resumed if it exists).
        mask_threshold: soft masks are anomalous where grey / 255 > ``mask_threshold``.
        category: import only this category (or name ``src`` when it is one category folder).
        generator: name written to the manifest (default: the layout name).
        progress: show a progress bar.

    Returns:
        The number of pairs per (category, defect).

    Raises:
        GenerationInputError: bad layout, missing masks, mask and image of different sizes.
    """
    if not 0 <= mask_threshold < 1:
        raise GenerationInputError(f"--mask-threshold must be in [0, 1), got {mask_threshold}")
    pairs = scan(layout, src, category)
    src = Path(src)
    name = generator or layout
    writer = GeneratedSetWriter(
        out,
        name,
        config_hash({"importer": layout, "source": str(src.resolve()), "mask_threshold": mask_threshold}),
    )
    done = {key: writer.existing(*key) for key in {(p.category, p.defect) for p in pairs}}
    counts: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for index, pair in tqdm(
        list(_numbered(pairs)), desc=f"import {layout}", unit="pair", disable=not progress
    ):
        key = (pair.category, pair.defect)
        counts[key] = counts.get(key, 0) + 1
        if index in done[key]:
            continue
        image, mask = _rgb(pair.image), binarise(pair.mask, mask_threshold)
        fg = _rgb(pair.fg) if pair.fg is not None else None
        mismatched = [
            f"{path}: size {shape[1]}x{shape[0]} differs from its image "
            f"{image.shape[1]}x{image.shape[0]} ({pair.image}); resize it to the image first"
            for path, shape in ((pair.mask, mask.shape), (pair.fg, None if fg is None else fg.shape[:2]))
            if shape is not None and shape != image.shape[:2]
        ]
        if mismatched:
            problems += mismatched
            continue
        extra = {"source": pair.image.relative_to(src).as_posix(), "mask_threshold": mask_threshold}
        writer.write_arrays(pair.category, pair.defect, index, image, mask, fg=fg, extra=extra)
    if problems:
        raise GenerationInputError(*problems)
    return counts


__all__ = ["LAYOUTS", "Layout", "SourcePair", "binarise", "import_generated", "natural_key", "scan"]

"""The generated-set format: one writer and one reader, used by every generator and by downstream.

Layout::

    <root>/<category>/<defect>/image/0000.png   whole anomalous image (RGB)
    <root>/<category>/<defect>/mask/0000.png    binary mask (0/255)
    <root>/<category>/<defect>/fg/0000.png      anomaly part (optional, DualAnoDiff)
    <root>/manifest.jsonl                       one JSON line per pair
    <root>/splits/                              optional: the split manifests used (not a category)

Each manifest line: ``generator``, ``category``, ``defect``, ``index``, ``seed``, ``config_hash``,
``image``, ``mask`` and ``fg`` (paths relative to the root; ``fg`` may be null). Imported sets have a
null ``seed`` and add ``source`` (the original file) and ``mask_threshold`` (how soft masks were
binarised).

Masks are strictly binary (0/255) and the same size as their image; :func:`read_generated_set`
checks both (``validate=True``) and reports every problem as one line naming the file and the fix.

Example:
    >>> from anobench.generation.format import read_generated_set
    >>> pairs = read_generated_set("runs/quick/generated/real-fewshot")  # doctest: +SKIP
    >>> sorted(pairs)  # doctest: +SKIP
    [('nut', 'missing'), ('nut', 'scratch'), ('nut', 'stain')]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anobench.generation.base import GeneratedPair
from anobench.generation.errors import GenerationInputError

MANIFEST = "manifest.jsonl"
IMAGE_DIR, MASK_DIR, FG_DIR = "image", "mask", "fg"
# Folders next to the categories that are not categories (``anobench generate`` keeps the split
# manifests it used in ``splits/``).
RESERVED_DIRS = ("splits",)


def _file_name(index: int) -> str:
    return f"{index:04d}.png"


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (temporary file, then rename), so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


class GeneratedSetWriter:
    """Writes pairs into the generated-set layout and appends one manifest line per pair.

    Re-opening an existing set resumes it: :meth:`existing` tells which indices are complete.
    """

    def __init__(self, root: str | Path, generator: str, config_hash: str) -> None:
        self.root = Path(root)
        self.generator = generator
        self.config_hash = config_hash
        self.root.mkdir(parents=True, exist_ok=True)

    def existing(self, category: str, defect: str) -> set[int]:
        """Indices of ``category/defect`` already written (listed in the manifest and on disk)."""
        manifest = self.root / MANIFEST
        if not manifest.exists():
            return set()
        done = set()
        for record in _read_manifest_lines(manifest):
            same = record["category"] == category and record["defect"] == defect
            if same and (self.root / record["image"]).exists() and (self.root / record["mask"]).exists():
                done.add(int(record["index"]))
        return done

    def write(self, category: str, defect: str, index: int, pair: GeneratedPair) -> dict[str, object]:
        """Write one pair (files first, then its manifest line) and return the manifest record."""
        return self.write_arrays(category, defect, index, pair.image, pair.mask, fg=pair.fg, seed=pair.seed)

    def write_arrays(
        self,
        category: str,
        defect: str,
        index: int,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        fg: np.ndarray | None = None,
        seed: int | None = None,
        extra: dict[str, object] | None = None,
    ) -> dict[str, object]:
        """Write one pair from arrays; ``seed`` is None for imported data, ``extra`` adds manifest keys.

        Args:
            category: category folder name.
            defect: defect folder name.
            index: pair number (file ``NNNN.png``).
            image: H x W x 3 uint8.
            mask: H x W bool (binarise soft masks before, e.g. ``soft >= 0.5``).
            fg: optional H x W x 3 uint8 anomaly-part image.
            seed: the pair's seed (None when unknown).
            extra: additional JSON-serialisable manifest fields (e.g. ``source``).
        """
        if mask.dtype != bool:
            raise TypeError(f"mask must be a bool array (binarise soft masks first), got {mask.dtype}")
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
        base = self.root / category / defect
        name = _file_name(index)
        rel = {}
        outputs = [(IMAGE_DIR, image), (MASK_DIR, mask.astype(np.uint8) * 255)]
        if fg is not None:
            outputs.append((FG_DIR, fg))
        for sub, array in outputs:
            (base / sub).mkdir(parents=True, exist_ok=True)
            _save_png(np.ascontiguousarray(array), base / sub / name)
            rel[sub] = f"{category}/{defect}/{sub}/{name}"
        record = {
            "generator": self.generator,
            "category": category,
            "defect": defect,
            "index": index,
            "seed": None if seed is None else int(seed),
            "config_hash": self.config_hash,
            "image": rel[IMAGE_DIR],
            "mask": rel[MASK_DIR],
            "fg": rel.get(FG_DIR),
            **(extra or {}),
        }
        with open(self.root / MANIFEST, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record


def _read_manifest_lines(path: Path) -> list[dict[str, object]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash; the pair is simply rewritten on resume
    return records


@dataclass(frozen=True)
class GeneratedEntry:
    """One pair on disk."""

    category: str
    defect: str
    index: int
    image: Path
    mask: Path
    fg: Path | None = None
    seed: int | None = None
    generator: str | None = None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IMPORT_HINT = "convert it with `anobench import --layout folder SRC --out DIR`"


def _check_pair(image: Path, mask: Path) -> str | None:
    """The problem with one (image, mask) pair on disk, or None: sizes must match, masks be 0/255."""
    with Image.open(image) as a, Image.open(mask) as b:
        if a.size != b.size:
            return (
                f"{mask}: mask is {b.size[0]}x{b.size[1]} but the image is {a.size[0]}x{a.size[1]}; "
                "masks must match their images"
            )
        counts = np.bincount(np.asarray(b.convert("L")).ravel(), minlength=256)
    other = np.flatnonzero(counts[1:255]) + 1  # grey levels other than 0 and 255 that occur
    if other.size:
        return (
            f"{mask}: mask is not binary ({other.size} grey level(s) besides 0/255, e.g. {int(other[-1])}); "
            f"binarise it at 0.5 (values >= 128 -> 255), e.g. {IMPORT_HINT} --mask-threshold 0.5"
        )
    return None


def _read_defect(
    defect_dir: Path, meta: dict[tuple[str, str, str], dict[str, object]], validate: bool, problems: list[str]
) -> list[GeneratedEntry]:
    cat, defect = defect_dir.parent.name, defect_dir.name
    image_dir, mask_dir, fg_dir = (defect_dir / d for d in (IMAGE_DIR, MASK_DIR, FG_DIR))
    if not image_dir.is_dir() or not mask_dir.is_dir():
        problems.append(f"{defect_dir}: needs both {IMAGE_DIR}/ and {MASK_DIR}/ sub-folders")
        return []
    files = sorted(p for p in image_dir.iterdir() if not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() == ".png"]
    foreign = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.suffix.lower() != ".png"]
    if foreign:
        problems.append(f"{foreign[0]}: {len(foreign)} non-PNG image(s); the format is PNG, {IMPORT_HINT}")
    if not images:
        if not foreign:
            problems.append(f"{image_dir}: empty image folder; remove the defect folder or regenerate it")
        return []
    names = {p.name for p in images}
    orphans = sorted(p.name for p in mask_dir.glob("*.png") if p.name not in names)
    if orphans:
        problems.append(
            f"{mask_dir / orphans[0]}: {len(orphans)} mask(s) without an image of that name in {image_dir}"
        )
    entries = []
    for image in images:
        mask = mask_dir / image.name
        if not mask.exists():
            problems.append(f"{image}: no mask at {mask}; every image needs a mask of the same name")
            continue
        if validate and (problem := _check_pair(image, mask)):
            problems.append(problem)
            continue
        fg = fg_dir / image.name
        record = meta.get((cat, defect, f"{cat}/{defect}/{IMAGE_DIR}/{image.name}"), {})
        entries.append(
            GeneratedEntry(
                category=cat,
                defect=defect,
                index=int(image.stem) if image.stem.isdigit() else len(entries),
                image=image,
                mask=mask,
                fg=fg if fg.exists() else None,
                seed=record.get("seed"),  # type: ignore[arg-type]
                generator=record.get("generator"),  # type: ignore[arg-type]
            )
        )
    return entries


def read_generated_set(
    root: str | Path, category: str | None = None, *, validate: bool = True
) -> dict[tuple[str, str], list[GeneratedEntry]]:
    """List the pairs of a generated set per (category, defect), sorted by index.

    The folder layout is the source of truth (so imported or hand-made sets without a manifest
    work); the manifest, when present, adds seeds and the generator name.

    Args:
        root: the generated set's folder (holds ``<category>/`` folders and ``manifest.jsonl``).
        category: read only this category.
        validate: open every pair and check that the mask has the image's size and is binary (0/255).

    Raises:
        GenerationInputError: one line per problem: a missing folder, an image without its mask
            (or a mask without its image), non-PNG files, an empty folder and, with ``validate``,
            a mask whose size differs from its image or that is not binary.
    """
    root = Path(root)
    if not root.is_dir():
        raise GenerationInputError(f"{root}: generated set not found; generate one or import one first")
    meta: dict[tuple[str, str, str], dict[str, object]] = {}
    if (root / MANIFEST).exists():
        for record in _read_manifest_lines(root / MANIFEST):
            meta[(str(record["category"]), str(record["defect"]), str(record["image"]))] = record
    categories = (
        [category]
        if category
        else sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and p.name not in RESERVED_DIRS and not p.name.startswith(".")
        )
    )
    out: dict[tuple[str, str], list[GeneratedEntry]] = {}
    problems: list[str] = []
    for cat in categories:
        cat_dir = root / cat
        if not cat_dir.is_dir():
            raise GenerationInputError(f"{cat_dir}: no generated pairs for category {cat!r}")
        defect_dirs = sorted(p for p in cat_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not defect_dirs:
            problems.append(f"{cat_dir}: no <defect>/ folders in this category; remove or regenerate it")
        for defect_dir in defect_dirs:
            entries = _read_defect(defect_dir, meta, validate, problems)
            if entries:
                out[(cat, defect_dir.name)] = entries
    if problems:
        raise GenerationInputError(*problems)
    if not out:
        raise GenerationInputError(f"{root}: no <category>/<defect>/{{image,mask}} folders found")
    return out

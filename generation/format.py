"""The generated-set format: one writer and one reader, used by every generator and by downstream.

Layout::

    <root>/<category>/<defect>/image/0000.png   whole anomalous image (RGB)
    <root>/<category>/<defect>/mask/0000.png    binary mask (0/255)
    <root>/<category>/<defect>/fg/0000.png      anomaly part (optional, DualAnoDiff)
    <root>/manifest.jsonl                       one JSON line per pair

Each manifest line: ``generator``, ``category``, ``defect``, ``index``, ``seed``, ``config_hash``,
``image``, ``mask`` and ``fg`` (paths relative to the root; ``fg`` may be null).

Example:
    >>> from generation.format import read_generated_set
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

from generation.base import GeneratedPair
from generation.errors import GenerationInputError

MANIFEST = "manifest.jsonl"
IMAGE_DIR, MASK_DIR, FG_DIR = "image", "mask", "fg"


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
        base = self.root / category / defect
        name = _file_name(index)
        rel = {}
        outputs = [(IMAGE_DIR, pair.image), (MASK_DIR, (pair.mask.astype(np.uint8) * 255))]
        if pair.fg is not None:
            outputs.append((FG_DIR, pair.fg))
        for sub, array in outputs:
            (base / sub).mkdir(parents=True, exist_ok=True)
            _save_png(np.ascontiguousarray(array), base / sub / name)
            rel[sub] = f"{category}/{defect}/{sub}/{name}"
        record = {
            "generator": self.generator,
            "category": category,
            "defect": defect,
            "index": index,
            "seed": int(pair.seed),
            "config_hash": self.config_hash,
            "image": rel[IMAGE_DIR],
            "mask": rel[MASK_DIR],
            "fg": rel.get(FG_DIR),
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


def read_generated_set(
    root: str | Path, category: str | None = None, *, validate: bool = True
) -> dict[tuple[str, str], list[GeneratedEntry]]:
    """List the pairs of a generated set per (category, defect), sorted by index.

    The folder layout is the source of truth (so imported or hand-made sets without a manifest
    work); the manifest, when present, adds seeds and the generator name.

    Raises:
        GenerationInputError: a missing folder, an image without its mask, an empty folder or,
            with ``validate``, a mask whose size differs from its image.
    """
    root = Path(root)
    if not root.is_dir():
        raise GenerationInputError(f"{root}: generated set not found; generate one or import one first")
    meta: dict[tuple[str, str, str], dict[str, object]] = {}
    if (root / MANIFEST).exists():
        for record in _read_manifest_lines(root / MANIFEST):
            meta[(str(record["category"]), str(record["defect"]), str(record["image"]))] = record
    categories = [category] if category else sorted(p.name for p in root.iterdir() if p.is_dir())
    out: dict[tuple[str, str], list[GeneratedEntry]] = {}
    problems: list[str] = []
    for cat in categories:
        cat_dir = root / cat
        if not cat_dir.is_dir():
            raise GenerationInputError(f"{cat_dir}: no generated pairs for category {cat!r}")
        for defect_dir in sorted(p for p in cat_dir.iterdir() if p.is_dir()):
            image_dir, mask_dir, fg_dir = (defect_dir / d for d in (IMAGE_DIR, MASK_DIR, FG_DIR))
            if not image_dir.is_dir() or not mask_dir.is_dir():
                problems.append(f"{defect_dir}: needs both {IMAGE_DIR}/ and {MASK_DIR}/ sub-folders")
                continue
            images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() == ".png")
            if not images:
                problems.append(f"{image_dir}: empty image folder; remove the defect folder or regenerate it")
                continue
            entries = []
            for image in images:
                mask = mask_dir / image.name
                if not mask.exists():
                    problems.append(f"{image}: no mask at {mask}; every image needs a mask of the same name")
                    continue
                if validate:
                    with Image.open(image) as a, Image.open(mask) as b:
                        if a.size != b.size:
                            problems.append(
                                f"{mask}: mask is {b.size[0]}x{b.size[1]} but the image is "
                                f"{a.size[0]}x{a.size[1]}; masks must match their images"
                            )
                            continue
                fg = fg_dir / image.name
                record = meta.get(
                    (cat, defect_dir.name, f"{cat}/{defect_dir.name}/{IMAGE_DIR}/{image.name}"), {}
                )
                entries.append(
                    GeneratedEntry(
                        category=cat,
                        defect=defect_dir.name,
                        index=int(image.stem) if image.stem.isdigit() else len(entries),
                        image=image,
                        mask=mask,
                        fg=fg if fg.exists() else None,
                        seed=record.get("seed"),  # type: ignore[arg-type]
                        generator=record.get("generator"),  # type: ignore[arg-type]
                    )
                )
            out[(cat, defect_dir.name)] = entries
    if problems:
        raise GenerationInputError(*problems)
    if not out:
        raise GenerationInputError(f"{root}: no <category>/<defect>/{{image,mask}} folders found")
    return out

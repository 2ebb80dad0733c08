"""The generated-set format: one writer and one reader, used by every generator and by downstream.

Layout::

    <root>/<category>/<defect>/image/0000.png   whole anomalous image (RGB)
    <root>/<category>/<defect>/mask/0000.png    binary mask (0/255)
    <root>/<category>/<defect>/fg/0000.png      anomaly part (optional, DualAnoDiff)
    <root>/manifest.jsonl                       one JSON line per pair
    <root>/splits/                              optional: the split manifests used (not a category)

Each manifest line: ``generator``, ``category``, ``defect``, ``index``, ``seed``, ``config_hash``,
``image``, ``mask`` and ``fg`` (paths relative to the root; ``fg`` may be null) and ``set`` (what made
the set: generator, config hash, run seed and options, or the importer's settings; a set is resumed
only with the same ``set``). Imported sets have a
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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anobench.generation.base import GeneratedPair
from anobench.generation.errors import GenerationInputError
from anobench.generation.locking import FolderLock

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
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_name(name: str, what: str) -> str:
    """``name`` if it is a plain folder name (no path separator, not ``.``/``..``), else a one-line error."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise GenerationInputError(f"{what} {name!r}: must be a plain folder name (no '/', '\\' or '..')")
    return name


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class GeneratedSetWriter:
    """Writes pairs into the generated-set layout and appends one manifest line per pair.

    Each manifest line records under ``set`` what made the set: the generator, its resolved config
    hash and ``settings`` (e.g. the run seed and options, or the importer's layout and threshold).
    Re-opening an existing set resumes it only when these match (:meth:`existing` tells which
    indices are complete); otherwise a one-line error names the difference. The writer holds the
    set's :class:`~anobench.generation.locking.FolderLock` until :meth:`close` (or the ``with``
    block ends), and drops a manifest line cut by a crash when it opens the set.
    """

    def __init__(
        self, root: str | Path, generator: str, config_hash: str, settings: dict[str, object] | None = None
    ) -> None:
        self.root = Path(root)
        self.generator = generator
        self.config_hash = config_hash
        self.settings = json.loads(
            json.dumps({"generator": generator, "config_hash": config_hash, **(settings or {})}, default=str)
        )
        self._lock = FolderLock(self.root).acquire()
        try:
            self._repair_manifest()
            self._check_settings()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the set's lock."""
        self._lock.release()

    def __enter__(self) -> GeneratedSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair_manifest(self) -> None:
        """Cut an incomplete last line (a crash mid-write) so the next record starts on its own line."""
        manifest = self.root / MANIFEST
        if not manifest.exists() or manifest.stat().st_size == 0:
            return
        data = manifest.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        os.truncate(manifest, keep)
        warnings.warn(
            f"{manifest}: dropped an incomplete last line ({len(data) - keep} bytes, a write cut by a "
            "crash); its pair is written again",
            stacklevel=3,
        )

    def _check_settings(self) -> None:
        """Refuse to resume a set made by another generator, config, seed, options or importer setting."""
        manifest = self.root / MANIFEST
        if not manifest.exists():
            return
        records = _read_manifest_lines(manifest)
        if not records:
            return
        recorded = records[0].get("set")
        if not isinstance(recorded, dict):  # written before sets recorded their settings
            recorded = {k: records[0].get(k) for k in ("generator", "config_hash")}
        differences = [
            f"{key} {_show(self.settings.get(key))} != {_show(recorded.get(key))}"
            for key in dict.fromkeys([*recorded, *self.settings])
            if self.settings.get(key) != recorded.get(key)
        ]
        if differences:
            raise GenerationInputError(
                f"{'; '.join(differences)} recorded in {manifest}; use another --out or delete it"
            )

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
        base = self.root / check_name(category, "category") / check_name(defect, "defect")
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
            "set": self.settings,
        }
        # One write of the whole line on an O_APPEND file, then fsync: no reader sees half a record.
        fd = os.open(self.root / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
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

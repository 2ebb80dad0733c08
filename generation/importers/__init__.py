"""Importers: released generated data (other papers' layouts) mapped onto the generated-set format.

``SRC`` holds category folders, or is one category folder when ``category`` is given. Each layout
below was checked against the peer's released code (the file is named); quirks are handled here:

* ``anomalydiffusion``: ``<cat>/<defect>/{image,mask}/<k>.jpg`` (256 px JPG, soft JPG masks; the
  other sub-folders ``image-mask``, ``ori``, ``recon`` are ignored).
* ``dualanodiff``: ``<cat>/<defect>/{image,fg,mask}/<i>.png`` (masks are soft U2-Net saliency maps).
* ``seas``: ``<cat>/<defect>/{image,mask}/<NNN>.png``; verified against ``Dan5N/SeaS``
  ``models/seas_infer.py`` (``{output_dir}/image/{num:03}.png`` and ``mask/{num:03}.png``, with
  ``output_dir = outputs/images/<product>/<defect>`` in ``scripts/infer_shs/*``). Masks are already
  0/255 (``_SeaSpipeline.py`` thresholds the RMP output before saving). The README calls the
  folder ``images/``, so that name is accepted too.
* ``o2mag``: ``<cat>/<defect>/image/<i:03d>_<k:03d>_triag.png`` with ``<cat>/<defect>/mask/<i>.jpg``;
  verified against ``echrao/O2MAG`` ``eval/unet_utils/data_loader.py`` (it reads exactly these
  names) and ``Rao-student/O2MAG`` ``edit_anomaly_moregpu_fewshot.py`` (the writer: ``i`` is the
  normal image and its AnomalyDiffusion mask, ``k`` the MVTec reference image). One mask serves
  every image with its ``i`` (the peer's loader keeps only the first; all are imported here). The
  masks are AnomalyDiffusion's soft 256 px JPGs while the images are 512 px, so masks are resized
  to their image (bilinear, then thresholded, as the peer's ``Resize`` + ``mask > 0.5`` does).
* ``anogen``: ``<cat>/images/<img>-<mask>-<sample>-<defect>.png`` with ``<cat>/masks/<mask>-<defect>.png``;
  verified against ``gaobb/AnoGen`` ``DIFFUSION/utils_scripts/makeDataset.py`` (the writer) and
  ``DRAEM/data_loader.py`` (the reader). The defect comes from the file name; the first three
  fields never hold a dash, so defect names may. Several images share one mask. The ``.png``
  images are JPEG data (``makeDataset`` copies ``samples/0000.jpg`` under a ``.png`` name), read by
  content. Masks are 0/255 rectangles (``creatMask_v*.py``, ``cv2.imwrite``). Per-image masks
  ``masks/<img>-<mask>.png`` (how ``DRAEM/data_loader.py`` reads ``screw``) are accepted when no
  ``<mask>-<defect>.png`` exists; ``makeDataset.py`` writes screw's masks into ``images/``: move
  them to ``masks/`` first (the importer names such a file as not matching the image pattern).
* ``magic``: ``<cat>/<defect>/{image,masks}/<idx>.jpg``; verified against
  ``yukichou/diffusion_anomaly`` ``inference.py`` (``{output_name}/<run>/<cat>/<defect>/image/{idx}.jpg``
  and ``masks/{idx}.jpg``; point SRC at the ``<run>`` folder; ``normal/`` and ``debug_mask/`` are
  ignored). Masks are 0/255 saved as JPEG, so they carry JPEG artefacts; the threshold 0.5 (grey
  > 127) is the peer's ``evaluation/data_loader.py`` (``mask > 0.5``), which reads ``mask/``, so
  that name is accepted too. The inpainting output need not have the normal image's size, so
  masks are resized to their image.
* ``folder``: the generic one: ``<cat>/<defect>/<images>/`` and ``<cat>/<defect>/<masks>/`` (image
  folder ``image``, ``images``, ``img`` or ``imgs``; mask folder ``mask``, ``masks``,
  ``ground_truth``, ``gt``, ``label`` or ``labels``; optional ``fg/``), any image extension.
  Images and masks are paired by :class:`NamePattern` fields (default ``{stem}.*`` for both, i.e.
  the same file stem); a ``{defect}`` field in the image pattern takes the defect from the file
  name, with ``<cat>/<images>/`` and ``<cat>/<masks>/`` directly under the category.

Soft masks are binarised at ``mask_threshold`` (a fraction of full scale: grey / 255 > t is
anomalous; 0.5 is what every peer's loader above does). Pairs are renumbered 0000.. in the
numeric order of their source names; each manifest line records ``layout``, the ``source`` image,
the ``source_mask``, the ``mask_threshold`` and, when a mask was resized, ``mask_resized_from``.
Imports are resumable with the same settings (layout, source, threshold, patterns); other settings
into an existing set are refused.

Example:
    >>> from anobench.generation.importers import import_generated
    >>> import_generated("anomalydiffusion", "generated_dataset", "imported/ad")  # doctest: +SKIP
    >>> import_generated("folder", "mine", "imported/mine", category="bottle",
    ...                  image_pattern="{stem}.png", mask_pattern="{stem}_mask.png")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from anobench.generation.base import config_hash, read_image
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import FG_DIR, IMAGE_SUFFIXES, GeneratedSetWriter, check_name

JPG = (".jpg", ".jpeg")
IMAGE_ALIASES = ("image", "images", "img", "imgs")
MASK_ALIASES = ("mask", "masks", "ground_truth", "gt", "label", "labels")
STEM = "{stem}.*"


@dataclass(frozen=True)
class NamePattern:
    """A file-name template: ``{field}`` matches a non-empty run, ``*`` any run, the rest literally.

    A trailing ``.*`` matches the extension (no dot inside), so ``{stem}.*`` gives ``Path.stem``.
    Fields take the shortest match from the left, so in ``{img}-{mask}-{defect}.png`` only the last
    field may hold dashes. ``re:`` starts a Python regular expression with named groups instead.
    Numeric field values compare as numbers (``000`` equals ``0``).

    Example:
        >>> NamePattern.parse("{i}_*_triag.png").match("007_003_triag.png")
        {'i': 7}
    """

    template: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, template: str) -> NamePattern:
        """Compile ``template``; raises :class:`GenerationInputError` when it is invalid or has no field."""
        if template.startswith("re:"):
            source = template[3:]
        else:
            body, ext = (template[:-2], r"\.[^.]+") if template.endswith(".*") else (template, "")
            source = (
                "".join(
                    f"(?P<{p[1:-1]}>.+?)" if p.startswith("{") else ".*?" if p == "*" else re.escape(p)
                    for p in re.split(r"(\{\w+\}|\*)", body)
                )
                + ext
            )
        try:
            regex = re.compile(source)
        except re.error as exc:  # e.g. a field named twice
            raise GenerationInputError(f"pattern {template!r}: {exc}") from None
        if not regex.groupindex:
            raise GenerationInputError(
                f"pattern {template!r} names no field; use e.g. '{{stem}}.png' or 're:(?P<stem>\\d+)\\.png'"
            )
        return cls(template, regex)

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(self.regex.groupindex)

    def match(self, name: str) -> dict[str, int | str] | None:
        """The fields of ``name`` (numbers as int), or None when it does not match."""
        found = self.regex.fullmatch(name)
        if found is None:
            return None
        return {k: int(v) if v.isdigit() else v for k, v in found.groupdict().items()}


@dataclass(frozen=True)
class Layout:
    """How one released dataset stores its pairs."""

    name: str
    description: str
    suffixes: tuple[str, ...]  # image file extensions it uses
    image_dirs: tuple[str, ...] = ("image",)
    mask_dirs: tuple[str, ...] = ("mask",)
    image_pattern: str = STEM
    mask_patterns: tuple[str, ...] = (STEM,)  # tried in order for each image
    mask_suffixes: tuple[str, ...] = ()  # default: ``suffixes``
    resize_masks: bool = False  # masks of another size are resized to their image

    @property
    def per_category(self) -> bool:
        """The defect is a field of the image name and the folders sit under the category."""
        return "defect" in NamePattern.parse(self.image_pattern).fields


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("anomalydiffusion", "<cat>/<defect>/{image,mask}/<k>.jpg", JPG),
        Layout("dualanodiff", "<cat>/<defect>/{image,fg,mask}/<i>.png", (".png",)),
        Layout("seas", "<cat>/<defect>/{image,mask}/<NNN>.png", (".png",), image_dirs=("image", "images")),
        Layout(
            "o2mag",
            "<cat>/<defect>/image/<i:03d>_<k:03d>_triag.png + mask/<i>.jpg",
            (".png",),
            image_pattern="{i}_{k}_triag.png",
            mask_patterns=("{i}.*",),
            mask_suffixes=(*JPG, ".png"),
            resize_masks=True,
        ),
        Layout(
            "anogen",
            "<cat>/images/<img>-<mask>-<sample>-<defect>.png + <cat>/masks/<mask>-<defect>.png",
            (".png",),
            image_dirs=("images",),
            mask_dirs=("masks",),
            image_pattern="{img}-{mask}-{sample}-{defect}.*",
            mask_patterns=("{mask}-{defect}.*", "{img}-{mask}.*"),
        ),
        Layout(
            "magic",
            "<cat>/<defect>/{image,masks}/<idx>.jpg",
            JPG,
            mask_dirs=("masks", "mask"),
            resize_masks=True,
        ),
        Layout(
            "folder",
            "<cat>/<defect>/{image,mask[,fg]}/<stem>.<ext> (folder aliases; --image-pattern, --mask-pattern)",
            IMAGE_SUFFIXES,
            image_dirs=IMAGE_ALIASES,
            mask_dirs=MASK_ALIASES,
        ),
    )
}


def resolve_layout(name: str, image_pattern: str | None = None, mask_pattern: str | None = None) -> Layout:
    """The layout called ``name``; for ``folder``, with the given name patterns (checked).

    Raises:
        GenerationInputError: an unknown layout, patterns given for another layout, a pattern
            without fields, or mask fields the image pattern lacks.
    """
    if name not in LAYOUTS:
        raise GenerationInputError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    if name != "folder":
        if image_pattern or mask_pattern:
            raise GenerationInputError(
                f"--image-pattern/--mask-pattern apply to --layout folder, not {name!r}"
            )
        return LAYOUTS[name]
    layout = replace(
        LAYOUTS[name], image_pattern=image_pattern or STEM, mask_patterns=(mask_pattern or STEM,)
    )
    image_fields = NamePattern.parse(layout.image_pattern).fields
    missing = [f for f in NamePattern.parse(layout.mask_patterns[0]).fields if f not in image_fields]
    if missing:
        raise GenerationInputError(
            f"--mask-pattern {layout.mask_patterns[0]!r} uses {{{missing[0]}}}, which "
            f"--image-pattern {layout.image_pattern!r} lacks; pair them by shared fields"
        )
    return layout


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


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")),
        key=natural_key,
    )


def _subdir(parent: Path, aliases: tuple[str, ...], problems: list[str]) -> Path | None:
    """The one folder of ``parent`` named by ``aliases`` (None when absent; ambiguous is a problem)."""
    found = [parent / a for a in aliases if (parent / a).is_dir()]
    if len(found) > 1:
        problems.append(f"{parent}: holds both {found[0].name}/ and {found[1].name}/; keep only one")
    return found[0] if found else None


def _has_images(folder: Path, layout: Layout) -> bool:
    return any((folder / a).is_dir() for a in layout.image_dirs)


def _units(src: Path, category: str | None, layout: Layout) -> list[tuple[str, str | None, Path]]:
    """(category, defect or None when it is in the file names, folder holding image/mask dirs)."""
    if not src.is_dir():
        raise GenerationInputError(f"{src}: source folder not found")

    def children(p: Path) -> list[Path]:
        return sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))

    one_category = (
        _has_images(src, layout)
        if layout.per_category
        else any(_has_images(c, layout) for c in children(src))
    )
    if one_category:
        if category is None:
            raise GenerationInputError(
                f"{src}: holds the image folders of one category; name it with --category"
            )
        cats = [(category, src)]
    elif category is not None:
        if not (src / category).is_dir():
            raise GenerationInputError(f"{src / category}: no such category folder in the source")
        cats = [(category, src / category)]
    else:
        cats = [(c.name, c) for c in children(src)]
    if layout.per_category:
        return [(cat, None, folder) for cat, folder in cats]
    return [(cat, d.name, d) for cat, folder in cats for d in children(folder)]


def _describe(pattern: NamePattern, fields: dict[str, int | str]) -> str:
    """The mask name ``pattern`` expects for an image with ``fields``, e.g. ``7.*``."""
    if pattern.template.startswith("re:"):
        return f"{pattern.template} with " + ", ".join(f"{f}={fields[f]}" for f in pattern.fields)
    return re.sub(r"\{(\w+)\}", lambda m: str(fields[m.group(1)]), pattern.template)


def _scan_unit(
    layout: Layout, cat: str, defect: str | None, folder: Path, problems: list[str]
) -> list[SourcePair]:
    image_dir = _subdir(folder, layout.image_dirs, problems)
    if image_dir is None:
        return []
    images = _files(image_dir, layout.suffixes)
    if not images:
        return []  # not a defect folder of this layout
    image_pattern = NamePattern.parse(layout.image_pattern)
    named = [(p, image_pattern.match(p.name)) for p in images]
    strays = [p for p, fields in named if fields is None]
    if strays:
        hint = "wrong --layout?" if len(strays) == len(images) else f"{len(strays)} such file(s)"
        problems.append(
            f"{strays[0]}: name does not match the {layout.name} image pattern "
            f"{layout.image_pattern!r} ({hint})"
        )
        return []
    mask_dir = _subdir(folder, layout.mask_dirs, problems)
    if mask_dir is None:
        problems.append(
            f"{image_dir}: no mask folder next to it (expected {'/ or '.join(layout.mask_dirs)}/)"
        )
        return []
    mask_patterns = [NamePattern.parse(t) for t in layout.mask_patterns]
    masks: list[dict[tuple[int | str, ...], Path]] = [{} for _ in mask_patterns]
    for path in _files(mask_dir, layout.mask_suffixes or layout.suffixes):
        for index, pattern in zip(masks, mask_patterns, strict=True):
            if (fields := pattern.match(path.name)) is not None:
                key = tuple(fields.values())
                if key in index:
                    problems.append(f"{path}: a second mask for {index[key].name}; keep only one")
                index.setdefault(key, path)
    fg_dir = folder / FG_DIR
    fgs = {p.stem: p for p in _files(fg_dir, layout.suffixes)} if fg_dir.is_dir() else {}
    pairs, orphans = [], []
    for image, fields in named:
        assert fields is not None
        mask = next(
            (
                index[key]
                for index, pattern in zip(masks, mask_patterns, strict=True)
                if (key := tuple(fields[f] for f in pattern.fields)) in index
            ),
            None,
        )
        if mask is None:
            orphans.append((image, fields))
            continue
        image_defect = defect if defect is not None else str(fields["defect"])
        pairs.append(SourcePair(cat, image_defect, image, mask, fgs.get(image.stem)))
    if orphans:
        image, fields = orphans[0]
        expected = " or ".join(_describe(p, fields) for p in mask_patterns)
        more = f" ({len(orphans) - 1} more image(s) here lack a mask)" if len(orphans) > 1 else ""
        problems.append(f"{image}: no mask {expected} in {mask_dir}{more}")
    return pairs


def scan(layout: str | Layout, src: str | Path, category: str | None = None) -> list[SourcePair]:
    """Every pair of ``src`` in ``layout``, per defect in numeric order of the source names.

    Raises:
        GenerationInputError: unknown layout, no pairs, names the layout does not expect, or
            images without a mask (one line each, naming the file).
    """
    if isinstance(layout, str):
        layout = resolve_layout(layout)
    pairs: list[SourcePair] = []
    problems: list[str] = []
    for cat, defect, folder in _units(Path(src), category, layout):
        pairs += _scan_unit(layout, cat, defect, folder, problems)
    if problems:
        raise GenerationInputError(*problems)
    if not pairs:
        raise GenerationInputError(
            f"{src}: no pairs found in the {layout.name!r} layout ({layout.description}, "
            f"extensions {', '.join(layout.suffixes)})"
        )
    return pairs


def binarise(path: Path, threshold: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """A soft grey mask read from ``path`` as bool: grey / 255 > ``threshold``.

    With ``size`` (width, height) the grey mask is first resized bilinearly to it.
    """
    with Image.open(path) as im:
        grey = im.convert("L")
        if size is not None and grey.size != size:
            grey = grey.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(grey).astype(np.float32) / 255 > threshold


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(read_image(path))


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


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
    image_pattern: str | None = None,
    mask_pattern: str | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], int]:
    """Import released pairs from ``src`` (in ``layout``) into a generated set at ``out``.

    Args:
        layout: one of :data:`LAYOUTS` (``seas``, ``o2mag``, ``anogen``, ``magic``, ..., ``folder``).
        src: the released data (category folders, or one category folder with ``category``).
        out: the generated set to write (resumed if it exists).
        mask_threshold: soft masks are anomalous where grey / 255 > ``mask_threshold``.
        category: import only this category (or name ``src`` when it is one category folder).
        generator: name written to the manifest (default: the layout name).
        image_pattern: ``folder`` only: the image file names, a :class:`NamePattern` template.
        mask_pattern: ``folder`` only: the mask file names, using fields of ``image_pattern``.
        progress: show a progress bar.

    Returns:
        The number of pairs per (category, defect).

    Raises:
        GenerationInputError: bad layout or pattern, missing masks, mask and image of different
            sizes (for layouts that do not resize masks).
    """
    if not 0 <= mask_threshold < 1:
        raise GenerationInputError(f"--mask-threshold must be in [0, 1), got {mask_threshold}")
    if category is not None:
        check_name(category, "--category")
    spec = resolve_layout(layout, image_pattern, mask_pattern)
    pairs = scan(spec, src, category)
    src = Path(src)
    settings = {"importer": layout, "source": str(src.resolve()), "mask_threshold": mask_threshold}
    if layout == "folder":
        settings |= {"image_pattern": spec.image_pattern, "mask_pattern": spec.mask_patterns[0]}
    with GeneratedSetWriter(out, generator or layout, config_hash(settings), settings) as writer:
        return _write_pairs(writer, spec, src, pairs, mask_threshold, progress)


def _write_pairs(
    writer: GeneratedSetWriter,
    spec: Layout,
    src: Path,
    pairs: list[SourcePair],
    mask_threshold: float,
    progress: bool,
) -> dict[tuple[str, str], int]:
    layout = spec.name
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
        image = _rgb(pair.image)
        size = (image.shape[1], image.shape[0])
        extra: dict[str, object] = {
            "layout": layout,
            "source": pair.image.relative_to(src).as_posix(),
            "source_mask": pair.mask.relative_to(src).as_posix(),
            "mask_threshold": mask_threshold,
        }
        mask_size = _size(pair.mask)
        if spec.resize_masks and mask_size != size:
            extra["mask_resized_from"] = f"{mask_size[0]}x{mask_size[1]}"
        mask = binarise(pair.mask, mask_threshold, size if spec.resize_masks else None)
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
        writer.write_arrays(pair.category, pair.defect, index, image, mask, fg=fg, extra=extra)
    if problems:
        raise GenerationInputError(*problems)
    return counts


__all__ = [
    "IMAGE_ALIASES",
    "LAYOUTS",
    "MASK_ALIASES",
    "Layout",
    "NamePattern",
    "SourcePair",
    "binarise",
    "import_generated",
    "natural_key",
    "resolve_layout",
    "scan",
]

"""Few-shot split presets and the JSON split manifest.

For each defect type with N real anomalies (sorted by file index):

* ``strict``: the first floor(N/3) train the generator; the rest, plus all ``test/good``, are the
  test set. No image is in both (checked; an overlap is an error).
* ``dualanodiff-official``: the released DualAnoDiff training code's rounding, n = N//3, plus one
  if n % 3 != 0; the evaluation still starts at index N//3, so one image can be in both sets.
  The overlap is listed in the manifest and reported.
* ``dualanodiff-bcm-official``: the released BCM training script's rounding, n = ceil(N/3), with
  the same evaluation start (overlap reported). The release takes the first n of an unsorted
  ``os.listdir``; we take the first n by file index, so the files can differ from the release's.

A defect type needs at least :data:`MIN_TYPE_IMAGES` (3) images, so that floor(N/3) >= 1 image
trains the generator. Layouts whose types are free-text labels (VisA) fold the rarer ones into one
type with :func:`fold_rare_types`; each folded image's manifest entry keeps its own type
(``folded_from``) and the manifest lists the folds (``folded``, type -> the type it joined).

Example:
    >>> from anobench.benchmarks.data.splits import fewshot_count
    >>> [fewshot_count(n, p) for p in SPLIT_PRESETS for n in (18, 22)]
    [6, 7, 6, 8, 6, 8]
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anobench.benchmarks.data.layout import sort_key
from anobench.benchmarks.data.mvtec import CategoryData, DefectSample
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.io import safe_name, write_json

SPLIT_PRESETS = ("strict", "dualanodiff-official", "dualanodiff-bcm-official")
MIN_TYPE_IMAGES = 3  # the fewest images of a defect type that give floor(N/3) >= 1 few-shot image


def manifest_name(category: str, preset: str) -> str:
    """File name of a category's split manifest: ``<category>.<preset>.json`` (category via ``safe_name``)."""
    return f"{safe_name(category)}.{preset}.json"


def fewshot_count(n_total: int, preset: str) -> int:
    """How many of ``n_total`` anomalies train the generator under ``preset``."""
    n = n_total // 3
    if preset == "strict":
        return n
    if preset == "dualanodiff-official":
        return n + 1 if n % 3 != 0 else n
    if preset == "dualanodiff-bcm-official":
        return -(-n_total // 3)
    raise UserError(f"unknown split preset {preset!r}; choose one of: {', '.join(SPLIT_PRESETS)}")


def first_test_index(n_total: int) -> int:
    """Index of the first test anomaly (every preset: floor(N/3), as the reference evaluation)."""
    return n_total // 3


@dataclass
class DefectSplit:
    """The split of one defect type; paths are relative to the dataset root."""

    n_total: int
    fewshot: list[dict[str, str]]
    test: list[dict[str, str]]
    overlap: list[str] = field(default_factory=list)


@dataclass
class SplitManifest:
    """Which files play which role for one category under one preset."""

    preset: str
    dataset: str
    category: str
    train_good: list[str]
    test_good: list[str]
    defects: dict[str, DefectSplit]
    format: str = "mvtec"  # the dataset format the category was read in

    @property
    def overlap_count(self) -> int:
        """Number of anomalies that are both few-shot (generator training) and test images."""
        return sum(len(d.overlap) for d in self.defects.values())

    @property
    def folded(self) -> dict[str, str]:
        """Rare defect types folded into another type: ``{type: the type it joined}`` (sorted)."""
        folds = {
            entry["folded_from"]: name
            for name, split in self.defects.items()
            for entry in [*split.fewshot, *split.test]
            if "folded_from" in entry
        }
        return dict(sorted(folds.items()))

    def write(self, path: str | Path) -> Path:
        """Write the manifest as JSON, atomically (with the overlap count and the folds, for readers)."""
        return write_json(path, {**asdict(self), "overlap_count": self.overlap_count, "folded": self.folded})

    @classmethod
    def read(cls, path: str | Path) -> SplitManifest:
        """Load a manifest written by :meth:`write`."""
        payload = json.loads(Path(path).read_text())
        payload.pop("overlap_count", None)
        payload.pop("folded", None)
        payload["defects"] = {k: DefectSplit(**v) for k, v in payload["defects"].items()}
        return cls(**payload)

    def absolute(self, relative: str) -> Path:
        """Absolute path of a manifest entry."""
        return Path(self.dataset) / relative

    def fewshot_samples(self) -> dict[str, list[tuple[Path, Path]]]:
        """Few-shot (image, mask) paths per defect type."""
        return {
            d: [(self.absolute(s["image"]), self.absolute(s["mask"])) for s in split.fewshot]
            for d, split in self.defects.items()
        }

    def test_samples(self) -> dict[str, list[tuple[Path, Path]]]:
        """Held-out test (image, mask) paths per defect type."""
        return {
            d: [(self.absolute(s["image"]), self.absolute(s["mask"])) for s in split.test]
            for d, split in self.defects.items()
        }


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, both made absolute without resolving symlinks.

    A symlinked category or ``train/good`` folder stays under the dataset folder this way; its
    target may lie anywhere.
    """
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()


def _entry(sample: DefectSample, group: str, root: Path) -> dict[str, str]:
    """A manifest entry; ``folded_from`` names the image's own type when it was folded into ``group``."""
    entry = {"image": _rel(sample.image, root), "mask": _rel(sample.mask, root)}
    if sample.defect != group:
        entry["folded_from"] = sample.defect
    return entry


def fold_rare_types(
    defects: dict[str, list[DefectSample]], into: str = "combined"
) -> tuple[dict[str, list[DefectSample]], dict[str, int]]:
    """Move the images of every type with fewer than :data:`MIN_TYPE_IMAGES` into the type ``into``.

    The folded samples keep their own ``defect``; the merged type is sorted by file index (then path). Returns
    the new grouping (sorted by type) and ``{folded type: its image count}``. ``into`` itself is
    never folded; it can still have too few images (the caller reports that).

    Example:
        >>> from pathlib import Path
        >>> s = lambda d, i: DefectSample(Path(f"{i:03d}.JPG"), Path(f"{i:03d}.png"), d)
        >>> defects = {"burnt": [s("burnt", 0)], "scratch": [s("scratch", i) for i in (1, 2, 3)],
        ...            "combined": [s("combined", 4), s("combined", 5)]}
        >>> groups, folded = fold_rare_types(defects)
        >>> {d: [x.image.stem for x in xs] for d, xs in groups.items()}, folded
        ({'combined': ['000', '004', '005'], 'scratch': ['001', '002', '003']}, {'burnt': 1})
    """
    rare = {d: len(s) for d, s in defects.items() if d != into and len(s) < MIN_TYPE_IMAGES}
    if not rare:
        return defects, {}
    groups = {d: s for d, s in defects.items() if d not in rare}
    merged = [*groups.get(into, []), *(x for d in rare for x in defects[d])]
    groups[into] = sorted(merged, key=lambda x: (sort_key(x.image), x.image.as_posix()))
    return dict(sorted(groups.items())), dict(sorted(rare.items()))


def make_split(category: CategoryData, preset: str = "strict") -> SplitManifest:
    """Split one category; raises :class:`UserError` if ``strict`` would overlap."""
    root = Path(os.path.abspath(category.root))
    defects = {}
    for name, samples in category.defects.items():
        n_train, start = fewshot_count(len(samples), preset), first_test_index(len(samples))
        fewshot, test = samples[:n_train], samples[start:]
        if not fewshot:
            images = ", ".join(s.image.name for s in samples)
            raise UserError(
                f"{samples[0].image.parent}: type {name!r} of {category.name} has {len(samples)} "
                f"anomalies ({images}), which give no few-shot image under split {preset!r}; a defect "
                f"type needs at least {MIN_TYPE_IMAGES} images (split 'dualanodiff-bcm-official' takes "
                "ceil(N/3), one for N = 1 or 2)"
            )
        overlap = sorted({_rel(s.image, root) for s in fewshot} & {_rel(s.image, root) for s in test})
        defects[name] = DefectSplit(
            n_total=len(samples),
            fewshot=[_entry(s, name, root) for s in fewshot],
            test=[_entry(s, name, root) for s in test],
            overlap=overlap,
        )
    manifest = SplitManifest(
        preset=preset,
        dataset=str(root),
        category=category.name,
        train_good=[_rel(p, root) for p in category.train_good],
        test_good=[_rel(p, root) for p in category.test_good],
        defects=defects,
        format=category.format,
    )
    check_overlap(manifest)
    return manifest


def check_overlap(manifest: SplitManifest) -> None:
    """Fail loudly when a preset that promises disjoint sets (``strict``) has an overlap."""
    if manifest.preset == "strict" and manifest.overlap_count:
        files = [f for d in manifest.defects.values() for f in d.overlap]
        raise UserError(
            f"split 'strict' of {manifest.category}: {len(files)} image(s) both train the generator "
            f"and are tested: {', '.join(files)}"
        )

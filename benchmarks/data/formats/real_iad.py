"""Real-IAD: ``realiad_<res>/<cat>/{OK,NG/<code>}/S..../*.jpg`` with JSON split files.

The split file ``realiad_jsons*/<cat>.json`` (or ``realiad_jsons/realiad_jsons*/<cat>.json``, as
anomalib's ``RealIAD`` expects) holds ``{"train": [...], "test": [...]}``, each entry
``{"anomaly_class": "OK" | code, "image_path": ..., "mask_path": ... | null}`` with paths relative
to ``realiad_<res>/<cat>``. OK entries are normal (train or test), the others real anomalies; the
defect codes are mapped to names (AK pit, BX deformation, ...). ``data.resolution`` (``--resolution``)
picks the image folder; without it, the only one, else the largest.
"""

from __future__ import annotations

import json
from pathlib import Path

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import (
    JPG_SUFFIXES,
    PNG_SUFFIXES,
    CategoryData,
    DatasetAdapter,
    DefectSample,
    subdirs,
)
from anobench.benchmarks.data.mvtec import save_image, save_mask
from anobench.benchmarks.errors import DatasetError

RESOLUTIONS = ("256", "512", "1024", "raw")
DEFECT_CODES = {
    "AK": "pit",
    "BX": "deformation",
    "CH": "abrasion",
    "HS": "scratch",
    "PS": "damage",
    "QS": "missing_parts",
    "YW": "foreign_objects",
    "ZW": "contamination",
}
# Writing: names -> codes (the embedded dataset's hole/stain/missing as pit/contamination/missing parts).
_CODE_OF = {name: code for code, name in DEFECT_CODES.items()}
_CODE_OF |= {"hole": "AK", "stain": "ZW", "missing": "QS"}


@register_dataset("real-iad", priority=10)
class RealIAD(DatasetAdapter):
    """Real-IAD with its JSON split files."""

    description = "Real-IAD: realiad_<res>/<cat>/{OK,NG/<code>} + realiad_jsons*/<cat>.json"
    image_suffixes = JPG_SUFFIXES + PNG_SUFFIXES
    binary_masks = False
    hint = "Real-IAD needs realiad_<res>/<cat>/{OK,NG} and a split file realiad_jsons*/<cat>.json"

    def detect(self, root: Path) -> bool:
        """A ``realiad_<res>`` folder beside a ``realiad_jsons*`` folder."""
        names = subdirs(root)
        return any(n.startswith("realiad_jsons") for n in names) and bool(self._resolutions(root))

    @staticmethod
    def _resolutions(root: Path) -> list[str]:
        return [r for r in RESOLUTIONS if (root / f"realiad_{r}").is_dir()]

    def image_root(self, root: Path) -> Path:
        """``realiad_<res>``: the configured resolution, the only one, or the largest numeric one."""
        found = self._resolutions(root)
        if self.resolution is not None:
            if self.resolution not in found:
                raise DatasetError(
                    f"{root / f'realiad_{self.resolution}'}: resolution folder not found; "
                    f"available: {', '.join(found) or 'none'} (data.resolution / --resolution)"
                )
            return root / f"realiad_{self.resolution}"
        numeric = [r for r in found if r.isdigit()]
        if not found:
            raise DatasetError(f"{root}: no realiad_<res> folder; {self.hint}")
        return root / f"realiad_{max(numeric, key=int) if numeric else found[0]}"

    def json_path(self, root: Path, category: str) -> Path:
        """The split file of ``category`` (``realiad_jsons`` before the single-view/FUIAD variants)."""
        candidates = sorted(root.glob(f"realiad_jsons*/{category}.json")) + sorted(
            root.glob(f"realiad_jsons*/realiad_jsons*/{category}.json")
        )
        if not candidates:
            raise DatasetError(f"{root}/realiad_jsons/{category}.json: split file not found; {self.hint}")
        return min(candidates, key=lambda p: (len(p.parent.name), len(p.parts)))

    def list_categories(self, root: Path) -> list[str]:
        """Category folders of the chosen resolution."""
        return self.category_folders(self.image_root(root), lambda p: (p / "OK").is_dir())

    def read_category(self, root: Path, category: str, *, validate: bool = True) -> CategoryData:
        """Read one category from its JSON split file."""
        base = self.image_root(root) / category
        if not base.is_dir():
            raise DatasetError(
                f"{base}: category folder not found; available: {', '.join(self.list_categories(root))}"
            )
        path = self.json_path(root, category)
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); restore the file"
            ) from None
        if not isinstance(meta, dict) or not ({"train", "test"} & set(meta)):
            raise DatasetError(f"{path}: expected an object with 'train' and 'test' lists")
        problems: list[str] = []
        train_good, test_good = [], []
        defects: dict[str, list[DefectSample]] = {}
        for split in ("train", "test"):
            for entry in meta.get(split, []):
                image = base / entry["image_path"]
                if not image.is_file():
                    problems.append(f"{image}: listed in {path} but missing; restore the file")
                    continue
                code = entry["anomaly_class"]
                if code == "OK":
                    (train_good if split == "train" else test_good).append(image)
                    continue
                mask = base / entry["mask_path"] if entry.get("mask_path") else None
                if mask is None or not mask.is_file():
                    problems.append(f"{image}: no mask at {mask}; add the mask (PNG, anomalous where > 0)")
                    continue
                defect = DEFECT_CODES.get(code, code)
                defects.setdefault(defect, []).append(DefectSample(image=image, mask=mask, defect=defect))
        return self.finish(
            root, category, train_good, test_good, dict(sorted(defects.items())), problems,
            validate=validate, base=base,
        )  # fmt: skip

    def write(self, categories: list[CategoryData], out: Path) -> None:
        """JPG images in ``realiad_<res>`` (256 unless set), split files in anomalib's default place."""
        res = self.resolution or "256"
        for cat in categories:
            base = out / f"realiad_{res}" / cat.name
            entries: dict[str, list[dict[str, str | None]]] = {"train": [], "test": []}
            normals = [("train", p) for p in cat.train_good] + [("test", p) for p in cat.test_good]
            for i, (split, path) in enumerate(normals):
                rel = f"OK/S{i:04d}/{cat.name}_{i:04d}_OK_C1_20240101000000.jpg"
                save_image(path, base / rel)
                entries[split].append(
                    {"category": cat.name, "anomaly_class": "OK", "image_path": rel, "mask_path": None}
                )
            for defect, samples in cat.defects.items():
                code = _CODE_OF.get(defect, defect.upper())
                for k, sample in enumerate(samples):
                    stem = f"NG/{code}/S{k:04d}/{cat.name}_{k:04d}_NG_C1_20240101000000"
                    save_image(sample.image, base / f"{stem}.jpg")
                    save_mask(sample.mask, base / f"{stem}_mask.png")
                    entries["test"].append(
                        {"category": cat.name, "anomaly_class": code, "image_path": f"{stem}.jpg",
                         "mask_path": f"{stem}_mask.png"}
                    )  # fmt: skip
            path = out / "realiad_jsons" / "realiad_jsons" / f"{cat.name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"meta": {"prefix": "", "normal_class": "OK"}, **entries}, indent=1))

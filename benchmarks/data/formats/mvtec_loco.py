"""MVTec LOCO AD: ``test/{good,logical_anomalies,structural_anomalies}``.

A mask is a folder ``ground_truth/<type>/<stem>/`` of region masks ``000.png, 001.png, ...``, read
as their union (anything > 0; LOCO's region masks hold per-defect values, so they are not checked
for two values). ``validation/good`` adds normal training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import subdirs
from anobench.benchmarks.data.mvtec import FolderPerClass
from anobench.generation.base import read_mask

LOCO_TYPES = ("logical_anomalies", "structural_anomalies")


@register_dataset("mvtec-loco", priority=50)
class MVTecLOCO(FolderPerClass):
    """MVTec LOCO AD."""

    description = (
        "MVTec LOCO: <cat>/{train/good, validation/good, test/<type>, ground_truth/<type>/<stem>/000.png}"
    )
    binary_masks = False
    hint = (
        "an MVTec LOCO category needs train/good, test/good, test/{logical,structural}_anomalies and "
        "ground_truth/<type>/<stem>/000.png"
    )

    def detect(self, root: Path) -> bool:
        """A category with ``test/logical_anomalies`` or ``test/structural_anomalies``."""
        return any((root / n / "test" / t).is_dir() for n in subdirs(root) for t in LOCO_TYPES)

    def mask_names(self, image: Path) -> list[str]:
        """The folder ``<stem>``."""
        return [image.stem]

    def extra_normals(self, base: Path) -> list[Path]:
        """``validation/good``."""
        return [base / "validation" / self.good]

    def defect_map(self, defects: list[str]) -> dict[str, str]:
        """The first source type is logical, the others structural."""
        return {d: LOCO_TYPES[min(i, 1)] for i, d in enumerate(defects)}

    def write_mask(self, mask: Path, base: Path, defect: str, image_name: str) -> None:
        """Two region files (left and right half of the mask), as LOCO keeps one file per region."""
        folder = self.mask_dir(base, defect) / Path(image_name).stem
        folder.mkdir(parents=True, exist_ok=True)
        full = read_mask(mask)
        half = full.shape[1] // 2
        parts = [full.copy(), full.copy()]
        parts[0][:, half:] = False
        parts[1][:, :half] = False
        for i, part in enumerate(p for p in parts if p.any()):
            Image.fromarray(part.astype(np.uint8) * 255).save(folder / f"{i:03d}.png")

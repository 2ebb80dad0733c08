"""MVTec 3D-AD, RGB only: ``<cat>/{train/good/rgb, test/<defect>/{rgb,gt}}``.

The point clouds (``xyz``) and the validation set are not read. The ``gt`` masks hold one grey
value per defect class (the category's ``class_ids.json``, e.g. 255, 254, 253; several in a
``combined`` mask), so they are read with the > 0 rule, not checked for two values.
"""

from __future__ import annotations

from pathlib import Path

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import subdirs
from anobench.benchmarks.data.mvtec import FolderPerClass


@register_dataset("mvtec-3d", priority=40)
class MVTec3D(FolderPerClass):
    """MVTec 3D-AD's RGB images and masks."""

    description = "MVTec 3D-AD (RGB): <cat>/{train/good/rgb, test/<defect>/{rgb,gt}}"
    hint = "an MVTec 3D-AD category needs train/good/rgb, test/good/rgb and test/<defect>/{rgb,gt}"
    binary_masks = False

    def detect(self, root: Path) -> bool:
        """A category with ``train/good/rgb``."""
        return any((root / n / "train" / "good" / "rgb").is_dir() for n in subdirs(root))

    def images_dir(self, base: Path, split: str, cls: str) -> Path:
        """``<split>/<cls>/rgb``."""
        return base / split / cls / "rgb"

    def mask_dir(self, base: Path, defect: str) -> Path:
        """``test/<defect>/gt``."""
        return base / "test" / defect / "gt"

    def mask_names(self, image: Path) -> list[str]:
        """``<stem>.png``."""
        return [f"{image.stem}.png"]

"""MVTec AD 2: ``<cat>/{train/good, validation/good, test_public/{good,bad}}``.

Masks are ``test_public/ground_truth/bad/<stem>_mask.png``; one defect type, ``bad``;
``validation/good`` adds normal training images. The private test sets (``test_private*``, no
public ground truth) are ignored, with a note.
"""

from __future__ import annotations

from pathlib import Path

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import CategoryData, subdirs
from anobench.benchmarks.data.mvtec import FolderPerClass


@register_dataset("mvtec-ad2", priority=30)
class MVTecAD2(FolderPerClass):
    """MVTec AD 2's public part."""

    description = "MVTec AD 2: <cat>/{train/good, validation/good, test_public/{good,bad,ground_truth/bad}}"
    test_dir = "test_public"
    hint = (
        "an MVTec AD 2 category needs train/good, test_public/good, test_public/bad and "
        "test_public/ground_truth/bad/<stem>_mask.png"
    )

    def detect(self, root: Path) -> bool:
        """A category with ``test_public/``."""
        return any((root / n / self.test_dir).is_dir() for n in subdirs(root))

    def defect_names(self, base: Path) -> list[str]:
        """Only ``bad`` (``ground_truth`` sits beside it)."""
        return [d for d in subdirs(base / self.test_dir) if d not in (self.good, "ground_truth")]

    def mask_dir(self, base: Path, defect: str) -> Path:
        """``test_public/ground_truth/<defect>``."""
        return base / self.test_dir / "ground_truth" / defect

    def extra_normals(self, base: Path) -> list[Path]:
        """``validation/good``."""
        return [base / "validation" / self.good]

    def notes(self, base: Path) -> list[str]:
        """One note per private test set."""
        return [
            f"{base / name}: private test set without public masks, ignored"
            for name in subdirs(base)
            if name.startswith("test_private")
        ]

    def defect_map(self, defects: list[str]) -> dict[str, str]:
        """Every source type becomes ``bad``."""
        return dict.fromkeys(defects, "bad")

    def write(self, categories: list[CategoryData], out: Path) -> None:
        """The public part, plus an empty ``test_private`` folder (as distributed, without its images)."""
        super().write(categories, out)
        for cat in categories:
            (out / cat.name / "test_private").mkdir(parents=True, exist_ok=True)

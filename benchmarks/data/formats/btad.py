"""BTAD (beanTech): ``01|02|03/{train/ok, test/ok, test/ko, ground_truth/ko/<stem>.png}``, BMP or PNG.

One defect type, ``ko``. Masks are ``<stem>.png`` in products 01 and 02 and ``<stem>.bmp`` in 03
(as distributed; anomalib converts them to PNG after download, so both are read). Masks are read
with the > 0 rule (not checked for two values).
"""

from __future__ import annotations

from pathlib import Path

from anobench.benchmarks.data.datasets import register_dataset
from anobench.benchmarks.data.layout import BMP_SUFFIXES, PNG_SUFFIXES
from anobench.benchmarks.data.mvtec import FolderPerClass


@register_dataset("btad", priority=60)
class BTAD(FolderPerClass):
    """BTAD as distributed."""

    description = "BTAD: 01|02|03/{train/ok, test/{ok,ko}, ground_truth/ko/<stem>.png}, BMP or PNG"
    good = "ok"
    image_suffixes = PNG_SUFFIXES + BMP_SUFFIXES
    binary_masks = False
    write_suffix = ".bmp"
    hint = "a BTAD category (01, 02, 03) needs train/ok, test/ok, test/ko and ground_truth/ko/<stem>.png"

    def mask_names(self, image: Path) -> list[str]:
        """``<stem>.png`` (01, 02, anomalib's converted copy), else ``<stem>.bmp`` (03)."""
        return [f"{image.stem}.png", f"{image.stem}.bmp"]

    def defect_map(self, defects: list[str]) -> dict[str, str]:
        """Every source type becomes ``ko``."""
        return dict.fromkeys(defects, "ko")

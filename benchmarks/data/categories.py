"""What a category is: a texture or an object (the generators and the mask-quality report ask).

Known names: MVTec AD's 5 textures and 10 objects, VisA's 12 and MPDD's 6 objects, and the embedded
synthetic categories (:data:`anobench.benchmarks.data.synth.CATEGORIES`). Any other name is unknown:
the baselines then paste anywhere and the mask-quality report measures no on-object fraction.

Example:
    >>> from anobench.benchmarks.data.categories import is_object
    >>> is_object("bottle"), is_object("carpet"), is_object("nut"), is_object("my_part")
    (True, False, True, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anobench.benchmarks.data.datasets import read_category
from anobench.benchmarks.data.synth import CATEGORIES as SYNTH_CATEGORIES
from anobench.generation.foreground import foreground_prior

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
                 "transistor", "zipper")  # fmt: skip
VISA_OBJECTS = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
                "pcb2", "pcb3", "pcb4", "pipe_fryum")  # fmt: skip
MPDD_OBJECTS = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")

TEXTURES = frozenset(MVTEC_TEXTURES) | {s.name for s in SYNTH_CATEGORIES if s.kind == "texture"}
OBJECTS = frozenset(MVTEC_OBJECTS + VISA_OBJECTS + MPDD_OBJECTS) | {
    s.name for s in SYNTH_CATEGORIES if s.kind == "object"
}


def is_object(category: str) -> bool | None:
    """True for a known object category, False for a known texture, None for an unknown name."""
    if category in OBJECTS:
        return True
    if category in TEXTURES:
        return False
    return None


def object_foregrounds(dataset: str | Path, categories: set[str], **options: Any) -> dict[str, np.ndarray]:
    """Foreground priors (from ``train/good``) of the categories that :func:`is_object` calls objects.

    ``options``: the dataset readers' ``format`` and ``resolution`` (None: detected).
    """
    return {
        cat: foreground_prior(read_category(dataset, cat, validate=False, **options).train_good)
        for cat in sorted(categories)
        if is_object(cat)
    }

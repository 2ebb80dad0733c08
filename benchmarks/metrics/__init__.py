"""Generation-quality metrics (IS, IC-LPIPS variants, KID, FID), reproducible and usable offline.

``compute_generation_metrics`` returns a dict keyed by the constants in :mod:`.defaults`; weights are
found or prepared by :mod:`.weights` and recorded (name + sha256) in every result. Every metric key
any stage writes is described in :mod:`.catalogue`.

The package imports its torch-based parts on first use, so ``catalogue`` and ``defaults`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "aggregate": "api",
    "compute_generation_metrics": "api",
    "DEFAULTS": "defaults",
    "IC_LPIPS_VARIANTS": "defaults",
    "METRIC_NAMES": "defaults",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

"""Built-in dataset adapters beyond MVTec AD / MPDD (:mod:`anobench.benchmarks.data.mvtec`).

Importing this package registers them; see :mod:`anobench.benchmarks.data.datasets`.
"""

from anobench.benchmarks.data.formats import btad, mvtec_3d, mvtec_ad2, mvtec_loco, real_iad, visa

__all__ = ["btad", "mvtec_3d", "mvtec_ad2", "mvtec_loco", "real_iad", "visa"]

"""Baseline generators; importing this package registers them.

* ``real-fewshot``: the real few-shot anomalies themselves (the bar every generator must clear).
* ``crop-paste``: the real few-shot anomaly regions pasted onto normal images.
* ``perlin``: DRAEM-style Perlin-noise anomalies; uses no real anomaly (the ``no-anomaly`` row).
* ``cutpaste-scar``: CutPaste's scar variant; uses no real anomaly.
* ``nsa``: Natural Synthetic Anomalies (Poisson-blended patches); uses no real anomaly.
"""

from anobench.generation.baselines import crop_paste, cutpaste, nsa, perlin, real_fewshot  # noqa: F401  (registration)

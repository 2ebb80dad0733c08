"""Defect-type fidelity: whether a generated image looks like real anomalies of its own defect type.

Each generated image's nearest neighbour (Euclidean, pooled EfficientNet-Lite0 features, see
:mod:`.effnet_features`) among the category's held-out real anomalies of every type gives a predicted
type; a pair scores 1 when it is its own type. ``type_fidelity`` of a type is the accuracy over its
pairs (the category/set means average the types). Reference: leave-one-out on the real anomalies
(each real anomaly's nearest OTHER real anomaly).

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.type_fidelity import nearest_types
    >>> real = np.array([[0.0], [1.0], [10.0]]); types = ["a", "a", "b"]
    >>> nearest_types(np.array([[0.2], [9.0]]), real, types)
    ['a', 'b']
    >>> nearest_types(real, real, types, leave_one_out=True)
    ['a', 'a', 'a']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist


def nearest_types(
    features: np.ndarray, real: np.ndarray, real_types: Sequence[str], *, leave_one_out: bool = False
) -> list[str]:
    """The defect type of each row's nearest real anomaly (``leave_one_out``: rows ARE ``real``)."""
    if len(real) < (2 if leave_one_out else 1):
        raise ValueError(f"type fidelity needs at least {2 if leave_one_out else 1} real anomalies")
    distances = cdist(features, real)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    return [real_types[i] for i in distances.argmin(1)]

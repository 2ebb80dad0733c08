"""Feature-space realism on EfficientNet-Lite0 features: KID, FID and each pair's nearest-real distance.

``kid_effnet_lite0`` / ``fid_effnet_lite0`` are torch-fidelity's own KID (polynomial kernel, degree 3,
``kid_subsets`` subsets of size min(1000, n_generated, n_real), seeded) and FID maths applied to the
pooled EfficientNet-Lite0 features of :mod:`.effnet_features` instead of Inception's: they are NOT
comparable with Inception KID/FID and are named apart. ``nn_distance`` is a pair's Euclidean feature
distance to the nearest held-out real anomaly of its type (reference: leave-one-out among those).

Example:
    >>> import numpy as np
    >>> from anobench.benchmarks.metrics.feature_realism import nn_distances
    >>> nn_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 1.0]])).tolist()
    [1.0, 4.242640687119285]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import cdist

from anobench.benchmarks.metrics.defaults import DEFAULTS, KEY_FID_EFFNET, KEY_KID_EFFNET, PAIR_DEFAULTS
from anobench.benchmarks.metrics.inception import kid_subset_size


def nn_distances(features: np.ndarray, real: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
    """Distance of each row to its nearest real feature (``leave_one_out``: rows ARE ``real``)."""
    distances = cdist(features, real)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    return distances.min(1)


def kid_fid(
    generated: np.ndarray,
    real: np.ndarray,
    *,
    seed: int = 0,
    kid_subsets: int = int(PAIR_DEFAULTS["kid_subsets"]),  # type: ignore[arg-type]
    scale: float = 1.0,
) -> dict[str, float]:
    """KID (x ``scale``) and FID of two feature sets with torch-fidelity's maths (NaN below 2 per side)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    if len(generated) < 2 or len(real) < 2:
        return {KEY_KID_EFFNET: math.nan, KEY_FID_EFFNET: math.nan}
    a, b = torch.from_numpy(np.asarray(generated, np.float64)), torch.from_numpy(np.asarray(real, np.float64))
    kid = kid_features_to_metric(
        a,
        b,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size(len(a), len(b), int(DEFAULTS["kid_subset_size"])),
        rng_seed=seed,
        verbose=False,
    )[KEY_METRIC_KID_MEAN]
    fid = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
    return {KEY_KID_EFFNET: float(kid) * scale, KEY_FID_EFFNET: float(fid[KEY_METRIC_FID])}

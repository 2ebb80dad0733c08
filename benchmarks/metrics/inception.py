"""IS, KID and FID of one defect type through torch-fidelity (one Inception pass over the generated set).

IS runs exactly as the reference ``fidelity --isc --input1 <gen>/<cat>/<defect>/image``: torch-fidelity
lists the folder itself (sorted png/jpg/jpeg), and its defaults apply (``isc_splits=10``,
``samples_shuffle=True``, ``rng_seed=2020``, 299 px resize inside the network). ``resize=256`` adds
torch-fidelity's own ``samples_resize_and_crop=256`` (Resize(256) + CenterCrop(256): for square images
the same as SeaS's "resize all images to 256x256"). KID/FID compare the generated images with the real
anomalies of the type; KID's subset size shrinks to the smaller set (torch-fidelity refuses larger).

Example:
    >>> from anobench.benchmarks.metrics.inception import kid_subset_size
    >>> kid_subset_size(500, 12)
    12
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anobench.benchmarks.metrics.defaults import DEFAULTS, KEY_FID, KEY_IS, KEY_IS_STD, KEY_KID, KEY_KID_STD


def kid_subset_size(n_generated: int, n_real: int, default: int = int(DEFAULTS["kid_subset_size"])) -> int:
    """torch-fidelity's subset size (1000), shrunk to the smaller of the two sets."""
    return min(default, n_generated, n_real)


def _transforms(resize: int) -> Any:
    import torchvision
    from torch_fidelity.datasets import TransformPILtoRGBTensor

    steps = (
        [torchvision.transforms.Resize(resize), torchvision.transforms.CenterCrop(resize)] if resize else []
    )
    return torchvision.transforms.Compose([*steps, TransformPILtoRGBTensor()])


def inception_metrics(
    image_dir: Path,
    weights_path: str | Path,
    metrics: Sequence[str],
    real_images: Sequence[Path] = (),
    *,
    resize: int = 0,
    kid_subsets: int = int(DEFAULTS["kid_subsets"]),
) -> dict[str, float]:
    """IS (mean, std), KID (mean, std) and FID of one folder of generated images, as requested."""
    import torch_fidelity
    from torch_fidelity.datasets import ImagesPathDataset

    want_is, want_kid, want_fid = (name in metrics for name in (KEY_IS, KEY_KID, KEY_FID))
    if not (want_is or want_kid or want_fid):
        return {}
    n_generated = sum(1 for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    kwargs: dict[str, Any] = {
        "input1": str(image_dir),
        "isc": want_is,
        "feature_extractor_weights_path": str(weights_path),
        "samples_resize_and_crop": resize,
        "cuda": torch.cuda.is_available(),
        "cache": False,
        "verbose": False,
    }
    if want_kid or want_fid:
        if len(real_images) < 2:
            raise ValueError(f"KID/FID need at least 2 real images, got {len(real_images)}")
        kwargs.update(
            input2=ImagesPathDataset([str(p) for p in real_images], _transforms(resize)),
            kid=want_kid,
            fid=want_fid,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size(n_generated, len(real_images)),
        )
    raw = torch_fidelity.calculate_metrics(**kwargs)
    out: dict[str, float] = {}
    if want_is:
        out[KEY_IS] = raw[torch_fidelity.KEY_METRIC_ISC_MEAN]
        out[KEY_IS_STD] = raw[torch_fidelity.KEY_METRIC_ISC_STD]
    if want_kid:
        out[KEY_KID] = raw[torch_fidelity.KEY_METRIC_KID_MEAN]
        out[KEY_KID_STD] = raw[torch_fidelity.KEY_METRIC_KID_STD]
    if want_fid:
        out[KEY_FID] = raw[torch_fidelity.KEY_METRIC_FID]
    return {k: float(v) if v is not None else math.nan for k, v in out.items()}

"""KID in the O2MAG convention: torchvision Inception-v3 pool features, subsets, reported x 1000.

Available only where torchvision's ImageNet Inception-v3 file (``inception_v3_google-0cc3c7bd.pth``)
is already on disk (an explicit path or torch hub's checkpoint folder); it is never downloaded, and
the result is then ``unavailable``. Images are resized to 299 px (bilinear) and ImageNet-normalised;
the 2048-d average-pool features go through torch-fidelity's KID maths (:func:`.feature_realism.kid_fid`).

Example:
    >>> from anobench.benchmarks.metrics.kid_o2mag import TORCHVISION_INCEPTION
    >>> TORCHVISION_INCEPTION
    'inception_v3_google-0cc3c7bd.pth'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from anobench.benchmarks.metrics.defaults import KEY_KID_EFFNET, PAIR_DEFAULTS
from anobench.benchmarks.metrics.feature_realism import kid_fid
from anobench.benchmarks.metrics.weights import WeightsUnavailableError
from anobench.downstream.training import load_images
from anobench.downstream.unsupervised import IMAGENET_MEAN_STD
from anobench.downstream.weights import read_state_dict

TORCHVISION_INCEPTION = "inception_v3_google-0cc3c7bd.pth"


def resolve_o2mag_weights(path: str | Path | None = None) -> Path:
    """The torchvision Inception-v3 file: ``path``, else torch hub's checkpoints; never downloaded."""
    candidates = [Path(path).expanduser()] if path else []
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_INCEPTION)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsUnavailableError(
        f"torchvision Inception-v3 weights ({TORCHVISION_INCEPTION}) not found in "
        f"{', '.join(map(str, candidates))}; they are never downloaded"
    )


class TorchvisionInception:
    """torchvision's Inception-v3 with the classifier removed: 2048-d pooled features."""

    def __init__(self, weights: str | Path, batch_size: int = 16) -> None:
        import torchvision

        model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        model.load_state_dict(read_state_dict(weights))
        model.fc = torch.nn.Identity()
        self.model, self.batch_size = model.eval(), batch_size
        mean, std = IMAGENET_MEAN_STD
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def features(self, paths: Sequence[Path]) -> np.ndarray:
        """Features (N, 2048) of image files."""
        out = []
        for start in range(0, len(paths), self.batch_size):
            x = load_images(list(paths[start : start + self.batch_size]), 299).float() / 255
            out.append(self.model((x - self.mean) / self.std).double())
        return torch.cat(out).numpy()


def kid_o2mag(generated: np.ndarray, real: np.ndarray, seed: int = 0) -> float:
    """KID x 1000 of generated vs real :meth:`TorchvisionInception.features`."""
    scale = float(PAIR_DEFAULTS["o2mag_kid_scale"])  # type: ignore[arg-type]
    return kid_fid(generated, real, seed=seed, scale=scale)[KEY_KID_EFFNET]

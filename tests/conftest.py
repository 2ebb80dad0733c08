"""Shared fixtures: the embedded synthetic dataset is built once per test session (anomalib style)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # n workers x torch's default threads oversubscribe the cores; OpenMP then spins (a segmenter step
    # measured 27x slower with 2 threads than with 1 on a loaded 2-core machine).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded dataset (seed 0), read-only for the tests that use it."""
    from anobench.benchmarks.data.synth import build_synthetic_dataset

    return build_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seed=0)


@pytest.fixture(scope="session")
def nut_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the ``nut`` category: a smaller dataset for the end-to-end tests."""
    from anobench.benchmarks.data.synth import build_synthetic_dataset

    return build_synthetic_dataset(tmp_path_factory.mktemp("nut"), seed=0, categories=["nut"])


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Inception state dict in torch-fidelity's format."""
    import torch

    from anobench.benchmarks.metrics.weights import random_inception_state_dict

    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(random_inception_state_dict(seed=0), path)
    return path


@pytest.fixture
def normal_images(tmp_path: Path) -> list[Path]:
    """Three 16 px random "normal" images (for the offline base's tiny trainings)."""
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        Image.fromarray(rng.integers(60, 200, (16, 16, 3), dtype=np.uint8)).save(path)
    return paths

"""Shared fixtures: the embedded synthetic dataset is built once per test session (anomalib style)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded dataset (seed 0), read-only for the tests that use it."""
    from benchmarks.data.synth import build_synthetic_dataset

    return build_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seed=0)


@pytest.fixture(scope="session")
def nut_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the ``nut`` category: a smaller dataset for the end-to-end tests."""
    from benchmarks.data.synth import build_synthetic_dataset

    return build_synthetic_dataset(tmp_path_factory.mktemp("nut"), seed=0, categories=["nut"])

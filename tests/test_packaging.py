"""pyproject.toml's explicit package list and package data match the source tree (a new subpackage or
data file cannot be forgotten; .ci/wheel-check installs the built wheel and runs it)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _tree() -> dict[str, Path]:
    """Every folder of the three source folders as its dotted ``anobench.`` package name."""
    tree = {}
    for package, folder in SETUPTOOLS["package-dir"].items():
        for path in [ROOT / folder, *(ROOT / folder).rglob("*")]:
            if path.is_dir() and path.name != "__pycache__":
                tree[".".join([package, *path.relative_to(ROOT / folder).parts])] = path
    return tree


def test_the_three_folders_are_anobench_subpackages():
    assert SETUPTOOLS["package-dir"] == {
        "anobench.generation": "generation",
        "anobench.downstream": "downstream",
        "anobench.benchmarks": "benchmarks",
    }


def test_package_list_is_every_folder_with_an_init():
    tree = _tree()
    with_init = {name for name, path in tree.items() if (path / "__init__.py").is_file()}
    assert sorted(SETUPTOOLS["packages"]) == sorted(with_init)
    # a folder with modules but no __init__.py would be left out of the wheel silently
    assert not [name for name, path in tree.items() if name not in with_init and any(path.glob("*.py"))]


def test_every_data_file_is_declared():
    tree = _tree()
    declared = {p for package, patterns in SETUPTOOLS["package-data"].items() for pattern in patterns
                for p in tree[package].glob(pattern)}  # fmt: skip
    data = {
        p for path in tree.values() for p in path.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")
    }
    assert declared == data
    names = {p.relative_to(ROOT).as_posix() for p in declared}
    assert {"benchmarks/configs/quick.yaml", "benchmarks/report/paper_reported.csv"} <= names

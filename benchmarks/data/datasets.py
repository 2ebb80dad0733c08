"""Dataset adapter registry (timm style): ``@register_dataset("visa")``, ``list_datasets("mvtec*")``.

Every adapter gives the same in-memory view (:class:`~anobench.benchmarks.data.layout.CategoryData`).
The format of a folder is detected from its contents: adapters are tried by ascending ``priority``
(the most specific layouts first, plain MVTec AD last) and the first whose ``detect`` answers yes
wins; ``--format NAME`` (``data.format``) overrides detection. Third-party adapters register through
the ``anobench.datasets`` entry-point group (``name = "package.module:AdapterClass"``) or by
importing a module that uses the decorator.

Example:
    >>> from anobench.benchmarks.data.datasets import list_datasets
    >>> list_datasets("mvtec*")
    ['mvtec', 'mvtec-3d', 'mvtec-ad2', 'mvtec-loco']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from anobench.benchmarks.data.layout import CategoryData, DatasetAdapter
from anobench.benchmarks.errors import DatasetError, UserError
from anobench.generation.registry import Registry

ENTRY_POINT_GROUP = "anobench.datasets"
DATASETS: Registry[DatasetAdapter] = Registry(
    "dataset format",
    builtin_modules=("anobench.benchmarks.data.mvtec", "anobench.benchmarks.data.formats"),
    entry_point_group=ENTRY_POINT_GROUP,
    error=UserError,
)
_REGISTRY = DATASETS.classes
_PRIORITY: dict[str, int] = {}  # detection order of each format (absent: 0)
list_datasets = DATASETS.names


def register_dataset(
    name: str, *, priority: int = 0
) -> Callable[[type[DatasetAdapter]], type[DatasetAdapter]]:
    """Class decorator: register a :class:`DatasetAdapter` under ``name``.

    ``priority``: detection order (lower first); user adapters default to 0, before the built-ins.
    """

    def decorate(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
        DATASETS.register(name)(cls)
        _PRIORITY[name] = priority
        return cls

    return decorate


def detection_order() -> list[str]:
    """Format names in the order :func:`detect_format` tries them."""
    DATASETS.load()
    return sorted(_REGISTRY, key=lambda n: (_PRIORITY.get(n, 0), n))


def get_dataset(name: str, resolution: str | int | None = None) -> DatasetAdapter:
    """The adapter registered under ``name`` (``resolution``: Real-IAD's image folder)."""
    return DATASETS.get(name)(None if resolution is None else str(resolution))


def detect_format(root: str | Path) -> str:
    """The format of the dataset folder ``root`` (first adapter in :func:`detection_order` that matches)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found; pass the folder that holds the category folders"
        )
    for name in detection_order():
        if _REGISTRY[name]().detect(root):
            return name
    raise DatasetError(
        f"{root}: no known dataset layout found (tried {', '.join(detection_order())}); "
        "check the folder or pass --format NAME"
    )


def adapter_for(
    root: str | Path, format: str | None = None, resolution: str | int | None = None
) -> DatasetAdapter:
    """The adapter named by ``format``, or the one detected from ``root``'s contents."""
    return get_dataset(format or detect_format(root), resolution)


def list_categories(
    root: str | Path, *, format: str | None = None, resolution: str | int | None = None
) -> list[str]:
    """Category names of the dataset at ``root`` (in its detected or the given format)."""
    return adapter_for(root, format, resolution).list_categories(Path(root))


def read_category(
    root: str | Path,
    category: str,
    *,
    validate: bool = True,
    format: str | None = None,
    resolution: str | int | None = None,
) -> CategoryData:
    """List (and by default validate) one category; :class:`DatasetError` has one line per problem."""
    return adapter_for(root, format, resolution).read_category(Path(root), category, validate=validate)


def check_dataset(
    root: str | Path,
    categories: list[str] | None = None,
    *,
    format: str | None = None,
    resolution: str | int | None = None,
) -> list[CategoryData]:
    """Validate every (or the named) category; all problems of all categories are reported together."""
    adapter = adapter_for(root, format, resolution)
    names = categories or adapter.list_categories(Path(root))
    found, problems = [], []
    for name in names:
        try:
            found.append(adapter.read_category(Path(root), name))
        except DatasetError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DatasetError(*problems)
    return found


def summary_rows(categories: list[CategoryData]) -> list[dict[str, object]]:
    """One row per category for ``anobench data check``."""
    rows = []
    for cat in categories:
        size = f"{cat.image_size[0]}x{cat.image_size[1]}" if cat.image_size else "mixed"
        rows.append(
            {
                "category": cat.name,
                "format": cat.format,
                "train_good": len(cat.train_good),
                "test_good": len(cat.test_good),
                "defects": ", ".join(f"{d}:{len(s)}" for d, s in cat.defects.items()),
                "image_size": size,
            }
        )
    return rows

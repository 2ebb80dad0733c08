"""Generator registry (timm style): ``@register_generator`` and ``list_generators("dual*")``.

Third-party generators register through the ``anobench.generators`` entry-point group
(``name = "package.module:GeneratorClass"``), so a new method is benchmarked without a fork.

Example:
    >>> from anobench.generation.registry import list_generators
    >>> list_generators("real*")
    ['real-fewshot']
"""

from __future__ import annotations

import fnmatch
import importlib
from importlib.metadata import entry_points
from typing import Any

from anobench.generation.base import Generator
from anobench.generation.errors import GenerationInputError

ENTRY_POINT_GROUP = "anobench.generators"
# Modules whose import registers the built-in generators.
_BUILTIN_MODULES = ("anobench.generation.baselines", "anobench.generation.dualanodiff")

_REGISTRY: dict[str, type[Generator]] = {}
_loaded = False


def register_generator(name: str):
    """Class decorator: register a :class:`Generator` subclass under ``name``."""

    def decorate(cls: type[Generator]) -> type[Generator]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"generator name {name!r} is already registered by {_REGISTRY[name].__qualname__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            cls = ep.load()
            register_generator(ep.name)(cls)


def list_generators(pattern: str = "*") -> list[str]:
    """Registered generator names matching a shell-style ``pattern``, sorted."""
    _load()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_generator(name: str) -> type[Generator]:
    """The generator class registered under ``name``."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GenerationInputError(
            f"unknown generator {name!r}; registered: {', '.join(list_generators())}"
        ) from None


def create_generator(name: str, **options: Any) -> Generator:
    """Instantiate a registered generator with config ``options`` (unknown options are an error)."""
    cls = get_generator(name)
    known = {f for f in cls.Config.__dataclass_fields__}
    unknown = sorted(set(options) - known)
    if unknown:
        raise GenerationInputError(
            f"generator {name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**options)

"""Generator registry (timm style): ``@register_generator`` and ``list_generators("dual*")``.

Third-party generators register through the ``anobench.generators`` entry-point group
(``name = "package.module:GeneratorClass"``), so a new method is benchmarked without a fork.

Example:
    >>> from anobench.generation.registry import list_generators
    >>> list_generators("real*")
    ['real-fewshot']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from anobench.generation.base import Generator
from anobench.generation.errors import GenerationInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named classes of one kind (timm style), shared by generators, dataset layouts and segmenters.

    ``register(name)`` is the class decorator (it sets ``cls.name``); the built-in modules are imported
    and the ``entry_point_group``'s plugins loaded on first lookup; an unknown name raises ``error``.

    Example:
        >>> shapes = Registry("shape", builtin_modules=(), entry_point_group=None, error=KeyError)
        >>> @shapes.register("square")
        ... class Square: ...
        >>> shapes.names("sq*"), shapes.get("square").name
        (['square'], 'square')
    """

    def __init__(
        self,
        kind: str,
        builtin_modules: tuple[str, ...],
        entry_point_group: str | None,
        error: type[Exception],
    ) -> None:
        self.kind, self.builtin_modules, self.entry_point_group, self.error = (
            kind, builtin_modules, entry_point_group, error,
        )  # fmt: skip
        self.classes: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` (a second class under one name is an error)."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self.classes and self.classes[name] is not cls:
                owner = self.classes[name].__qualname__
                raise ValueError(f"{self.kind} name {name!r} is already registered by {owner}")
            cls.name = name  # type: ignore[attr-defined]
            self.classes[name] = cls
            return cls

        return decorate

    def load(self) -> None:
        """Import the built-in modules and the entry-point plugins (once)."""
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.entry_point_group) if self.entry_point_group else ():
            if ep.name not in self.classes:
                self.register(ep.name)(ep.load())

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        self.load()
        return sorted(n for n in self.classes if fnmatch.fnmatch(n, pattern))

    def create(self, name: str, **options: Any) -> T:
        """Instantiate ``name`` with its ``Config`` dataclass ``options`` (unknown options are an error)."""
        cls = self.get(name)
        known = {f.name for f in dataclasses.fields(cls.Config)}  # type: ignore[attr-defined]
        unknown = sorted(set(options) - known)
        if unknown:
            raise self.error(
                f"{self.kind} {name!r}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known)) or 'none'}"
            )
        return cls(**options)

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``."""
        self.load()
        try:
            return self.classes[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None


ENTRY_POINT_GROUP = "anobench.generators"
GENERATORS: Registry[Generator] = Registry(
    "generator",
    builtin_modules=("anobench.generation.baselines", "anobench.generation.dualanodiff"),
    entry_point_group=ENTRY_POINT_GROUP,
    error=GenerationInputError,
)
_REGISTRY = GENERATORS.classes
register_generator = GENERATORS.register
list_generators = GENERATORS.names
get_generator = GENERATORS.get


def create_generator(name: str, **options: Any) -> Generator:
    """Instantiate a registered generator with config ``options`` (unknown options are an error)."""
    return GENERATORS.create(name, **options)

"""Errors raised by the generation library for bad user input."""

from __future__ import annotations


class GenerationInputError(ValueError):
    """Bad input to a generator or a generated set on disk; ``problems`` has one line each."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems) or ["invalid input"]
        super().__init__("\n".join(self.problems))

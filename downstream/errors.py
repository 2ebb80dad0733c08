"""Errors raised by the downstream library for bad user input."""

from __future__ import annotations


class DownstreamInputError(ValueError):
    """Bad input to downstream training or scoring; ``problems`` has one line each."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems) or ["invalid input"]
        super().__init__("\n".join(self.problems))

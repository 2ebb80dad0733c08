"""Errors caused by user input: the CLI prints them as one line each and exits with code 2."""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input (paths, data, config), reported without a traceback.

    ``problems`` holds one line per problem; each names the file or key and how to fix it.
    """

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems) or ["invalid input"]
        super().__init__("\n".join(self.problems))


class DatasetError(UserError):
    """A dataset folder that does not follow the MVTec-AD layout or holds bad files."""


class ConfigError(UserError):
    """A configuration with unknown keys, wrong types or missing paths."""

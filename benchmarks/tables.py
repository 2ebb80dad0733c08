"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def format_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 3
) -> str:
    """Align ``rows`` (dicts) into a fixed-width table with a header line.

    Example:
        >>> print(format_table([{"a": 1, "b": 0.5}]))
        a  b
        -  -----
        1  0.500
    """
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(r.get(c), digits) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)

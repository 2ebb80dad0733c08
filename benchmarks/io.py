"""Atomic JSON files: a reader never sees half a file, a killed writer leaves the old one (or none).

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from anobench.benchmarks.io import write_json
    >>> path = write_json(Path(tempfile.mkdtemp()) / "a" / "b.json", {"x": 1})
    >>> json.loads(path.read_text())
    {'x': 1}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (non-JSON values as ``str``), atomically.

    A temporary file in the same folder (parents created), then a rename over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path

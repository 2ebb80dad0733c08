"""Files of a run: atomic JSON files and injective file names.

A reader never sees half a JSON file, a killed writer leaves the old one (or none); a file name built
from user-given names (categories, defect types, generators) never collides with another's.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from anobench.benchmarks.io import write_json
    >>> path = write_json(Path(tempfile.mkdtemp()) / "a" / "b.json", {"x": 1})
    >>> json.loads(path.read_text())
    {'x': 1}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (non-JSON values as ``str``), atomically.

    A temporary file in the same folder (parents created), then a rename over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: A name part kept as it is: lower case, digits, ``.``, ``-``, ``[``, ``]`` and single inner ``_``
#: (so ``__`` only ever separates parts, and names differing in case only stay apart on macOS/Windows).
_READABLE = re.compile(r"[a-z0-9][a-z0-9.\[\]-]*(?:_[a-z0-9.\[\]-]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9.\[\]-]+")


def safe_name(*parts: str) -> str:
    """A file-name-safe name for ``parts``, different for different ``parts`` (injective).

    Readable parts are joined by ``__`` as they are; otherwise each part is slugged (at most 40
    characters) and ``~`` plus a short hash of the exact parts is appended, so ``pcb 1`` and ``pcb-1``
    (or two all-Chinese names) never share a file.

    Example:
        >>> safe_name("nut", "all")
        'nut__all'
        >>> safe_name("pcb 1"), safe_name("pcb-1")
        ('pcb-1~17c0312d', 'pcb-1')
    """
    if all(_READABLE.fullmatch(part) for part in parts):
        return "__".join(parts)
    slug = "__".join(_UNSAFE.sub("-", part)[:40] for part in parts)
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:8]
    return f"{slug}~{digest}"

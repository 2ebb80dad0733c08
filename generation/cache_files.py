"""Checks for cached files that a killed process may have left truncated (they are rebuilt, not trusted)."""

from __future__ import annotations

from pathlib import Path


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (truncated, corrupt), or None when it is.

    Opening reads the header and checks it against the file size, so a cut file is caught cheaply.

    Example:
        >>> safetensors_problem("cache/lpips-vgg-trunk.safetensors")  # doctest: +SKIP
        'cache/lpips-vgg-trunk.safetensors: truncated or corrupt (MetadataIncompleteBuffer)'
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, header JSON errors: all "broken"
        return f"{path}: truncated or corrupt ({str(exc).strip() or exc.__class__.__name__})"
    return None

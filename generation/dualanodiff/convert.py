"""The authors' released DualAnoDiff LoRA checkpoints, renamed onto this implementation.

The released training scripts save with the vendored diffusers 0.18.1
``LoraLoaderMixin.save_lora_weights`` (``pytorch_lora_weights.bin``; ``.safetensors`` with safe
serialisation): UNet processors under ``unet.<layer>.processor.`` and the text-encoder LoRA under
``text_encoder.text_model.encoder.layers.<i>.self_attn.``. Per UNet processor
(``LoRAAttnProcessor2_0`` of the vendored ``attention_processor.py``):

========================================  ==========================================
released                                  here (``DualBranchAttnProcessor``)
========================================  ==========================================
``to_{q,k,v,out}_lora.<b>.{down,up}``     ``lora.<b>.{q,k,v,out}.{down,up}`` (branch b)
``temporal_n`` / ``temporal_i``           ``saim.norm`` / ``saim.proj_in``
``temporal_{q,k,v}`` / ``temporal_o``     ``saim.to_{q,k,v}`` / ``saim.proj_out``
``temporal_condition_mlp.{0,1}``          ``bcm.mlp.{0,1}`` (BCM, ``attn1`` only)
``temporal_a`` (shape [1])                ``bcm.alpha`` (a scalar)
========================================  ==========================================

The BCM script wraps every ``attn1`` processor in ``ReferenceOnlyAttnProc``, which adds
``chained_proc.`` to its keys; its ``attn2`` processors carry an MLP and scalar too, which its
forward never uses: they are dropped. Text encoder: ``to_{q,k,v,out}_lora.{down,up}`` become peft's
``{q,k,v,out}_proj.lora_{A,B}.default`` (down = A, up = B; scale 1 in both). The converted file
holds :meth:`DualAnoDiffModel.trainable_state_dict` names; its metadata records ``rank``, ``bcm``
and ``train_text_encoder`` (build the model with them, ``bcm_hidden=320``, then ``load_trainable``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from anobench.generation.errors import GenerationInputError

#: File names the released scripts write into an output folder.
RELEASED_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
_PROJ = {"q": "q", "k": "k", "v": "v", "out": "out"}
_SAIM = {"n": "norm", "i": "proj_in", "q": "to_q", "k": "to_k", "v": "to_v", "o": "proj_out"}
_UNET = re.compile(
    r"^unet\.(?P<layer>.+?)\.attn(?P<attn>[12])\.processor\.(?P<chained>chained_proc\.)?(?P<rest>.+)$"
)
_TEXT = re.compile(
    r"^text_encoder\.(?:text_model\.)?(?P<layer>encoder\.layers\.\d+\.self_attn)\.(?P<rest>.+)"
)  # noqa: E501
_UNET_LORA = re.compile(r"^to_(q|k|v|out)_lora\.([01])\.(down|up)\.weight$")
_UNET_SAIM = re.compile(r"^temporal_([niqkvo])\.(weight|bias)$")
_UNET_BCM = re.compile(r"^temporal_condition_mlp\.([01])\.(weight|bias)$")
_TEXT_LORA = re.compile(r"^to_(q|k|v|out)_lora\.(down|up)\.weight$")


def released_file(folder: Path) -> Path:
    """The weights file of a released output folder.

    ``pytorch_lora_weights.*`` in the folder itself (the final save; the BCM script's layout), else
    in its last ``checkpoint-<step>`` subfolder that has one (the plain script's inference reads
    ``all_generate/<cat>/<defect>/checkpoint-5000``).
    """
    steps = sorted(
        (int(d.name.removeprefix("checkpoint-")), d)
        for d in folder.glob("checkpoint-*")
        if d.is_dir() and d.name.removeprefix("checkpoint-").isdigit()
    )
    for candidate in [folder, *(d for _, d in reversed(steps))]:
        found = [candidate / name for name in RELEASED_FILES if (candidate / name).is_file()]
        if found:
            return found[0]
    raise GenerationInputError(
        f"{folder}: no {' or '.join(RELEASED_FILES)} in this folder or its checkpoint-<step> folders"
    )


def read_released(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a released checkpoint; a folder means its weights file (:func:`released_file`).

    ``.safetensors`` directly, ``.bin``/``.pt`` with ``torch.load(weights_only=True)`` (never unpickles code).
    """
    path = Path(path)
    if path.is_dir():
        path = released_file(path)
    if not path.is_file():
        raise GenerationInputError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        problem = f"{path}: not a readable checkpoint ({type(exc).__name__}: {first[:200]})"
        raise GenerationInputError(problem) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GenerationInputError(f"{path}: not a state dict of tensors")
    return state


def _unet_name(layer: str, attn: str, rest: str, bcm: bool) -> str | None:
    """Our name of one released processor tensor; None: dropped; raises KeyError: unknown."""
    prefix = f"unet.{layer}.processor."
    if m := _UNET_LORA.match(rest):
        return f"{prefix}lora.{m[2]}.{_PROJ[m[1]]}.{m[3]}.weight"
    if m := _UNET_SAIM.match(rest):
        return f"{prefix}saim.{_SAIM[m[1]]}.{m[2]}"
    if bcm and ((m := _UNET_BCM.match(rest)) or rest == "temporal_a"):
        if attn == "2":
            return None  # attn2's BCM tensors are never used by the released forward
        return f"{prefix}bcm.alpha" if m is None else f"{prefix}bcm.mlp.{m[1]}.{m[2]}"
    raise KeyError(rest)


def _expected(blocks: set[str], bcm: bool) -> set[str]:
    """Our names of every tensor the released scripts save for the layers seen in a checkpoint.

    ``blocks``: UNet transformer blocks (``unet.<block>``: each has ``attn1`` and ``attn2``
    processors) and text-encoder layers (``text_encoder.encoder.layers.<i>.self_attn``; layers
    0 to the highest seen), so a layer left out whole is missing too, not only part of one.
    """
    names = set()
    for block in (b.removeprefix("unet.") for b in blocks if b.startswith("unet.")):
        for attn in "12":
            prefix = f"unet.{block}.attn{attn}.processor."
            names |= {f"{prefix}lora.{b}.{p}.{d}.weight" for b in "01" for p in _PROJ for d in ("down", "up")}
            names |= {f"{prefix}saim.{m}.{w}" for m in _SAIM.values() for w in ("weight", "bias")}
            if bcm and attn == "1":
                names |= {f"{prefix}bcm.mlp.{i}.{w}" for i in "01" for w in ("weight", "bias")}
                names.add(f"{prefix}bcm.alpha")
    text = [int(b.split(".")[3]) for b in blocks if b.startswith("text_encoder.")]
    for i in range(max(text) + 1 if text else 0):
        layer = f"text_encoder.encoder.layers.{i}.self_attn"
        names |= {f"{layer}.{p}_proj.lora_{s}.default.weight" for p in _PROJ for s in "AB"}
    return names


def convert_released(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a released state dict onto our names.

    Returns (our tensors, metadata: ``rank``, ``bcm``, ``train_text_encoder``, ``source``).

    Raises:
        GenerationInputError: unknown keys, layers missing some or all of their tensors (one
            line, a few names listed), or LoRA ranks that differ.
    """
    bcm = any("temporal_condition_mlp" in k for k in state)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    blocks: set[str] = set()  # UNet transformer blocks (each has attn1 and attn2) and text layers
    for key, value in state.items():
        try:
            if m := _UNET.match(key):
                if m["chained"] and not (bcm and m["attn"] == "1"):
                    raise KeyError(key)  # ReferenceOnlyAttnProc wraps only BCM's attn1
                blocks.add(f"unet.{m['layer']}")
                name = _unet_name(f"{m['layer']}.attn{m['attn']}", m["attn"], m["rest"], bcm)
            elif (m := _TEXT.match(key)) and (lora := _TEXT_LORA.match(m["rest"])):
                blocks.add(f"text_encoder.{m['layer']}")
                side = "A" if lora[2] == "down" else "B"
                name = f"text_encoder.{m['layer']}.{lora[1]}_proj.lora_{side}.default.weight"
            else:
                raise KeyError(key)
        except KeyError:
            unknown.append(key)
            continue
        if name is not None:
            out[name] = value.reshape(()) if name.endswith("bcm.alpha") else value.contiguous()
    missing = sorted(_expected(blocks, bcm) - set(out))
    if unknown or missing or not out:
        raise GenerationInputError(
            "not a released DualAnoDiff LoRA checkpoint: "
            + (f"{len(unknown)} unknown keys (e.g. {', '.join(sorted(unknown)[:3])})" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})" if missing else "")
            + ("" if out or unknown or missing else "no tensors")
        )
    ranks = {v.shape[0] for k, v in out.items() if k.endswith(".down.weight") or ".lora_A." in k}
    ranks |= {v.shape[1] for k, v in out.items() if k.endswith(".up.weight") or ".lora_B." in k}
    if len(ranks) != 1:
        raise GenerationInputError(f"released checkpoint: LoRA ranks differ across layers ({sorted(ranks)})")
    text = any(k.startswith("text_encoder.") for k in out)
    return out, {
        "rank": str(ranks.pop()),
        "bcm": str(bcm).lower(),
        "train_text_encoder": str(text).lower(),
        "source": "zhiqing0205/DualAnoDiff",
    }


def convert_file(src: str | Path, dst: str | Path) -> dict[str, str]:
    """Convert ``src`` (a released checkpoint or its folder) into ``dst`` (safetensors).

    Returns the metadata written with it (``rank``, ``bcm``, ``train_text_encoder``, ``source``)
    plus ``tensors``.

    Example:
        >>> convert_file("all_generate/bottle/broken_large", "broken_large.safetensors")  # doctest: +SKIP
        {'rank': '32', 'bcm': 'false', 'train_text_encoder': 'true', 'source': 'zhiqing0205/DualAnoDiff', ...}
    """
    from safetensors.torch import save_file

    tensors, meta = convert_released(read_released(src))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)
    return {**meta, "tensors": str(len(tensors))}

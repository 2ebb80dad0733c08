"""``anobench dualanodiff convert SRC DST``: the authors' released checkpoints, for this implementation."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dualanodiff`` sub-commands."""
    p = subparsers.add_parser("dualanodiff", help="DualAnoDiff utilities (convert the released checkpoints)")
    sub = p.add_subparsers(dest="dualanodiff_command", metavar="ACTION")
    s = sub.add_parser(
        "convert",
        help="rename a released LoRA checkpoint (.bin/.pt/.safetensors, or its folder) into safetensors",
    )
    s.add_argument("src", type=Path, help="released pytorch_lora_weights.bin (.safetensors) or its folder")
    s.add_argument("dst", type=Path, help="output .safetensors (DualAnoDiffModel.load_trainable reads it)")
    s.set_defaults(handler=convert)


def convert(args: argparse.Namespace) -> int:
    """Convert and print what was written (rank and variant to build the model with)."""
    from anobench.generation.dualanodiff.convert import convert_file

    meta = convert_file(args.src, args.dst)
    variant = "dualanodiff-bcm" if meta["bcm"] == "true" else "dualanodiff"
    text = "" if meta["train_text_encoder"] == "true" else ", no text-encoder LoRA"
    print(f"wrote {args.dst}: {meta['tensors']} tensors, rank {meta['rank']}, {variant}{text}")
    return 0

"""Saved activations on disk: what autograd keeps for the backward pass, written out and read back.

The forward pass of a large network keeps every layer's inputs until the backward pass needs them
(with gradient checkpointing: every unit's input). Inside :func:`offloaded_activations`, each saved
CPU tensor of at least ``min_bytes`` (not the parameters) is written to a file in a temporary folder
and read back when the backward pass unpacks it; the file is deleted once autograd releases it, the
folder when the context exits. Values are bitwise the same, so gradients are too; the memory of the
saved activations is traded for disk traffic (the operating system's page cache, not the process's
resident memory).

Example:
    >>> import torch
    >>> from anobench.downstream.offload import offloaded_activations
    >>> w = torch.ones(3, requires_grad=True)
    >>> with offloaded_activations(min_bytes=0):
    ...     (w * torch.arange(3.0)).sum().backward()
    >>> w.grad
    tensor([0., 1., 2.])
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


class OnDisk:
    """One saved tensor in a file: contiguous or channels-last bytes, read back in the same layout."""

    def __init__(self, tensor: torch.Tensor, path: Path) -> None:
        self.path, self.shape, self.dtype = path, tensor.shape, tensor.dtype
        self.channels_last = not tensor.is_contiguous()
        data = tensor.detach().permute(0, 2, 3, 1) if self.channels_last else tensor.detach()
        data.view(torch.uint8).numpy().tofile(path)

    @staticmethod
    def fits(tensor: torch.Tensor) -> bool:
        """Dense CPU tensors in the contiguous or (4-D) channels-last layout."""
        if tensor.device.type != "cpu" or tensor.is_sparse:
            return False
        return tensor.is_contiguous() or (
            tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
        )

    def read(self) -> torch.Tensor:
        """The tensor, bitwise as written."""
        n, c, h, w = self.shape if self.channels_last else (0, 0, 0, 0)
        stored = (n, h, w, c) if self.channels_last else self.shape
        data = torch.from_file(str(self.path), size=self.shape.numel(), dtype=self.dtype).view(stored)
        return data.permute(0, 3, 1, 2) if self.channels_last else data

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


@contextlib.contextmanager
def offloaded_activations(min_bytes: int = 1 << 20, folder: str | Path | None = None) -> Iterator[Path]:
    """Run forward and backward passes inside: saved tensors of ``min_bytes`` or more live on disk.

    ``folder``: where the temporary folder is made (None: the system's temporary directory).
    Yields the temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="anobench-activations-", dir=folder) as tmp:
        root, counter = Path(tmp), itertools.count()

        def pack(tensor: torch.Tensor) -> torch.Tensor | OnDisk:
            small = tensor.numel() * tensor.element_size() < min_bytes
            if small or isinstance(tensor, torch.nn.Parameter) or not OnDisk.fits(tensor):
                return tensor
            return OnDisk(tensor, root / f"{next(counter)}.bin")

        def unpack(packed: torch.Tensor | OnDisk) -> torch.Tensor:
            return packed.read() if isinstance(packed, OnDisk) else packed

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield root

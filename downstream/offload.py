"""Saved activations on disk: what autograd keeps for the backward pass, written out and read back.

The forward pass of a large network keeps every layer's inputs until the backward pass needs them
(with gradient checkpointing: every unit's input). Inside :func:`offloaded_activations`, each saved
CPU tensor of at least ``min_bytes`` (not the parameters) is written to a file in a temporary folder
and read back when the backward pass unpacks it; the file is deleted once autograd releases it, the
folder when the context exits. Values are bitwise the same, so gradients are too; the memory of the
saved activations is traded for disk traffic (the operating system's page cache, not the process's
resident memory). A layer that processes its batch in chunks (the segmenter's ``unit_chunk``) can
keep its own saved tensors in the active store (:func:`active_store`) and read back only the rows of
the chunk at hand (:meth:`OnDisk.rows`), so not even one full activation comes back into memory.

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
import contextvars
import ctypes
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own mapping.

    Freed blocks then leave the process's resident memory at once, instead of staying in the heap
    for reuse (glibc raises its default 128 KB threshold up to 32 MB as large blocks are freed, and a
    training step frees many of a few MB). Process-wide and kept; the price is a page fault per page
    of each such allocation. Returns False where it is not available (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


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

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """``tensor[start:stop]`` (first dimension), reading only those rows' bytes."""
        n = self.shape[0]
        start, stop = min(start, n), min(stop, n)
        per_row = self.shape.numel() // n * self.dtype.itemsize if n else 0
        data = np.fromfile(self.path, dtype=np.uint8, count=(stop - start) * per_row, offset=start * per_row)
        stored = self.shape[1:] if not self.channels_last else (*self.shape[2:], self.shape[1])
        rows = torch.from_numpy(data).view(self.dtype).view(stop - start, *stored)
        return rows.permute(0, 3, 1, 2) if self.channels_last else rows

    def empty(self) -> torch.Tensor:
        """An uninitialised tensor of the stored one's shape, dtype and layout."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return torch.empty(self.shape, dtype=self.dtype, memory_format=layout)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class ActivationStore:
    """The temporary folder of one :func:`offloaded_activations` context and what goes into it."""

    def __init__(self, root: Path, min_bytes: int) -> None:
        self.root, self.min_bytes, self._counter = root, min_bytes, itertools.count()

    def keeps(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` goes to disk: large enough, not a parameter, a layout :class:`OnDisk` reads."""
        large = tensor.numel() * tensor.element_size() >= self.min_bytes
        return large and not isinstance(tensor, torch.nn.Parameter) and OnDisk.fits(tensor)

    def put(self, tensor: torch.Tensor) -> OnDisk:
        """``tensor`` written to a new file of the folder."""
        return OnDisk(tensor, self.root / f"{next(self._counter)}.bin")


_ACTIVE: contextvars.ContextVar[ActivationStore | None] = contextvars.ContextVar(
    "activation_store", default=None
)


def active_store() -> ActivationStore | None:
    """The store of the innermost :func:`offloaded_activations` context (None outside one)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def offloaded_activations(min_bytes: int = 1 << 20, folder: str | Path | None = None) -> Iterator[Path]:
    """Run forward and backward passes inside: saved tensors of ``min_bytes`` or more live on disk.

    Entering also calls :func:`map_large_allocations`, so what the passes free leaves the process.

    ``folder``: where the temporary folder is made (None: the system's temporary directory).
    Yields the temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="anobench-activations-", dir=folder) as tmp:
        store = ActivationStore(Path(tmp), min_bytes)

        def pack(tensor: torch.Tensor) -> torch.Tensor | OnDisk:
            return store.put(tensor) if store.keeps(tensor) else tensor

        def unpack(packed: torch.Tensor | OnDisk) -> torch.Tensor:
            return packed.read() if isinstance(packed, OnDisk) else packed

        map_large_allocations()
        token = _ACTIVE.set(store)
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                yield store.root
        finally:
            _ACTIVE.reset(token)

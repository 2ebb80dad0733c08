"""An exclusive lock on an output folder, so two processes never write into the same one.

The lock is an ``fcntl.flock`` on ``<folder>/.anobench.lock``; the file holds the holder's pid,
host and command line, which a refused process names. The kernel drops the lock when its holder
exits (even when it is killed), so a stale lock file is simply taken over. Readers take no lock.

Example:
    >>> from anobench.generation.locking import FolderLock
    >>> with FolderLock("runs/quick"):  # doctest: +SKIP
    ...     ...  # write into runs/quick; a second writer gets a one-line error
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from anobench.generation.errors import GenerationInputError

LOCK_FILE = ".anobench.lock"


class FolderLock:
    """Hold ``<folder>/.anobench.lock`` exclusively from :meth:`acquire` (or ``with``) to :meth:`release`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder), or raise naming the process that holds it.

        Raises:
            GenerationInputError: another process holds the lock.
        """
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise GenerationInputError(
                f"{self.folder}: in use by {holder}; wait for it to finish or use another --out"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; the next writer takes it over)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    __del__ = release  # a lock object dropped without release() frees its lock too

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content)
        return f"process {holder['pid']} on {holder['host']} ({holder['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"

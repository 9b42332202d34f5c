"""Write a file whole or not at all: the one atomic writer (lock file, CLI outputs,
batch progress ledgers).

The text goes to a temporary file beside the target, is fsynced, and replaces the target
in one rename; the folder is fsynced so the rename survives a crash. A reader sees the old
file or the new one, never half of either, and a failure leaves the target untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

__all__ = ["write_atomic"]


def write_atomic(target: str | os.PathLike[str], text: str | Callable[[TextIO], None]) -> None:
    """Replace `target` with `text`, or with what `text(handle)` writes (for streams)."""
    path = Path(target)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                text(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory fsync
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

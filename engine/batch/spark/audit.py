"""Audit on Spark: a hash-chained segment per task, then a manifest chaining their heads.

The segments and the manifest are engine.compliance.audit.segments'; this is the job side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def segments_folder(audit: str | os.PathLike[str]) -> str:
    folder = Path(audit)
    folder.mkdir(parents=True, exist_ok=True)
    return os.fspath(folder.resolve())


def fresh_segment(folder: str, partition: int) -> str:
    from engine.compliance.audit.segments import segment_path

    path = segment_path(folder, partition)
    for suffix in ("", "-wal", "-shm"):  # a retried task starts its segment over
        Path(path + suffix).unlink(missing_ok=True)
    return path


def seal_audit(audit: str | os.PathLike[str]) -> Any:
    """Write the manifest chaining the segments' heads (see engine.compliance.audit.segments)."""
    from engine.compliance.audit.segments import seal

    return seal(audit)

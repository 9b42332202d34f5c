"""JSON Lines part files written by the tasks themselves, on a filesystem every executor
and the driver reach (this machine's, for local[N]).

A million rows of results is 1.4 GB of text: through Spark's own writer it crosses from
the Python worker into the JVM and out again, which cost local[2] as much CPU as the
valuing itself. Written by the Python worker that made it, it is written once. Each
task writes `.partial-PPPPP-A.jsonl` (partition, attempt) and renames it to
`part-PPPPP.jsonl` when its last row is written, so a failed or retried attempt leaves
nothing the join would take; `files._join` puts the parts in row order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def parts_folder(folder: str | os.PathLike[str]) -> str:
    """`folder`, made empty and absolute (on the driver, before any task runs)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.iterdir():
        if stale.is_file():
            stale.unlink()
    return os.fspath(path.resolve())


class PartFile:
    """One task's part file: lines appended as valued, renamed into place on commit."""

    def __init__(self, folder: str, partition: int) -> None:
        from pyspark import TaskContext

        context = TaskContext.get()
        attempt = context.attemptNumber() if context is not None else 0
        self._final = os.path.join(folder, f"part-{partition:05d}.jsonl")
        self._partial = os.path.join(folder, f".partial-{partition:05d}-{attempt}.jsonl")
        self._handle = open(self._partial, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._done = False

    def write(self, lines: Sequence[str]) -> None:
        if lines:
            self._handle.write("\n".join(lines))
            self._handle.write("\n")

    def commit(self) -> None:
        self._handle.close()
        os.replace(self._partial, self._final)
        self._done = True

    def discard(self) -> None:
        if not self._done:
            self._handle.close()
            Path(self._partial).unlink(missing_ok=True)

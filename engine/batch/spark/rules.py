"""The rules as shipped to executors: a snapshot's exact bytes, compiled once per process.

Rules travel to executors as the exact bytes of a snapshot, checked there against its
rules id (the digest of every file), so every executor values with the rules the driver
loaded even if the files change meanwhile. Each executor Python process compiles them
once and keeps them for every later task (Spark reuses its Python workers); with
`compile_log` each compile appends `PID RULES_ID` to a file, so it can be counted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.batch.spark.errors import SparkJobError
from engine.loading.snapshot import Snapshot, load_snapshot, snapshot_from_texts


@dataclass(frozen=True)
class RulesPayload:
    """The exact bytes of a snapshot, small enough to travel in every task's closure."""

    texts: Mapping[str, bytes]
    name: str
    rules_id: str

    @classmethod
    def of(cls, rules: Snapshot | str | os.PathLike[str]) -> RulesPayload:
        snapshot = rules if isinstance(rules, Snapshot) else load_rules(rules)
        return cls(dict(snapshot.texts), snapshot.rules.source, snapshot.rules_id)


def load_rules(root: str | os.PathLike[str]) -> Snapshot:
    # The same checks as `tiv batch`: the rules load (examples and lock are validate's).
    return load_snapshot(Path(root), check_examples=False, check_lock=False)


_SNAPSHOTS: dict[str, Snapshot] = {}  # rules id -> compiled, per executor Python process
_SNAPSHOT_LOCK = threading.Lock()


def compiled_rules(payload: RulesPayload, compile_log: str | None) -> Snapshot:
    """This process's compiled rules for `payload`: compiled on first use, then kept."""
    with _SNAPSHOT_LOCK:
        found = _SNAPSHOTS.get(payload.rules_id)
        if found is not None:
            return found
        snapshot = snapshot_from_texts(payload.texts, payload.name)
        if snapshot.rules_id != payload.rules_id:  # bytes damaged on the way: refuse
            raise SparkJobError(
                f"the rules rebuilt on this executor have id {snapshot.rules_id}, "
                f"not {payload.rules_id}"
            )
        _SNAPSHOTS[payload.rules_id] = snapshot
        if compile_log:
            with open(compile_log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {payload.rules_id}\n")  # one short append
    return snapshot


def compiles(compile_log: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(pid, rules id) of every compile recorded in `compile_log`."""
    path = Path(compile_log)
    if not path.exists():
        return []
    return [
        (int(pid), rid)
        for pid, rid in (line.split() for line in path.read_text(encoding="utf-8").splitlines())
    ]

"""The audit chain the workflow writes to: the one place this package imports it.

Every state change of the book (quote, review, bind, cancel, endorse) is appended to the
engine's tamper-evident audit log as a record of kind `application.<event>`, holding the
shipment facts and the event with the valuation it rests on. The log is a SQLite file
whose connection belongs to one thread, so `AuditChain` hands every call to a thread of
its own; the book may then be used from any number of threads (the service, the bench).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from engine import RuleSet
from engine.compliance.audit import AuditError, AuditLog


class AuditTarget(Protocol):
    """What the book records in: `engine.AuditSink`'s `record`."""

    def record(self, kind: str, facts: Mapping[str, Any], result: Any, rules: RuleSet) -> str: ...


class AuditChain:
    """An AuditLog (or any AuditTarget) used from one dedicated thread."""

    def __init__(self, target: str | os.PathLike[str] | AuditTarget) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiv-book-audit")
        if isinstance(target, AuditLog):
            # Its SQLite connection belongs to the thread that opened it: open the same
            # store again on ours (the mask is the store's own, kept in the file).
            target = target.path
        if isinstance(target, str | os.PathLike):
            self._log: AuditTarget = self._thread.submit(AuditLog, target).result()
        else:
            self._log = target

    def record(self, kind: str, facts: Mapping[str, Any], result: Any, rules: RuleSet) -> str:
        return str(self._thread.submit(self._log.record, kind, facts, result, rules).result())

    def close(self) -> None:
        close = getattr(self._log, "close", None)
        if close is not None:
            self._thread.submit(close).result()
        self._thread.shutdown()


__all__ = ["AuditChain", "AuditError", "AuditTarget"]

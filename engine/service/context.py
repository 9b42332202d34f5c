"""What the handlers share: settings, the rules, metrics, the audit log, the thread pool.

Valuations run in a thread pool of `threads` threads, so the event loop keeps answering
while they compute; the durable_rules matcher serialises its own calls. Each request has
`time_budget_s` from arrival to answer, waiting for a thread included: past it, 503 and a
Retry-After. A request takes `state.current` once: a reload meanwhile does not change its
rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from engine.compliance.audit import AuditError, AuditLog, AuditRecord
from engine.compliance.audit.record import Recordable
from engine.errors import (
    Problem,
    RulesError,
)
from engine.ruleset import RuleSet
from engine.service.auth import Authenticator
from engine.service.errors import ApiError
from engine.service.heap import FrozenHeap
from engine.service.metrics import Metrics
from engine.service.settings import Settings
from engine.service.state import ReloadOutcome, RulesState

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines join its log

T = TypeVar("T")


class Service:
    """What the handlers share: settings, the rules, metrics, the audit log, the pool."""

    def __init__(self, settings: Settings, state: RulesState) -> None:
        self.settings = settings
        self.state = state
        self.metrics = Metrics()
        self.authenticate = Authenticator(settings)
        self.audit = open_audit(settings)
        self.limiter: anyio.CapacityLimiter | None = None  # made in the event loop
        self.ready = False
        grace = settings.time_budget_s + settings.valuation_budget_s
        self.heap = FrozenHeap(grace) if settings.freeze_heap else None

    def reload(self) -> ReloadOutcome:
        """`state.reload`, letting the collector see the replaced rules (engine.service.heap).

        Raises RulesError as `state.reload` does."""
        outcome = self.state.reload()
        if self.heap is not None:
            self.heap.replaced()
        return outcome

    async def in_thread(self, func: Callable[[], T], deadline: float) -> T:
        """Run `func` in the valuation pool; 503 if the request's budget runs out first."""
        if self.limiter is None:  # the app was run without its lifespan (a bare ASGI test)
            self.limiter = anyio.CapacityLimiter(self.settings.threads)
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            with anyio.fail_after(remaining):
                return await anyio.to_thread.run_sync(
                    func, abandon_on_cancel=True, limiter=self.limiter
                )
        except TimeoutError:
            # The thread, if it started, finishes its current shipment and its result is
            # dropped: Python threads cannot be stopped, batch work checks the deadline.
            raise self.over_budget() from None

    def over_budget(self) -> ApiError:
        budget = self.settings.time_budget_s
        return ApiError(
            503,
            "time_budget",
            Problem(
                "request.time_budget",
                f"the request did not finish within the time budget of {budget:g} s; "
                "retry later or send fewer shipments per request",
            ),
            headers={"Retry-After": str(max(1, round(budget)))},
        )


def open_audit(settings: Settings) -> _AuditThread | None:
    if settings.audit is None:
        return None
    return _AuditThread(settings.audit)


class _AuditThread:
    """The audit log, used from one thread of its own.

    Valuations run on many pool threads, but a SQLite connection belongs to the thread
    that made it: every call is handed to this one thread, which also serialises writes
    (across processes, the log's own transactions do).
    """

    def __init__(self, path: Path) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiv-audit")
        self._log = self._thread.submit(AuditLog, path).result()

    def record(
        self, kind: str, facts: Mapping[str, Any], result: Recordable, rules: RuleSet
    ) -> str:
        return str(self._thread.submit(self._log.record, kind, facts, result, rules).result())

    def get(self, record_id: str) -> AuditRecord | None:
        """The record, or None when there is none with this id."""
        try:
            return self._thread.submit(self._log.get, record_id).result()
        except AuditError:
            return None


async def watch(service: Service) -> None:
    """Reload when the rule files change on disk (polling: works on every filesystem)."""
    while True:
        await anyio.sleep(service.settings.watch_s)
        if not service.state.changed_on_disk():
            continue
        try:
            outcome = await anyio.to_thread.run_sync(service.reload)
        except RulesError as error:
            service.metrics.reload("refused")
            log.warning(
                "tiv: rule files changed but are invalid; keeping %s: %s",
                service.state.current.rules_id,
                error,
            )
        except Exception:  # a bug must not stop the watcher for good
            log.exception("tiv: reload after a file change failed")
        else:
            service.metrics.reload("ok")
            log.info(
                "tiv: rule files changed; reloaded %s -> %s", outcome.previous, outcome.current
            )

"""Impact runs in the background: one thread per run, progress as it goes, and cancel.

A run belongs to the key that started it; no other key sees it. Runs live in this
process only (a restart forgets them) and the newest `KEEP` are kept.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.service.ui import compliance

KEEP = 20
CHUNK = 25  # shipments between progress reports: often enough for a bar, cheap


class Cancelled(Exception):
    """Raised from the progress callback to stop a run between chunks."""


@dataclass
class Job:
    id: str
    owner: str  # the key's name
    before: str
    after: str
    corpus: str  # what the corpus was, for the page
    state: str = "running"  # running, done, cancelled, failed
    done: int = 0
    total: int = 0
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    report: Any = None
    details: list[Any] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
        }


class Jobs:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, owner: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def start(
        self,
        owner: str,
        texts: Mapping[str, bytes],
        before: str,
        after: str,
        shipments: Iterable[Any],
        corpus: str,
    ) -> Job:
        """Write the corpus to a temporary file and value it under both versions."""
        job = Job(uuid.uuid4().hex, owner, before, after, corpus)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP:
                oldest = next(iter(self._jobs))
                self._jobs.pop(oldest).cancel.set()
        folder = tempfile.mkdtemp(prefix="tiv-ui-impact-")
        path = Path(folder) / "corpus.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for item in shipments:
                out.write(item if isinstance(item, str) else json.dumps(item, default=str))
                out.write("\n")
        thread = threading.Thread(
            target=self._run, args=(job, dict(texts), path), name=f"tiv-impact-{job.id[:8]}"
        )
        thread.daemon = True
        thread.start()
        return job

    def _run(self, job: Job, texts: dict[str, bytes], path: Path) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            if job.cancel.is_set():
                raise Cancelled

        try:
            report, details = compliance.impact(
                texts, job.before, job.after, path, workers=1, progress=progress, chunk=CHUNK
            )
        except Cancelled:
            job.state = "cancelled"
        except Exception as error:  # a bad corpus or version: shown on the job's page
            job.state, job.error = "failed", f"{type(error).__name__}: {error}"
        else:
            job.report, job.details, job.state = report, details, "done"
        finally:
            job.seconds = time.monotonic() - job.started
            path.unlink(missing_ok=True)
            path.parent.rmdir()

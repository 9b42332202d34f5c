"""Spark's stages as progress lines (tasks done of total)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class StageProgress:
    """Prints Spark's active stages (tasks done / total) to `out` twice a second."""

    def __init__(self, spark: Any, out: Callable[[str], None], every: float = 0.5) -> None:
        self._spark = spark
        self._out = out
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StageProgress:
        try:
            self._tracker = self._spark.sparkContext.statusTracker()
        except Exception:  # Spark Connect has no status tracker on the client
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last = ""
        while not self._stop.wait(self._every):
            parts = []
            for stage_id in sorted(self._tracker.getActiveStageIds()):
                info = self._tracker.getStageInfo(stage_id)
                if info is not None:
                    parts.append(
                        f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks"
                        + (f" ({info.numActiveTasks} running)" if info.numActiveTasks else "")
                    )
            text = "; ".join(parts)
            if text and text != last:
                self._out(text)
                last = text

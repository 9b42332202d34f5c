"""The rules a server values with: loaded once, checked whole, swapped atomically.

In: a rule repository folder. Out: `RulesState`, which holds the current `Snapshot`
(engine.loading.snapshot) behind one reference so that a reload swaps it in a single
assignment. A request reads `state.current` once and keeps that Snapshot to the end:
a reload during the request does not change the rules it values with.

A reload that fails (a YAML or meaning error, an example that no longer holds) raises
`RulesError` listing every problem and leaves the current Snapshot in place.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RulesError
from engine.loading.snapshot import Snapshot, load_snapshot
from engine.loading.sources import RULE_FOLDERS


def folder_fingerprint(root: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Path, size and mtime of every YAML file under the rule folders: cheap change detection.

    A change here only triggers a full load; the load itself decides what the rules are.
    """
    base = Path(root)
    found = []
    for folder in RULE_FOLDERS:
        top = base / folder
        if not top.is_dir():
            continue
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                if name.endswith(".yaml"):
                    path = os.path.join(dirpath, name)
                    try:
                        stat = os.stat(path)
                    except OSError:
                        continue  # removed while we looked: the next look sees it gone
                    found.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


@dataclass(frozen=True)
class ReloadOutcome:
    previous: str
    current: str
    changed: bool


class RulesState:
    """The current Snapshot, replaced whole by `reload`; readers never see half a swap."""

    def __init__(self, root: str | Path, snapshot: Snapshot | None = None) -> None:
        self.root = Path(root)
        self._reload_lock = threading.Lock()  # one reload at a time; readers never wait
        self._current = snapshot or load_snapshot(self.root)
        self._fingerprint = folder_fingerprint(self.root)
        self.reloads_ok = 0
        self.reloads_refused = 0
        self.last_refusal: RulesError | None = None

    @property
    def current(self) -> Snapshot:
        # A single attribute read: atomic, so a request holds one whole Snapshot.
        return self._current

    def reload(self) -> ReloadOutcome:
        """Load the folder anew and swap it in; on RulesError the old rules stay."""
        with self._reload_lock:
            fingerprint = folder_fingerprint(self.root)
            previous = self._current
            try:
                fresh = load_snapshot(self.root)
            except RulesError as error:
                self.reloads_refused += 1
                self.last_refusal = error
                self._fingerprint = fingerprint  # do not retry the same broken files
                raise
            self._current = fresh
            self._fingerprint = fingerprint
            self.reloads_ok += 1
            self.last_refusal = None
            return ReloadOutcome(
                previous.rules_id, fresh.rules_id, previous.rules_id != fresh.rules_id
            )

    def changed_on_disk(self) -> bool:
        """Whether the rule files differ (by size or mtime) from the last load attempt."""
        return folder_fingerprint(self.root) != self._fingerprint

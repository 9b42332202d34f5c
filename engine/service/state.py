"""The rules a server or a batch values with: loaded once, checked whole, swapped atomically.

In: a rule repository folder. Out: a `Snapshot` (the `RuleSet`, the exact bytes of every
file it was built from, and `rules_id`, a digest of those bytes) and `RulesState`, which
holds the current Snapshot behind one reference so that a reload swaps it in a single
assignment. A request reads `state.current` once and keeps that Snapshot to the end:
a reload during the request does not change the rules it values with.

A reload that fails (a YAML or meaning error, an example that no longer holds) raises
`RulesError` listing every problem and leaves the current Snapshot in place.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.api import load_rules
from engine.errors import Problem, RulesError
from engine.examples import run_examples
from engine.loading.sources import RULE_FOLDERS, FileSystemSource, MemorySource
from engine.ruleset import RuleSet


class _RecordingSource:
    """A FileSystemSource that keeps the bytes it hands out.

    The rules are compiled from exactly the bytes kept, so what the service serves as a
    pack's YAML and sha256 is what it values with, even if the file changes on disk
    between the load and the request.
    """

    def __init__(self, root: Path) -> None:
        self._inner = FileSystemSource(root)
        self.texts: dict[str, bytes] = {}

    @property
    def name(self) -> str:
        return self._inner.name

    def paths(self) -> list[str]:
        return self._inner.paths()

    def read(self, path: str) -> bytes:
        data = self._inner.read(path)
        self.texts[path] = data
        return data


@dataclass(frozen=True)
class Snapshot:
    """One loaded, checked rule repository and the bytes it came from."""

    rules: RuleSet
    texts: Mapping[str, bytes]  # every file read: rule files and the examples' facts files
    rules_id: str
    loaded_at: datetime.datetime

    def source(self) -> MemorySource:
        """A source that rebuilds this very RuleSet elsewhere (a batch worker process)."""
        return MemorySource(self.texts, name=self.rules.source)


def rules_id(rules: RuleSet) -> str:
    """A digest of every rule file's path and sha256: equal ids, equal rules."""
    digest = hashlib.sha256()
    for item in sorted(rules.files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.sha256}\n".encode())
    return digest.hexdigest()[:16]


def load_snapshot(
    root: str | Path, *, check_examples: bool = True, check_lock: bool = True
) -> Snapshot:
    """Load, validate and compile a repository and check it against its rules.lock; with
    `check_examples`, every example of every pack must hold too (as `tiv validate`
    requires). Raises RulesError listing every problem."""
    source = _RecordingSource(Path(root))
    rules = load_rules(source)
    lock_problems = _lock_problems(Path(root), rules) if check_lock else []
    if lock_problems:
        raise RulesError(lock_problems)
    if check_examples:
        failed = [o for o in run_examples(rules) if not o.passed]
        if failed:
            raise RulesError(
                Problem(
                    "example.failed",
                    f"example {o.name!r} of {o.pack} does not hold: {'; '.join(o.mismatches)}",
                    o.where,
                )
                for o in failed
            )
    return Snapshot(rules, dict(source.texts), rules_id(rules), datetime.datetime.now(datetime.UTC))


def _lock_problems(root: Path, rules: RuleSet) -> list[Problem]:
    """What `tiv validate` says of rules.lock (published files changed, unlocked, gone)."""
    try:
        from engine import lock
    except ImportError:  # a build without rule locking
        return []
    return list(lock.check_lock(root, rules))


def snapshot_from_texts(texts: Mapping[str, bytes], name: str) -> Snapshot:
    """Rebuild a Snapshot from another's texts (no example run: the original checked)."""
    rules = load_rules(MemorySource(texts, name=name))
    return Snapshot(rules, dict(texts), rules_id(rules), datetime.datetime.now(datetime.UTC))


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

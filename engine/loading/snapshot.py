"""A `Snapshot`: one loaded, checked rule repository and the exact bytes it was built from.

In: a rule repository folder (or the texts of another Snapshot). Out: the `RuleSet`, the
bytes of every file read, `rules_id` (a digest of those bytes) and the load time. A server
swaps Snapshots whole on reload; a batch sends a Snapshot's texts to its worker processes,
so every process values with the very same rules even if the files change meanwhile.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.api import load_rules
from engine.compliance import lock
from engine.errors import Problem, RulesError
from engine.examples import run_examples
from engine.loading.sources import FileSystemSource, MemorySource
from engine.ruleset import RuleSet

__all__ = ["Snapshot", "load_snapshot", "rules_id", "snapshot_from_texts"]


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
    lock_problems = lock.check_lock(Path(root), rules) if check_lock else []
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


def snapshot_from_texts(texts: Mapping[str, bytes], name: str) -> Snapshot:
    """Rebuild a Snapshot from another's texts (no example run: the original checked)."""
    rules = load_rules(MemorySource(texts, name=name))
    return Snapshot(rules, dict(texts), rules_id(rules), datetime.datetime.now(datetime.UTC))

"""Replay: a recorded valuation re-evaluated with the rule files it names, compared figure
by figure (`ReplayReport`). The files come from the repository when their bytes still
match the recorded sha256, else from git history; masked fields are reported as unusable.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.compliance.audit.masking import MASK_MARKER
from engine.compliance.audit.record import AuditError, AuditModel, AuditRecord
from engine.compliance.lock import from_git
from engine.errors import FactsError, TivError, json_path

REFERENCE_DIR = "rules/reference/"


class Difference(AuditModel):
    path: str = Field(description="where in the result, e.g. components.freight, trace[3].value")
    recorded: Any
    replayed: Any


class FileSource(AuditModel):
    path: str
    sha256: str
    found: str = Field(description="working tree, git <commit>, or changed (current bytes)")


class ReplayReport(AuditModel):
    record: str
    seq: int
    identical: bool
    differences: list[Difference]
    notes: list[str] = Field(description="what the replay could not reproduce exactly, and why")
    files: list[FileSource]
    masked: list[str]


def replay(
    record: AuditRecord, root: str | os.PathLike[str], *, current: bool = False
) -> ReplayReport:
    """Re-evaluate a record's facts with the rule files it names, as recorded.

    Each file is read from the repository at `root` when its bytes still match, else from
    git history; when neither has them, AuditError (exit 3), unless `current`: then the
    present bytes are used and the replay reports what changed.
    """
    from engine import available_matchers, default_matcher
    from engine.api import claim, load_rules, value

    base = Path(root)
    pinned: dict[str, bytes] = {}
    files: list[FileSource] = []
    for used in record.rule_files:
        data, found = _recorded_bytes(base, used.path, used.sha256)
        if data is None:
            if not current:
                why = "is gone" if found == "gone" else "has changed"
                raise AuditError(
                    f"cannot replay record {record.id}: {used.path} {why} since it was "
                    f"recorded (sha256 {used.sha256[:12]}…) and git history has no copy; "
                    "restore it, or replay with --current-rules to compare with today's files",
                    exit_code=3,
                )
            files.append(FileSource(path=used.path, sha256=used.sha256, found=f"{found} (current)"))
            continue
        pinned[used.path] = data
        files.append(FileSource(path=used.path, sha256=used.sha256, found=found))

    notes: list[str] = []
    try:
        recorded_paths = frozenset(used.path for used in record.rule_files)
        rules = load_rules(_PinnedSource(base, pinned, recorded_paths))
    except TivError as exc:
        raise AuditError(
            f"cannot replay record {record.id}: the rules do not load: {exc}", 3
        ) from None
    recorded = dict(record.result)
    if record.kind not in ("valuation", "claim"):
        raise AuditError(f"cannot replay record {record.id}: a {record.kind} record", exit_code=2)
    valued = recorded.get("valuation") if record.kind == "claim" else recorded
    valued = valued if isinstance(valued, dict) else {}
    policy = valued.get("policy") or {}
    matchers = {m.name: m for m in available_matchers()}
    matcher = matchers.get(record.matcher)
    if matcher is None:
        matcher = default_matcher()
        notes.append(
            f"matcher {record.matcher} is not available here; replayed with {matcher.name}"
        )
    if record.engine_version != _engine_version():
        notes.append(f"recorded by engine {record.engine_version}, replayed by {_engine_version()}")
    if record.masked:
        notes.append(
            "masked fields were not stored and could not be used: " + ", ".join(record.masked)
        )
    options: dict[str, Any] = {
        "policy": f"{policy.get('id')}@{policy.get('version')}",
        "as_of": datetime.date.fromisoformat(str(valued.get("as_of"))),
        "allow_draft": policy.get("status") == "draft",
        "matcher": matcher,
    }
    try:
        if record.kind == "claim":
            facts = record.facts
            result: Any = claim(rules, facts["shipment"], facts["loss"], **options)
        else:
            result = value(rules, record.facts, **options)
    except FactsError as exc:
        prefix = "shipment." if record.kind == "claim" else ""
        needed = [
            prefix + p.location.path
            for p in exc.problems
            if _under(prefix + p.location.path, record.masked)
        ]
        if needed:
            raise AuditError(
                f"cannot replay record {record.id}: it needs the masked field(s) "
                f"{', '.join(needed)}, which were not stored",
                exit_code=2,
            ) from None
        raise AuditError(f"cannot replay record {record.id}: {exc}", exit_code=2) from None
    except TivError as exc:
        failed = [Difference(path="", recorded="a result", replayed=f"error: {exc}")]
        return ReplayReport(
            record=record.id,
            seq=record.seq,
            identical=False,
            differences=failed,
            notes=notes,
            files=files,
            masked=record.masked,
        )
    replayed = result.model_dump(mode="json", exclude={"audit_id"})
    differences: list[Difference] = []
    _compare(recorded, replayed, (), differences, notes)
    return ReplayReport(
        record=record.id,
        seq=record.seq,
        identical=not differences,
        differences=differences,
        notes=notes,
        files=files,
        masked=record.masked,
    )


def _engine_version() -> str:
    from engine._version import __version__

    return __version__


# Result fields that say how, not what: reported as notes, not as differences.
_NOT_FIGURES = frozenset({"engine_version", "matcher", "audit_id"})


def _compare(
    recorded: Any,
    replayed: Any,
    at: tuple[str | int, ...],
    out: list[Difference],
    notes: list[str],
) -> None:
    if recorded == MASK_MARKER:
        return
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in recorded:
            if key in _NOT_FIGURES:
                continue
            if key not in replayed:
                out.append(
                    Difference(path=json_path((*at, key)), recorded=recorded[key], replayed=None)
                )
            else:
                _compare(recorded[key], replayed[key], (*at, key), out, notes)
        new = [k for k in replayed if k not in recorded and k not in _NOT_FIGURES]
        if new:
            notes.append(
                "fields the record does not have (the engine added them since): "
                + ", ".join(json_path((*at, k)) for k in new)
            )
        return
    if isinstance(recorded, list) and isinstance(replayed, list):
        for index, (old, now) in enumerate(zip(recorded, replayed, strict=False)):
            _compare(old, now, (*at, index), out, notes)
        if len(recorded) != len(replayed):
            out.append(
                Difference(
                    path=json_path(at) + "[length]",
                    recorded=len(recorded),
                    replayed=len(replayed),
                )
            )
        return
    if recorded != replayed:
        out.append(Difference(path=json_path(at), recorded=recorded, replayed=replayed))


def _under(path: str, masked: Sequence[str]) -> bool:
    return any(path == m or path.startswith((m + ".", m + "[")) for m in masked)


@dataclass
class _PinnedSource:
    """The repository as it is, except the recorded files, which read as recorded."""

    root: Path
    pinned: Mapping[str, bytes]
    recorded: frozenset[str] = frozenset()  # every file the record names

    @property
    def name(self) -> str:
        return f"{self.root.resolve()} (as recorded)"

    def paths(self) -> list[str]:
        from engine.loading.sources import FileSystemSource

        # Only rule files are listed; a table's CSV (pinned too) is read through its pack.
        pinned = {path for path in self.pinned if path.endswith(".yaml")}
        # A record names every reference file it was valued with: one added since (the
        # goods-category vocabulary, say) would change how its facts read, so it is left out.
        current = {
            path
            for path in FileSystemSource(self.root).paths()
            if not path.startswith(REFERENCE_DIR) or path in self.recorded
        }
        return sorted(current | pinned)

    def read(self, path: str) -> bytes:
        if path in self.pinned:
            return self.pinned[path]
        return (self.root / path).read_bytes()


def _recorded_bytes(root: Path, path: str, sha256: str) -> tuple[bytes | None, str]:
    """The bytes with this sha256: from the working tree, else from git history."""
    try:
        data = (root / path).read_bytes()
    except OSError:
        state = "gone"
    else:
        if hashlib.sha256(data).hexdigest() == sha256:
            return data, "working tree"
        state = "changed"
    found = from_git(root, path, sha256)
    if found is not None:
        return found
    return None, state

"""The audit log of a Spark run: one hash-chained segment per task, and a manifest chaining them.

In: an audit folder written by `engine.batch.spark.value_dataframe(..., audit=DIR)`: each task
appends its rows' records to its own segment, `segment-PPPPP.db` (PPPPP: the partition),
an ordinary tiv audit store (`engine.audit.AuditLog`: SQLite, records hash-chained, see
there). Tasks cannot share one chain without a lock across machines; a chain per task
needs none. Out: `seal` writes `manifest.json` once the job is done; `verify` checks it.

The manifest lists the segments in partition order. Each entry holds the segment's file
name, its record count and its head (`SEQ:HASH` of its last record, as `tiv audit
verify` prints it) and `prev`, the previous entry's hash; its own `hash` is the sha256
of its canonical JSON without the hash. `head` is the last entry's hash: kept outside the
folder, it anchors the whole run as a segment's head anchors a segment.

`verify` reports every problem, not only the first: the manifest altered (an entry that
does not hash, or does not follow the one before); a segment listed but missing; a
segment not listed; a segment whose own chain is broken (altered, deleted, reordered or
inserted records, as `AuditLog.verify` finds them); a segment whose head or record count
differs from the manifest's, and segments swapped (a file holding the records the
manifest lists under another name).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.compliance.audit import GENESIS, AuditLog, canonical_json, digest

MANIFEST = "manifest.json"
FORMAT = 1
_SEGMENT = re.compile(r"segment-([0-9]{5,})\.db")


def segment_path(folder: str | os.PathLike[str], partition: int) -> str:
    return os.path.join(os.fspath(folder), f"segment-{partition:05d}.db")


def is_segmented(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a segmented audit folder (not a single audit store file)."""
    return Path(path).is_dir()


def _segments(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if _SEGMENT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_SEGMENT.fullmatch(p.name).group(1)))  # type: ignore[union-attr]


def _entry_hash(entry: dict[str, Any]) -> str:
    return digest(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


@dataclass(frozen=True)
class Sealed:
    path: str
    segments: int
    records: int
    head: str


def seal(folder: str | os.PathLike[str]) -> Sealed:
    """Check every segment of `folder` and write its manifest (atomically).

    Raises ValueError if a segment's own chain is broken: a run is sealed only whole."""
    base = Path(folder)
    entries: list[dict[str, Any]] = []
    previous = GENESIS
    total = 0
    for path in _segments(base):
        with AuditLog(path, create=False) as log:
            report = log.verify()
        if not report.ok:
            problem = report.first_bad.message if report.first_bad else "broken"
            raise ValueError(f"{path.name}: {problem}")
        entry: dict[str, Any] = {
            "segment": path.name,
            "records": report.records,
            "head": report.head,
            "prev": previous,
        }
        entry["hash"] = _entry_hash(entry)
        entries.append(entry)
        previous = entry["hash"]
        total += report.records
    manifest = {"format": FORMAT, "segments": entries, "records": total, "head": previous}
    partial = base / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    partial.replace(base / MANIFEST)
    return Sealed(str(base / MANIFEST), len(entries), total, previous)


@dataclass
class SegmentsReport:
    ok: bool
    path: str
    segments: int = 0
    records: int = 0
    head: str | None = None  # the manifest's head, to keep as the run's anchor
    problems: list[str] = field(default_factory=list)


def verify(folder: str | os.PathLike[str], anchor: str | None = None) -> SegmentsReport:
    """Check the manifest's chain, every segment's chain, and that they agree."""
    base = Path(folder)
    report = SegmentsReport(ok=False, path=str(base))
    try:
        manifest = json.loads((base / MANIFEST).read_text(encoding="utf-8"))
        entries = list(manifest["segments"])
    except FileNotFoundError:
        report.problems.append(f"no {MANIFEST} in {base}: the run was not sealed")
        return report
    except (ValueError, KeyError, TypeError):
        report.problems.append(f"{MANIFEST} is not a manifest: it was altered")
        return report
    problems = report.problems
    previous = GENESIS
    for position, entry in enumerate(entries):
        name = entry.get("segment") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("hash") != _entry_hash(entry):
            problems.append(f"{MANIFEST}: entry {position + 1} ({name}) was altered")
        elif entry.get("prev") != previous:
            problems.append(
                f"{MANIFEST}: entry {position + 1} ({name}) does not follow the entry before "
                "it: entries were removed or reordered"
            )
        previous = entry.get("hash", "") if isinstance(entry, dict) else ""
    if manifest.get("head") != previous:
        problems.append(f"{MANIFEST}: its head does not match its last entry: it was altered")
    if anchor and manifest.get("head") != anchor:
        problems.append(f"{MANIFEST}: its head is not the anchor {anchor}: the run was rewritten")
    listed = {e.get("segment"): e for e in entries if isinstance(e, dict)}
    by_head = {e.get("head"): e.get("segment") for e in entries if isinstance(e, dict)}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("segment"))
        path = base / name
        if not path.is_file():
            problems.append(f"{name}: missing (listed in {MANIFEST})")
            continue
        try:
            with AuditLog(path, create=False) as log:
                found = log.verify()
        except Exception as error:  # not a SQLite file any more, unreadable
            problems.append(f"{name}: cannot be read as an audit store ({error})")
            continue
        report.records += found.records
        if not found.ok:
            bad = found.first_bad.message if found.first_bad else "broken chain"
            problems.append(f"{name}: {bad}")
        elif found.head != entry.get("head"):
            other = by_head.get(found.head)
            if other and other != name:
                problems.append(
                    f"{name}: holds the records the manifest lists as {other}: segments "
                    "were swapped or reordered"
                )
            else:
                problems.append(
                    f"{name}: its head {found.head} is not the sealed head {entry.get('head')} "
                    f"({found.records} records, sealed with {entry.get('records')})"
                )
    for path in _segments(base):
        if path.name not in listed:
            problems.append(f"{path.name}: not listed in {MANIFEST}: added after sealing")
    report.segments = len(entries)
    report.head = manifest.get("head")
    report.ok = not problems
    return report


def render(report: SegmentsReport) -> str:
    if report.ok:
        return (
            f"ok: {report.path}: {report.segments} segment(s), {report.records} record(s), "
            f"every chain intact\nhead: {report.head}\n"
            "Keep the head outside this folder; `tiv audit verify DIR --anchor HEAD` later "
            "proves no segment was rewritten."
        )
    return "\n".join([f"BROKEN: {report.path}", *(f"  {p}" for p in report.problems)])


def verify_command(folder: str, anchor: str | None, output_format: str) -> int:
    """`tiv audit verify DIR`: print the report; 0 when intact, 1 when not."""
    import sys
    from dataclasses import asdict

    report = verify(folder, anchor)
    if output_format == "json":
        sys.stdout.write(json.dumps(asdict(report), indent=2) + "\n")
    else:
        sys.stdout.write(render(report) + "\n")
    if not report.ok:
        print(
            f"tiv: the segmented audit log is broken: {len(report.problems)} problem(s)",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = [
    "MANIFEST",
    "Sealed",
    "SegmentsReport",
    "is_segmented",
    "seal",
    "segment_path",
    "verify",
    "verify_command",
]

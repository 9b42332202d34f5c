"""The audit log: every valuation recorded, append-only and tamper-evident, in one SQLite file.

In: valuations from `engine.value(..., audit=AuditLog(path))` (the `AuditSink` protocol),
with their canonical facts and the rule set that made them. Out: `AuditRecord`s, by id or
in order; `verify()`, a `VerifyReport` naming the first record altered, deleted, reordered
or inserted; `replay()`, the record re-evaluated with the rule files it names, compared
figure by figure in a `ReplayReport`.

Storage: SQLite in WAL mode, one file, no server. Each record is one row holding its
content as canonical JSON (sorted keys, no whitespace, UTF-8, decimals as strings, never
a binary float) and `hash`, the sha256 of that text. The content includes `seq` (1, 2, 3,
...) and `prev_hash`, the previous record's hash (64 zeros for the first), so each hash
covers the record and, through the chain, every record before it. Triggers refuse UPDATE
and DELETE; a tamperer who drops them is caught by `verify`. Deleting the newest records
is caught by SQLite's own counter of issued sequence numbers; a tamperer who rewrites that
counter too, or forges new records at the end, is caught only by an anchor: keep the head
(`SEQ:HASH`, printed by `tiv audit verify`) outside the file and pass it back to verify.

Writes: one transaction per record, `BEGIN IMMEDIATE`, so writers in several processes
take turns and keep one chain; `synchronous=FULL`, so a record is on disk when `record`
returns; a crash or kill mid-batch leaves every committed record intact.

Masking: a store can be created with a list of paths into the facts (`id`,
`goods[*].description`, `fx.*`, `charges[0].amount`). Their values are stored as
`MASK_MARKER`, and so is any text in the result equal to a masked value (the shipment id,
a figure the trace repeats). The record lists the concrete paths masked, so a replay says
which fields it could not use.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import FactsError, TivError, json_path
from engine.lock import from_git
from engine.money import plain
from engine.result import Valuation
from engine.ruleset import RuleSet

FORMAT = 1
GENESIS = "0" * 64
MASK_MARKER = "<masked>"
BUSY_TIMEOUT_MS = 60_000

# Executed one by one inside the creating transaction (executescript would commit first).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be deleted'); END""",
)


class AuditError(Exception):
    """The audit store cannot do what was asked; the message is one line for a person.

    `exit_code` is the CLI status: 2 no such record, 3 the recorded rule files are not
    available unchanged, 74 the store cannot be opened or written.
    """

    def __init__(self, message: str, exit_code: int = 74) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- the record ---------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleFileUsed(_Model):
    """One rule file a valuation used, by the sha256 of the bytes that valued."""

    role: str = Field(description="policy, base policy, country, reference, or the file's kind")
    id: str
    version: str | None = Field(None, description="for versioned files (policy packs)")
    path: str = Field(description="relative to the rule repository")
    sha256: str


class FunctionUsed(_Model):
    name: str
    version: str


class AuditRecord(_Model):
    """One recorded valuation (or, later, claim): what went in, what came out, with what."""

    format: int = FORMAT
    id: str
    seq: int = Field(description="position in the chain, from 1")
    recorded_at: str = Field(description="UTC, ISO 8601, e.g. 2025-03-14T09:26:53.589793Z")
    kind: str = Field(description="valuation, claim")
    facts: dict[str, Any] = Field(description="the canonical input facts, masked fields replaced")
    mask: list[str] = Field(description="the mask configured: paths into the facts")
    masked: list[str] = Field(description="the fields masked in this record")
    result: dict[str, Any] = Field(description="the full result with its trace, as JSON")
    rule_files: list[RuleFileUsed]
    engine_version: str
    matcher: str
    functions: list[FunctionUsed] = Field(description="custom formula functions and versions")
    prev_hash: str
    hash: str = Field(description="sha256 of the canonical JSON of every other field")

    def content(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"hash"})

    def valuation(self) -> Valuation:
        """The recorded valuation (a claim's own); AuditError if it no longer fits."""
        data = self.result.get("valuation") if self.kind == "claim" else self.result
        try:
            return Valuation.model_validate({**(data or {}), "audit_id": self.id})
        except ValidationError as exc:
            raise AuditError(
                f"record {self.id} holds a result this engine cannot read "
                f"({exc.error_count()} field problem(s)); show it with --format json",
                exit_code=1,
            ) from None

    def explained(self) -> str:
        """The recorded result explained as text, as `tiv value` or `tiv claim` prints it."""
        from engine.explaining.render import render_claim_text, render_text
        from engine.result import Claim

        if self.kind != "claim":
            return render_text(self.valuation())
        try:
            return render_claim_text(Claim.model_validate({**self.result, "audit_id": self.id}))
        except ValidationError as exc:
            raise AuditError(
                f"record {self.id} holds a claim this engine cannot read "
                f"({exc.error_count()} field problem(s)); show it with --format json",
                exit_code=1,
            ) from None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; Decimal and dates as text; floats refused."""
    return json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, float):
        raise TypeError(f"the binary float {value!r} cannot be recorded exactly; use Decimal")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# --- masking ------------------------------------------------------------------------

_MASK_TOKEN = re.compile(r"(?:^|\.)([A-Za-z_][A-Za-z0-9_]*|\*)|\[(\*|[0-9]+)\]")


def parse_mask(pattern: str) -> tuple[str | int, ...]:
    """`goods[*].description` -> ("goods", "*", "description"); ValueError if malformed."""
    parts: list[str | int] = []
    position = 0
    for match in _MASK_TOKEN.finditer(pattern):
        if match.start() != position or (match.group(0).startswith(".") and not parts):
            break
        name, index = match.groups()
        parts.append(name if name is not None else ("*" if index == "*" else int(index)))
        position = match.end()
    if not parts or position != len(pattern):
        raise ValueError(
            f"{pattern!r} is not a mask path: write e.g. id, origin.port, goods[*].description"
        )
    return tuple(parts)


def apply_mask(
    facts: Mapping[str, Any], patterns: Sequence[str]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """The facts with masked values replaced, the concrete paths masked, the values hidden."""
    data = json.loads(canonical_json(facts))
    masked: set[str] = set()
    secrets: set[str] = set()
    for pattern in patterns:
        _mask(data, parse_mask(pattern), (), masked, secrets)
    return data, sorted(masked), secrets


def _mask(
    node: Any,
    parts: tuple[str | int, ...],
    here: tuple[str | int, ...],
    masked: set[str],
    secrets: set[str],
) -> None:
    head, rest = parts[0], parts[1:]
    keys: list[str | int]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        keys = list(range(len(node))) if head == "*" else [head]
        keys = [k for k in keys if isinstance(k, int) and k < len(node)]
    else:
        return
    for key in keys:
        value = node[key]
        if rest:
            _mask(value, rest, (*here, key), masked, secrets)
        elif value is not None and value != MASK_MARKER:
            _leaves(value, secrets)
            node[key] = MASK_MARKER
            masked.add(json_path((*here, key)))


def _masked(
    kind: str, facts: Mapping[str, Any], patterns: Sequence[str]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """apply_mask on the shipment facts, which a claim's facts hold under `shipment`."""
    inner = facts.get("shipment") if kind == "claim" else None
    if not isinstance(inner, Mapping):
        return apply_mask(facts, patterns)
    shipment, masked, secrets = apply_mask(inner, patterns)
    stored = json.loads(canonical_json(facts))
    stored["shipment"] = shipment
    return stored, [f"shipment.{path}" for path in masked], secrets


def _leaves(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, out)
    elif isinstance(value, str) and value:
        out.add(value)


def _scrub(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str) and value in secrets:
        return MASK_MARKER
    return value


# --- the store ----------------------------------------------------------------------


class Problem(_Model):
    """Where verification found the chain broken."""

    seq: int | None = Field(description="the first bad record's position")
    id: str | None
    kind: Literal["altered", "deleted", "reordered", "inserted", "truncated", "anchor"]
    message: str


class VerifyReport(_Model):
    ok: bool
    path: str
    records: int = Field(description="records checked")
    head: str | None = Field(description="SEQ:HASH of the last record; keep it as an anchor")
    first_bad: Problem | None = None


class AuditLog:
    """An append-only audit store in one SQLite file (created when first opened).

    `mask`: paths into the facts to store masked. When None, the mask configured when
    the store was created is used; a store is created with `mask` (or none).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mask: Sequence[str] | None = None,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        for pattern in mask or ():
            try:
                parse_mask(pattern)
            except ValueError as exc:
                raise AuditError(str(exc), exit_code=64) from None
        if not create and not self.path.is_file():
            raise AuditError(f"no audit store at {self.path}", exit_code=64)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self.mask: tuple[str, ...] = tuple(mask) if mask is not None else ()
        with self._guard("open"):
            configured = self._open(mask)
        if mask is None:
            self.mask = configured

    # The connection is per process: a forked child must not share its parent's.
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditError(f"{self.path}: cannot use WAL mode (got {mode})")
            connection.execute("PRAGMA synchronous=FULL")
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise AuditError(f"cannot {doing} the audit store {self.path}: {exc}") from None

    def _open(self, mask: Sequence[str] | None) -> tuple[str, ...]:
        conn = self._conn()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "records" not in tables:
            if tables - {"sqlite_sequence"}:
                raise AuditError(f"{self.path} is a SQLite file but not a tiv audit store", 64)
            with self._transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('created_at', ?), "
                    "('mask', ?)",
                    (str(FORMAT), _now(), json.dumps(list(mask or []))),
                )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != str(FORMAT):
            raise AuditError(
                f"{self.path} is audit store format {meta.get('format')}; "
                f"this engine reads format {FORMAT}",
                exit_code=64,
            )
        return tuple(json.loads(meta.get("mask", "[]")))

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---

    def record(self, kind: str, facts: Mapping[str, Any], result: Any, rules: RuleSet) -> str:
        """Append one record; return its id once it is committed to disk.

        `facts` are the shipment's canonical facts; for a claim, {"shipment": ...,
        "loss": ...}, and the mask then applies to the shipment.
        """
        valuation = _valuation_of(result)
        stored, masked, secrets = _masked(kind, facts, self.mask)
        outcome = result.model_dump(mode="json", exclude={"audit_id"})
        if secrets:
            outcome = _scrub(outcome, secrets)
        record_id = str(uuid.uuid4())
        content: dict[str, Any] = {
            "format": FORMAT,
            "id": record_id,
            "kind": kind,
            "facts": stored,
            "mask": list(self.mask),
            "masked": masked,
            "result": outcome,
            "rule_files": [f.model_dump() for f in files_used(result, rules)],
            "engine_version": valuation.engine_version,
            "matcher": valuation.matcher,
            "functions": [f.model_dump() for f in functions_used(result)],
        }
        with self._lock, self._guard("write to"):
            conn = self._conn()
            with self._transaction(conn):
                last = conn.execute(
                    "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                issued = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'records'"
                ).fetchone()
                # After a deleted tail the next number still follows the last one issued,
                # so the gap stays visible to verify.
                seq = max(last[0] if last else 0, issued[0] if issued else 0) + 1
                content["seq"] = seq
                content["recorded_at"] = _now()
                content["prev_hash"] = last[1] if last else GENESIS
                body = canonical_json(content)
                conn.execute(
                    "INSERT INTO records (seq, id, recorded_at, kind, body, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, record_id, content["recorded_at"], kind, body, digest(body)),
                )
        return record_id

    # --- reading ---

    def __iter__(self) -> Iterator[AuditRecord]:
        with self._guard("read"):
            rows = self._conn().execute("SELECT body, hash FROM records ORDER BY seq")
            for body, hashed in rows:
                yield _parse(body, hashed)

    def __len__(self) -> int:
        with self._guard("read"):
            return int(self._conn().execute("SELECT count(*) FROM records").fetchone()[0])

    def get(self, ref: str) -> AuditRecord:
        """A record by id, a unique id prefix of 6 characters or more, its seq (up to 5
        digits, as `tiv audit list` shows it), or `last`."""
        with self._guard("read"):
            conn = self._conn()
            if ref.isdigit() and len(ref) < 6:
                rows = conn.execute(
                    "SELECT body, hash FROM records WHERE seq = ?", (int(ref),)
                ).fetchall()
            elif ref == "last":
                rows = conn.execute(
                    "SELECT body, hash FROM records ORDER BY seq DESC LIMIT 1"
                ).fetchall()
            elif len(ref) >= 6 and re.fullmatch(r"[0-9a-f-]+", ref):
                rows = conn.execute(
                    "SELECT body, hash FROM records WHERE id >= ? AND id < ? LIMIT 2",
                    (ref, ref + "\uffff"),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT body, hash FROM records WHERE id = ?", (ref,)
                ).fetchall()
        if not rows:
            raise AuditError(f"no audit record {ref!r} in {self.path}", exit_code=2)
        if len(rows) > 1:
            raise AuditError(f"{ref!r} matches several records; give more of the id", 2)
        return _parse(*rows[0])

    # --- verifying ---

    def verify(self, anchor: str | None = None) -> VerifyReport:
        """Re-hash the chain; report the first record altered, deleted, reordered or inserted.

        `anchor` (`SEQ:HASH`, a head printed by an earlier verify) must still be in the chain.
        """
        with self._guard("read"):
            conn = self._conn()
            # Which row holds each hash, to say where a record out of place belongs.
            positions = {h: s for s, h in conn.execute("SELECT seq, hash FROM records")}
            issued_row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'records'"
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, id, recorded_at, kind, body, hash FROM records ORDER BY seq"
            )
            checked, bad, head = self._walk(rows, positions)
        issued = issued_row[0] if issued_row else 0
        last_seq = int(head.split(":")[0]) if head else 0
        if bad is None and issued > last_seq:
            count = issued - last_seq
            bad = Problem(
                seq=last_seq + 1,
                id=None,
                kind="truncated",
                message=f"the newest {count} record(s), seq {last_seq + 1} to {issued}, "
                "were deleted",
            )
        if bad is None and anchor:
            bad = self._check_anchor(anchor)
        return VerifyReport(
            ok=bad is None, path=str(self.path), records=checked, head=head, first_bad=bad
        )

    def _walk(
        self, rows: Any, positions: Mapping[str, int]
    ) -> tuple[int, Problem | None, str | None]:
        chain = _Chain(positions, self._conn())
        for row in rows:
            problem = chain.check(*row)
            if problem is not None:
                return chain.checked, problem, None
        head = f"{chain.seq}:{chain.hash}" if chain.checked else None
        return chain.checked, None, head

    def _check_anchor(self, anchor: str) -> Problem | None:
        seq_text, _, wanted = anchor.partition(":")
        if not seq_text.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", wanted):
            raise AuditError(f"{anchor!r} is not an anchor: write SEQ:HASH as verify prints it", 64)
        row = (
            self._conn()
            .execute("SELECT id, hash FROM records WHERE seq = ?", (int(seq_text),))
            .fetchone()
        )
        if row is None:
            return Problem(
                seq=int(seq_text),
                id=None,
                kind="anchor",
                message=f"the anchored record seq {seq_text} is gone: records were deleted",
            )
        if row[1] != wanted:
            return Problem(
                seq=int(seq_text),
                id=row[0],
                kind="anchor",
                message=f"record seq {seq_text} no longer has the anchored hash: the chain "
                "up to it was rewritten",
            )
        return None


class _Chain:
    """Walks rows in seq order; the first row that does not extend the chain is explained."""

    def __init__(self, positions: Mapping[str, int], conn: sqlite3.Connection) -> None:
        self.positions = positions  # stored hash -> seq of the row holding it
        self.conn = conn
        self.hash, self.seq, self.checked = GENESIS, 0, 0
        self.followed: set[str] = set()  # hashes that a record of the valid chain follows

    def check(
        self, seq: int, record_id: str, recorded_at: str, kind: str, body: str, hashed: str
    ) -> Problem | None:
        self.checked += 1
        where = f"record seq {seq} (id {record_id})"

        def bad(
            what: Any, message: str, at: int | None = seq, rid: str | None = record_id
        ) -> Problem:
            return Problem(seq=at, id=rid, kind=what, message=message)

        try:
            content = json.loads(body)
        except ValueError:
            return bad("altered", f"{where} is not valid JSON: it was altered")
        if not isinstance(content, dict) or canonical_json(content) != body:
            return bad("altered", f"{where} is not in canonical form: it was altered")
        if digest(body) != hashed:
            return bad("altered", f"{where} does not match its hash: it was altered")
        columns = {"id": record_id, "recorded_at": recorded_at, "kind": kind}
        wrong = [name for name, value in columns.items() if content.get(name) != value]
        if wrong:
            return bad("altered", f"{where}: its {wrong[0]} column was altered")
        claimed, follows = content.get("seq"), content.get("prev_hash")
        if claimed == seq == self.seq + 1 and follows == self.hash:
            self.hash, self.seq = hashed, seq
            self.followed.add(follows)
            return None
        if follows in self.followed:
            # Two records follow the same one. Which is genuine cannot be told from the
            # chain alone; the first position where it forked is named.
            before = self.positions.get(follows, 0)
            other = _id_at(self.conn, before + 1)
            return bad(
                "inserted",
                f"a record was inserted: record seq {before + 1} (id {other}) and {where} "
                f"both follow seq {before}",
                at=before + 1,
                rid=other,
            )
        if follows in self.positions and self.positions[follows] > seq:
            return bad(
                "reordered",
                f"{where} belongs after seq {self.positions[follows]}: records were reordered",
            )
        if seq != self.seq + 1 or claimed != seq:
            first = self.seq + 1
            gone = f"seq {first}" + (f" to {seq - 1}" if seq - 1 > first else "")
            if seq == first:
                gone = f"the record it follows (it says it is seq {claimed})"
            return bad("deleted", f"{gone} missing before {where}: deleted", at=first, rid=None)
        return bad(
            "altered",
            f"{where} does not follow seq {self.seq}: that record was altered "
            "and its hash recomputed",
            at=self.seq,
            rid=_id_at(self.conn, self.seq),
        )


def _id_at(conn: sqlite3.Connection, seq: int) -> str | None:
    row = conn.execute("SELECT id FROM records WHERE seq = ?", (seq,)).fetchone()
    return row[0] if row else None


def _parse(body: str, hashed: str) -> AuditRecord:
    try:
        return AuditRecord.model_validate({**json.loads(body), "hash": hashed})
    except (ValueError, ValidationError):
        raise AuditError(
            "a record in the audit store cannot be read; run tiv audit verify", exit_code=1
        ) from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- what a valuation used --------------------------------------------------------------


def files_used(result: Any, rules: RuleSet) -> list[RuleFileUsed]:
    """Every file of the pack (bases first), the country rules, every other file the
    trace cites, and the reference data (minor units decide rounding, codes validity).
    """
    valuation = _valuation_of(result)
    policy = valuation.policy
    used: list[RuleFileUsed] = []
    pack_files = getattr(policy, "files", None) or [policy]
    for ref in pack_files:
        used.append(
            RuleFileUsed(
                role="policy" if ref.source == policy.source else "base policy",
                id=ref.id,
                version=ref.version,
                path=ref.source,
                sha256=ref.sha256,
            )
        )
    estimate = getattr(valuation, "duty_estimate", None)
    for ref in getattr(estimate, "rules", None) or ():
        used.append(
            RuleFileUsed(
                role="country", id=ref.id, version=ref.version, path=ref.source, sha256=ref.sha256
            )
        )
    named = {u.path for u in used}
    steps = [*valuation.trace, *(getattr(result, "trace", None) or [])]
    cited = {_file_of(step.source) for step in steps}
    for file in rules.files:
        if file.path in named:
            continue
        if file.path in cited or (file.status is None and file.path.startswith("rules/reference/")):
            reference = file.path.startswith("rules/reference/")
            used.append(
                RuleFileUsed(
                    role="reference" if reference else file.kind,
                    id=Path(file.path).stem,
                    path=file.path,
                    sha256=file.sha256,
                )
            )
    return used


def _valuation_of(result: Any) -> Valuation:
    """The valuation a result is, or holds (a claim settles under one)."""
    inner = getattr(result, "valuation", None)
    return inner if isinstance(inner, Valuation) else result  # type: ignore[no-any-return]


def _file_of(source: str) -> str:
    path, _, line = source.rpartition(":")
    return path if path and line.isdigit() else source


def functions_used(result: Any) -> list[FunctionUsed]:
    """Custom functions a result reports: its own `functions`, else its policy's."""
    given = getattr(result, "functions", None)
    if not given:
        given = getattr(getattr(_valuation_of(result), "policy", None), "functions", None)
    if not given:
        return []
    if isinstance(given, Mapping):
        return [FunctionUsed(name=str(k), version=str(v)) for k, v in sorted(given.items())]
    found = []
    for item in given:
        data = item.model_dump() if isinstance(item, BaseModel) else dict(item)
        found.append(FunctionUsed(name=str(data["name"]), version=str(data.get("version", ""))))
    return found


# --- replay -------------------------------------------------------------------------


class Difference(_Model):
    path: str = Field(description="where in the result, e.g. components.freight, trace[3].value")
    recorded: Any
    replayed: Any


class FileSource(_Model):
    path: str
    sha256: str
    found: str = Field(description="working tree, git <commit>, or changed (current bytes)")


class ReplayReport(_Model):
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
    from engine.api import claim, load_rules, value
    from engine.evaluating.matcher import available_matchers, default_matcher

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
        rules = load_rules(_PinnedSource(base, pinned))
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
        differences = [Difference(path="", recorded="a result", replayed=f"error: {exc}")]
        return ReplayReport(
            record=record.id,
            seq=record.seq,
            identical=False,
            differences=differences,
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

    @property
    def name(self) -> str:
        return f"{self.root.resolve()} (as recorded)"

    def paths(self) -> list[str]:
        from engine.loading.sources import FileSystemSource

        return sorted(set(FileSystemSource(self.root).paths()) | set(self.pinned))

    def read(self, path: str) -> bytes:
        if path in self.pinned:
            return self.pinned[path]
        return (self.root / path).read_bytes()


def _recorded_bytes(root: Path, path: str, sha256: str) -> tuple[bytes | None, str]:
    """The bytes with this sha256: from the working tree, else from git history."""
    try:
        data = (root / path).read_bytes()
    except OSError:
        data, state = None, "gone"
    else:
        if hashlib.sha256(data).hexdigest() == sha256:
            return data, "working tree"
        state = "changed"
    found = from_git(root, path, sha256)
    if found is not None:
        return found
    return None, state

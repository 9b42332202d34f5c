"""The audit store: every valuation recorded, append-only and tamper-evident, in one SQLite file.

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

Signatures (`signing`): given a key held outside the file, each record's hash is signed
(HMAC-SHA256, with the key's id) in the `signatures` table, in the record's transaction;
`verify(keys=...)` then requires a valid signature on every record, so a record forged
anywhere, the end included, is caught by whoever holds the key.

Writes: one transaction per record, `BEGIN IMMEDIATE`, so writers in several processes
take turns and keep one chain; `synchronous=FULL`, so a record is on disk when `record`
returns; a crash or kill mid-batch leaves every committed record intact.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from engine.compliance.audit.masking import mask_facts, parse_mask, scrub
from engine.compliance.audit.record import (
    FORMAT,
    AuditError,
    AuditModel,
    AuditRecord,
    Recordable,
    canonical_json,
    digest,
    files_used,
    functions_used,
    valuation_of,
)
from engine.compliance.audit.signing import AuditKey, env_key
from engine.errors import FactsError
from engine.loading import jsontext
from engine.ruleset import RuleSet

GENESIS = "0" * 64
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

_SIGNATURES = (
    """CREATE TABLE IF NOT EXISTS signatures (
        seq INTEGER PRIMARY KEY,
        key_id TEXT NOT NULL,
        mac TEXT NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS signatures_no_update BEFORE UPDATE ON signatures
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: signatures cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS signatures_no_delete BEFORE DELETE ON signatures
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: signatures cannot be deleted'); END""",
)


class ChainBreak(AuditModel):
    """Where verification found the chain broken."""

    seq: int | None = Field(description="the first bad record's position")
    id: str | None
    kind: Literal[
        "altered",
        "deleted",
        "reordered",
        "inserted",
        "truncated",
        "anchor",
        "unsigned",
        "forged",
        "unknown_key",
    ]
    message: str


class VerifyReport(AuditModel):
    ok: bool
    path: str
    records: int = Field(description="records checked")
    head: str | None = Field(description="SEQ:HASH of the last record; keep it as an anchor")
    signed: int = Field(0, description="records that carry a signature")
    keys_checked: list[str] = Field(
        default_factory=list, description="ids of the keys signatures were checked with"
    )
    first_bad: ChainBreak | None = None


class AuditLog:
    """An append-only audit store in one SQLite file (created when first opened).

    `mask`: paths into the facts to store masked. When None, the mask configured when
    the store was created is used; a store is created with `mask` (or none).
    `key`: the key each new record is signed with; by default the one $TIV_AUDIT_KEY_FILE
    names (if set), so every writer in a process (CLI, batch, service) signs alike.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mask: Sequence[str] | None = None,
        create: bool = True,
        key: AuditKey | Literal["env"] | None = "env",
    ) -> None:
        self.path = Path(path)
        self.key = env_key() if key == "env" else key
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
        if self.key is not None and "signatures" not in tables:
            with self._transaction(conn):
                for statement in _SIGNATURES:
                    conn.execute(statement)
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

    def record(
        self, kind: str, facts: Mapping[str, Any], result: Recordable, rules: RuleSet
    ) -> str:
        """Append one record; return its id once it is committed to disk.

        `facts` are the shipment's canonical facts; for a claim, {"shipment": ...,
        "loss": ...}, and the mask then applies to the shipment.
        """
        valuation = valuation_of(result)
        stored, masked, secrets = mask_facts(kind, facts, self.mask)
        outcome = result.model_dump(mode="json", exclude={"audit_id"})
        if secrets:
            outcome = scrub(outcome, secrets)
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
                hashed = digest(body)
                conn.execute(
                    "INSERT INTO records (seq, id, recorded_at, kind, body, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, record_id, content["recorded_at"], kind, body, hashed),
                )
                if self.key is not None:
                    conn.execute(
                        "INSERT INTO signatures (seq, key_id, mac) VALUES (?, ?, ?)",
                        (seq, self.key.key_id, self.key.sign(hashed)),
                    )
        return record_id

    # --- reading ---

    def __iter__(self) -> Iterator[AuditRecord]:
        return self.records()

    def records(
        self, since: datetime.datetime | None = None, until: datetime.datetime | None = None
    ) -> Iterator[AuditRecord]:
        """The records in chain order; with `since`/`until` (UTC), only those recorded at
        or after `since` and before `until`."""
        query, params = "SELECT body, hash FROM records", []
        bounds = [(">=", since), ("<", until)]
        where = [f"recorded_at {op} ?" for op, when in bounds if when is not None]
        params = [_stamp(when) for _, when in bounds if when is not None]
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._guard("read"):
            rows = self._conn().execute(query + " ORDER BY seq", params)
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

    def verify(self, anchor: str | None = None, keys: Sequence[AuditKey] = ()) -> VerifyReport:
        """Re-hash the chain; report the first record altered, deleted, reordered or inserted.

        `anchor` (`SEQ:HASH`, a head printed by an earlier verify) must still be in the chain.
        With `keys`, every record must carry a valid signature by one of them: a record
        forged anywhere (the end included), or left unsigned, is the first bad one.
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
            bad = ChainBreak(
                seq=last_seq + 1,
                id=None,
                kind="truncated",
                message=f"the newest {count} record(s), seq {last_seq + 1} to {issued}, "
                "were deleted",
            )
        if bad is None and anchor:
            bad = self._check_anchor(anchor)
        with self._guard("read"):
            signatures = self._signatures()
        if bad is None and keys:
            bad = self._check_signatures(signatures, keys)
        return VerifyReport(
            ok=bad is None,
            path=str(self.path),
            records=checked,
            head=head,
            signed=len(signatures),
            keys_checked=[key.key_id for key in keys],
            first_bad=bad,
        )

    def _signatures(self) -> dict[int, tuple[str, str]]:
        conn = self._conn()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "signatures" not in tables:
            return {}
        rows = conn.execute("SELECT seq, key_id, mac FROM signatures")
        return {seq: (key_id, mac) for seq, key_id, mac in rows}

    def _check_signatures(
        self, signatures: Mapping[int, tuple[str, str]], keys: Sequence[AuditKey]
    ) -> ChainBreak | None:
        """The first record (in chain order) without a valid signature by one of `keys`."""
        by_id = {key.key_id: key for key in keys}
        with self._guard("read"):
            rows = self._conn().execute("SELECT seq, id, hash FROM records ORDER BY seq")
            for seq, record_id, hashed in rows:
                where = f"record seq {seq} (id {record_id})"
                if seq not in signatures:
                    return ChainBreak(
                        seq=seq,
                        id=record_id,
                        kind="unsigned",
                        message=f"{where} carries no signature: it was not written by a "
                        "holder of the key (forged, or written without --audit-key)",
                    )
                key_id, mac = signatures[seq]
                key = by_id.get(key_id)
                if key is None:
                    known = ", ".join(sorted(by_id))
                    return ChainBreak(
                        seq=seq,
                        id=record_id,
                        kind="unknown_key",
                        message=f"{where} is signed with key id {key_id[:16]!r}, not one of "
                        f"the keys given ({known}): pass that key too, or it is forged",
                    )
                if not key.verifies(hashed, mac):
                    return ChainBreak(
                        seq=seq,
                        id=record_id,
                        kind="forged",
                        message=f"{where} has a signature that its key ({key_id}) did not "
                        "make: the record or its signature was forged",
                    )
        return None

    def check(self, record: AuditRecord) -> ChainBreak | None:
        """One record's own check, as `tiv audit show` makes before it is trusted.

        Its row still hashes to its hash, in canonical form, with its columns; it follows
        the record before it; and the record after it still follows it (so a record
        altered and re-hashed is caught unless every later record was rewritten too,
        which only an anchor catches: see `verify`).
        """
        columns = "seq, id, recorded_at, kind, body, hash"
        with self._guard("read"):
            conn = self._conn()
            row = conn.execute(
                f"SELECT {columns} FROM records WHERE id = ?", (record.id,)
            ).fetchone()
            if row is None:
                raise AuditError(f"no audit record {record.id!r} in {self.path}", exit_code=2)
            before = conn.execute(
                "SELECT seq, hash FROM records WHERE seq < ? ORDER BY seq DESC LIMIT 1", (row[0],)
            ).fetchone()
            after = conn.execute(
                "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (row[0],)
            ).fetchone()
            chain = _Chain({before[1]: before[0]} if before else {}, conn)
            if before:
                chain.seq, chain.hash = before
            broken = chain.check(*row)
        if broken is not None or after is None:
            return broken
        try:
            follows = jsontext.loads(after[1]).get("prev_hash")
        except (FactsError, AttributeError):
            follows = None
        if follows != row[5]:
            return ChainBreak(
                seq=row[0],
                id=row[1],
                kind="altered",
                message=f"record seq {row[0]} (id {row[1]}) is not the one record seq "
                f"{after[0]} follows: it was altered and its hash recomputed",
            )
        return None

    def _walk(
        self, rows: Any, positions: Mapping[str, int]
    ) -> tuple[int, ChainBreak | None, str | None]:
        chain = _Chain(positions, self._conn())
        for row in rows:
            problem = chain.check(*row)
            if problem is not None:
                return chain.checked, problem, None
        head = f"{chain.seq}:{chain.hash}" if chain.checked else None
        return chain.checked, None, head

    def _check_anchor(self, anchor: str) -> ChainBreak | None:
        seq_text, _, wanted = anchor.partition(":")
        if not seq_text.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", wanted):
            raise AuditError(f"{anchor!r} is not an anchor: write SEQ:HASH as verify prints it", 64)
        row = (
            self._conn()
            .execute("SELECT id, hash FROM records WHERE seq = ?", (int(seq_text),))
            .fetchone()
        )
        if row is None:
            return ChainBreak(
                seq=int(seq_text),
                id=None,
                kind="anchor",
                message=f"the anchored record seq {seq_text} is gone: records were deleted",
            )
        if row[1] != wanted:
            return ChainBreak(
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
    ) -> ChainBreak | None:
        self.checked += 1
        where = f"record seq {seq} (id {record_id})"

        def bad(
            what: Any, message: str, at: int | None = seq, rid: str | None = record_id
        ) -> ChainBreak:
            return ChainBreak(seq=at, id=rid, kind=what, message=message)

        try:
            content = jsontext.loads(body)
        except FactsError:
            return bad("altered", f"{where} is not valid JSON: it was altered")
        if not isinstance(content, dict) or canonical_json(content) != body:
            return bad("altered", f"{where} is not in canonical form: it was altered")
        if digest(body) != hashed:
            return bad("altered", f"{where} does not match its hash: it was altered")
        columns = {"id": record_id, "recorded_at": recorded_at, "kind": kind}
        wrong = [name for name, value in columns.items() if content.get(name) != value]
        if wrong:
            return bad("altered", f"{where}: its {wrong[0]} column was altered")
        claimed, follows = content.get("seq"), str(content.get("prev_hash"))
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
        return AuditRecord.model_validate({**jsontext.loads(body), "hash": hashed})
    except (FactsError, TypeError, ValidationError):
        raise AuditError(
            "a record in the audit store cannot be read; run tiv audit verify", exit_code=1
        ) from None


def _now() -> str:
    return _stamp(datetime.datetime.now(datetime.UTC))


def _stamp(when: datetime.datetime) -> str:
    """UTC as the records write it; text order is time order."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

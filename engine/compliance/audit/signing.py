"""Signed audit records: an HMAC-SHA256 over each record's chained hash, with a key kept
outside the database.

The hash chain proves that no record *inside* it changed; it cannot prove that the last
records are genuine, because anyone who can write the file can append a record that
follows the head with a correct hash. A key the file's writer holds elsewhere can: without
it, no one can make the signature of a new hash. Each signature names its key by a key
id (a digest of the key, never the key), so keys can be rotated: verify with every key
that was in use.

Key file: any file of 32 or more bytes, best random (`tiv audit keygen FILE`); a
trailing newline is not part of the key. `--audit-key FILE` or `$TIV_AUDIT_KEY_FILE`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from engine.compliance.audit.record import AuditError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "AuditKey", "env_key", "generate_key"]

KEY_ENV = "TIV_AUDIT_KEY_FILE"
MIN_KEY_BYTES = 32
_DOMAIN = b"tiv audit record v1\0"  # a MAC made here means nothing anywhere else


@dataclass(frozen=True)
class AuditKey:
    secret: bytes
    source: str  # the file it came from, for messages

    @property
    def key_id(self) -> str:
        """16 hex digits naming the key in each record; says nothing about the key."""
        return hashlib.sha256(b"tiv audit key id\0" + self.secret).hexdigest()[:16]

    def sign(self, record_hash: str) -> str:
        return hmac.new(self.secret, _DOMAIN + record_hash.encode("ascii"), "sha256").hexdigest()

    def verifies(self, record_hash: str, mac: str) -> bool:
        return hmac.compare_digest(self.sign(record_hash).encode(), mac.encode("ascii", "replace"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AuditKey:
        """The key in `path`; AuditError (exit 64) if it cannot be read or is too short."""
        name = os.fspath(path)
        try:
            raw = Path(name).read_bytes()
        except OSError as error:
            raise AuditError(
                f"{name}: cannot read the audit key: {error.strerror or error}", 64
            ) from None
        secret = raw.removesuffix(b"\n").removesuffix(b"\r")
        if len(secret) < MIN_KEY_BYTES:
            raise AuditError(
                f"{name}: an audit key must be {MIN_KEY_BYTES} bytes or more (it has "
                f"{len(secret)}); make one with `tiv audit keygen {name}`",
                64,
            )
        return cls(secret, name)


def env_key() -> AuditKey | None:
    """The key named by $TIV_AUDIT_KEY_FILE, or None when it is not set."""
    name = os.environ.get(KEY_ENV)
    return AuditKey.from_file(name) if name else None


def generate_key(path: str | os.PathLike[str]) -> AuditKey:
    """A new random key (32 bytes as 64 hex digits) in a new file only its owner may read."""
    text = secrets.token_hex(32).encode("ascii") + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditError(
            f"{os.fspath(path)} already exists; a key is never overwritten", 64
        ) from None
    except OSError as error:
        raise AuditError(f"{os.fspath(path)}: cannot write the key: {error.strerror}", 64) from None
    with os.fdopen(fd, "wb") as file:
        file.write(text)
    return AuditKey.from_file(path)

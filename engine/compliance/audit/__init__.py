"""The audit log: every valuation recorded, append-only and tamper-evident, in one SQLite file.

`record` is what a record holds and how it is hashed; `masking` keeps chosen facts out of
it; `store` is the SQLite chain (`AuditLog`: record, read, verify); `replay` re-evaluates a
record with the rule files it names and compares figure by figure.
"""

from engine.compliance.audit.masking import MASK_MARKER, apply_mask, parse_mask
from engine.compliance.audit.record import (
    AuditError,
    AuditRecord,
    FunctionUsed,
    RuleFileUsed,
    canonical_json,
    digest,
)
from engine.compliance.audit.replay import Difference, ReplayReport, replay
from engine.compliance.audit.signing import KEY_ENV, AuditKey, generate_key
from engine.compliance.audit.store import GENESIS, AuditLog, ChainBreak, VerifyReport

__all__ = [
    "GENESIS",
    "KEY_ENV",
    "MASK_MARKER",
    "AuditError",
    "AuditKey",
    "AuditLog",
    "AuditRecord",
    "ChainBreak",
    "Difference",
    "FunctionUsed",
    "ReplayReport",
    "RuleFileUsed",
    "VerifyReport",
    "apply_mask",
    "canonical_json",
    "digest",
    "generate_key",
    "parse_mask",
    "replay",
]

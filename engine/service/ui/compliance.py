"""The compliance modules the workbench uses, imported here and nowhere else in `ui`.

Diff, impact, the synthetic corpus and the audit log move under `engine/compliance/`;
when they do, only these imports change.
"""

from __future__ import annotations

from engine.compliance.audit import (
    AuditError,
    AuditLog,
    AuditRecord,
    VerifyReport,
    canonical_json,
    digest,
)
from engine.compliance.audit import replay as replay_record
from engine.compliance.corpus import generate as generate_corpus
from engine.compliance.diff import SECTIONS, Change, PackDiff, diff_packs
from engine.compliance.impact import ImpactReport, ShipmentImpact, impact

__all__ = [
    "SECTIONS",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "Change",
    "ImpactReport",
    "PackDiff",
    "ShipmentImpact",
    "VerifyReport",
    "diff_packs",
    "generate_corpus",
    "impact",
    "record_pack",
    "record_verifies",
    "replay_record",
]


def record_verifies(record: AuditRecord) -> bool:
    """Whether the record's content still hashes to its stored hash."""
    return digest(canonical_json(record.content())) == record.hash


def record_pack(record: AuditRecord) -> str:
    """The pack a record belongs to (its policy file's id); "" when it names none."""
    for used in record.rule_files:
        if used.role == "policy":
            return used.id
    return ""

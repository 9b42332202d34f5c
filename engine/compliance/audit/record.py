"""An audit record: what went in, what came out, with which rule files and functions.

In: a valuation or claim result and the rule set that made it. Out: the `AuditRecord`
model, `canonical_json` (sorted keys, no whitespace, UTF-8, decimals as strings, never a
binary float) and its sha256 `digest`, and the rule files and functions a result used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.money import plain
from engine.result import MASKED, Claim, FileRef, PolicyRef, Valuation
from engine.ruleset import RuleSet

FORMAT = 1
# A figure that repeated a masked fact is stored as the mask's marker (masking.MASK_MARKER,
# which imports this module): results are read back for display with it kept as text.
_MASKED = {MASKED: "<masked>"}

# What a record can hold: a valuation, or a result resting on one (a Claim; an insurance
# application's event, engine.applications), each a pydantic model dumped as the result.
Recordable = Valuation | Claim | BaseModel


class AuditError(Exception):
    """The audit store cannot do what was asked; the message is one line for a person.

    `exit_code` is the CLI status: 2 no such record, 3 the recorded rule files are not
    available unchanged, 74 the store cannot be opened or written.
    """

    def __init__(self, message: str, exit_code: int = 74) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AuditModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleFileUsed(AuditModel):
    """One rule file a valuation used, by the sha256 of the bytes that valued."""

    role: str = Field(description="policy, base policy, country, reference, or the file's kind")
    id: str
    version: str | None = Field(None, description="for versioned files (policy packs)")
    path: str = Field(description="relative to the rule repository")
    sha256: str


class FunctionUsed(AuditModel):
    name: str
    version: str


class AuditRecord(AuditModel):
    """One recorded valuation or claim: what went in, what came out, with what."""

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
            return Valuation.model_validate({**(data or {}), "audit_id": self.id}, context=_MASKED)
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
            claim = Claim.model_validate({**self.result, "audit_id": self.id}, context=_MASKED)
            return render_claim_text(claim)
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


def files_used(result: Recordable, rules: RuleSet) -> list[RuleFileUsed]:
    """Every file of the pack (bases first), the country rules, every other file the
    trace cites, and the reference data (minor units decide rounding, codes validity).
    """
    valuation = valuation_of(result)
    policy = valuation.policy
    used: list[RuleFileUsed] = []
    pack_files: list[FileRef | PolicyRef] = [*policy.files] or [policy]
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
    estimate = valuation.duty_estimate
    for rule in estimate.rules if estimate else ():
        used.append(
            RuleFileUsed(
                role="country",
                id=rule.id,
                version=rule.version,
                path=rule.source,
                sha256=rule.sha256,
            )
        )
    named = {u.path for u in used}
    steps = [*valuation.trace, *(result.trace if isinstance(result, Claim) else [])]
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


def valuation_of(result: Recordable) -> Valuation:
    """The valuation a result is, or rests on (a claim, an application's event)."""
    if isinstance(result, Valuation):
        return result
    inner = getattr(result, "valuation", None)
    if not isinstance(inner, Valuation):
        raise TypeError(f"a {type(result).__name__} holds no valuation to record")
    return inner


def _file_of(source: str) -> str:
    path, _, line = source.rpartition(":")
    return path if path and line.isdigit() else source


def functions_used(result: Recordable) -> list[FunctionUsed]:
    """The custom functions (and versions) the result's pack calls."""
    functions = valuation_of(result).policy.functions
    return [FunctionUsed(name=f.name, version=f.version) for f in functions]


# --- replay -------------------------------------------------------------------------

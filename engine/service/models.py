"""What the HTTP service answers, as pydantic models (they generate its OpenAPI document).

A valuation is `engine.result.Valuation`, the very model behind `tiv value --format json`,
so the service and the command line share one contract. Everything else here is the
service's own envelope: errors, batch results, pack listings, reload outcomes. Amounts
stay decimal strings throughout.
"""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.result import Valuation


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProblemOut(_Wire):
    code: str = Field(description="stable, machine-readable: facts.negative, policy.unknown")
    message: str
    path: str | None = Field(None, description="JSON path into the request body: charges[0].amount")
    file: str | None = Field(None, description="rule file, for rule problems")
    line: int | None = None
    col: int | None = None


class VersionWindow(_Wire):
    version: str
    status: Literal["draft", "published"]
    effective_from: datetime.date
    effective_to: datetime.date | None = Field(None, description="first day no longer in effect")


class ErrorBody(_Wire):
    error: str = Field(
        description="invalid_facts, no_policy, evaluation_failed, invalid_rules, "
        "invalid_request, too_large, too_many_shipments, time_budget, unauthorized, "
        "forbidden, not_found, internal"
    )
    problems: list[ProblemOut]
    rules_id: str | None = Field(None, description="the rule set the request met")
    versions: list[VersionWindow] | None = Field(
        None, description="when no version is in effect: every version and its window"
    )


class BatchItem(_Wire):
    index: int = Field(description="position in the request's list, from 0")
    valuation: Valuation | None = None
    error: ErrorBody | None = None


class BatchResult(_Wire):
    rules_id: str
    count: int
    failed: int
    results: list[BatchItem] = Field(description="one per shipment, in request order")


class PackVersion(_Wire):
    id: str
    version: str
    status: Literal["draft", "published"]
    title: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    sha256: str
    source: str = Field(description="path of the pack file in the rule repository")


class PackSummary(_Wire):
    id: str
    versions: list[PackVersion] = Field(description="oldest first")


class PackList(_Wire):
    rules_id: str
    packs: list[PackSummary]


class PackText(PackVersion):
    yaml: str = Field(description="the pack file, byte for byte as loaded (UTF-8)")


class CountryVersion(_Wire):
    id: str = Field(description="the country code (or customs union) the rules are for")
    version: str
    status: Literal["draft", "published"]
    title: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    sha256: str
    source: str
    customs_union: str | None = None


class CountrySummary(_Wire):
    id: str
    versions: list[CountryVersion] = Field(description="oldest first")


class CountryList(_Wire):
    rules_id: str
    countries: list[CountrySummary]


class ReloadResult(_Wire):
    rules_id: str
    previous_rules_id: str
    changed: bool
    packs: list[PackSummary]


class Health(_Wire):
    status: Literal["ok", "ready"]
    rules_id: str | None = None
    loaded_at: datetime.datetime | None = None

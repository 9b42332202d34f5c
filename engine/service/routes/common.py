"""Helpers the routes share: JSON answers with the rules header, the packs a key sees."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from engine.compiling.pack import CompiledPack
from engine.errors import (
    Problem,
)
from engine.loading.snapshot import Snapshot
from engine.service.errors import ApiError
from engine.service.models import (
    ErrorBody,
    PackSummary,
    PackVersion,
)
from engine.service.settings import ApiKey

RULES_HEADER = "Tiv-Rules-Id"


def visible_pack(snapshot: Snapshot, key: ApiKey, policy: str) -> str:
    """The pack id of `policy`, or 404 for a pack that does not exist or is not the key's."""
    pack_id = policy.partition("@")[0]
    if pack_id in snapshot.rules.packs and key.may_use(pack_id):
        return pack_id
    visible = ", ".join(p for p in snapshot.rules.packs if key.may_use(p)) or "none"
    raise ApiError(
        404,
        "no_policy",
        Problem("policy.unknown", f"no policy pack `{pack_id}` (packs: {visible})"),
        rules_id=snapshot.rules_id,
    )


def pack_version(p: CompiledPack) -> PackVersion:
    return PackVersion(
        id=p.id,
        version=p.version,
        status=p.status,
        title=p.title,
        effective_from=p.effective_from,
        effective_to=p.effective_to,
        sha256=p.sha256,
        source=p.source,
    )


def pack_summaries(snapshot: Snapshot, key: ApiKey) -> list[PackSummary]:
    return [
        PackSummary(id=pack_id, versions=[pack_version(p) for p in versions])
        for pack_id, versions in snapshot.rules.packs.items()
        if key.may_use(pack_id)
    ]


def respond(
    data: Any,
    snapshot: Snapshot | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    sent = {RULES_HEADER: snapshot.rules_id} if snapshot else {}
    sent.update(headers or {})
    return JSONResponse(data, status_code=status, headers=sent or None)


SHIPMENT_REF = {"$ref": "#/components/schemas/Shipment"}
LOSS_REF = {"$ref": "#/components/schemas/Loss"}


def body_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def errors_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        401: "no API key, or an unknown one",
        403: "the key lacks the role this endpoint needs",
        404: "no such pack, version or record (or not this key's)",
        409: "the pack has no version that may value on that date (the body lists them)",
        413: "the body is over the size limit",
        422: "invalid facts (each problem has its JSON path), too many shipments, "
        "or an evaluation that failed",
        503: "the request's time budget ran out, or a valuation's (`valuation.time_budget`); "
        "Retry-After says when to retry",
    }
    return {s: {"model": ErrorBody, "description": meaning[s]} for s in statuses}

"""GET /v1/audit/{id}: one audit record, to the keys whose packs include its pack."""

from __future__ import annotations

import re
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Path

from engine.compliance.audit import AuditRecord
from engine.errors import (
    Problem,
)
from engine.service.auth import Key
from engine.service.context import Service
from engine.service.errors import ApiError
from engine.service.routes.common import errors_doc, respond

_RECORD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def install(app: FastAPI, service: Service) -> None:
    @app.get(
        "/v1/audit/{record_id}",
        summary="One audit record",
        description="Visible only to keys whose packs include the record's pack.",
        responses=errors_doc(401, 404),
        tags=["audit"],
    )
    async def get_audit(key: Key, record_id: Annotated[str, Path()]) -> Any:
        snapshot = service.state.current
        not_found = ApiError(
            404,
            "not_found",
            Problem("audit.unknown", f"no audit record {record_id}"),
            rules_id=snapshot.rules_id,
        )
        if service.audit is None:
            raise ApiError(
                404,
                "not_found",
                Problem("audit.off", "this server keeps no audit log (start it with --audit)"),
            )
        # Whole ids only: the log also takes prefixes and `last`, which would let a key
        # learn of records that are not its own.
        if not _RECORD_ID.fullmatch(record_id):
            raise not_found
        record = await anyio.to_thread.run_sync(service.audit.get, record_id)
        if record is None or not key.may_use(_record_pack(record)):
            raise not_found
        return respond(record.model_dump(mode="json"), snapshot)


def _record_pack(record: AuditRecord) -> str:
    """The pack an audit record belongs to: the policy file it names."""
    for used in record.rule_files:
        if used.role == "policy":
            return str(used.id)
    return ""  # a record that names no pack is no key's to read

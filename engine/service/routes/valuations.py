"""POST /v1/valuations, /v1/valuations/batch and /v1/claims."""

from __future__ import annotations

import datetime
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from engine.api import claim, value, value_many
from engine.errors import (
    FactsError,
    TivError,
)
from engine.loading.snapshot import Snapshot
from engine.result import Claim, Valuation
from engine.service.auth import Key
from engine.service.bodies import claim_body, read_body, require_object, shipments
from engine.service.context import Service
from engine.service.errors import retry_after, tiv_error
from engine.service.models import (
    BatchResult,
)
from engine.service.routes.common import (
    LOSS_REF,
    RULES_HEADER,
    SHIPMENT_REF,
    body_doc,
    errors_doc,
    respond,
    visible_pack,
)
from engine.service.settings import ApiKey

# Parameter types shared by the endpoints. Module level, so FastAPI can resolve them.
Policy = Annotated[
    str,
    Query(
        description="pack id, or id@version to pin one",
        pattern=r"^[A-Za-z0-9_.-]+(@[0-9]+(\.[0-9]+)*)?$",
    ),
]
AsOf = Annotated[
    datetime.date | None,
    Query(
        description="value with the version in effect on this date (default: the shipment's date)"
    ),
]
AllowDraft = Annotated[
    bool, Query(description="let a draft version value (pinned with id@version)")
]


# What JSONResponse writes (starlette's render): compact, UTF-8, no NaN.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _json_text(text: str, snapshot: Snapshot) -> Response:
    """A JSON text already encoded as `respond` would encode its data.

    Results are written by pydantic-core straight from the model (`model_dump_json`),
    which gives the same bytes as `respond(result.model_dump(mode="json"))` (compact,
    non-ASCII as UTF-8) at a fraction of the cost; tests/test_service.py compares them.
    """
    return Response(
        text.encode("utf-8"),
        media_type="application/json",
        headers={RULES_HEADER: snapshot.rules_id},
    )


def _ns(deadline: float) -> int:
    """A time.monotonic() deadline as the library's time.monotonic_ns (the same clock)."""
    return int(deadline * 1e9)


def install(app: FastAPI, service: Service) -> None:
    settings = service.settings
    budget = settings.valuation_budget_s

    def failed(error: TivError, snapshot: Snapshot, policy: str) -> tuple[int, Any, Any]:
        """Status, body and headers of a request that failed with `error` (a valuation
        over its budget is a 503 with Retry-After, like a request over its own)."""
        service.metrics.error(error.kind)
        status, payload = tiv_error(error, snapshot, policy)
        return status, payload, retry_after(budget) if status == 503 else None

    async def start(request: Request, key: ApiKey, policy: str) -> tuple[float, Snapshot, bytes]:
        """The request's deadline, the rules it keeps to its end, and its body; the pack is
        checked first, so a key that may not use it gets 404 whatever it sent."""
        deadline = time.monotonic() + settings.time_budget_s
        snapshot = service.state.current
        visible_pack(snapshot, key, policy)
        return deadline, snapshot, await read_body(request, settings.max_body_bytes)

    def value_one(
        snapshot: Snapshot,
        facts: bytes | dict[str, Any],
        policy: str,
        as_of: Any,
        allow_draft: bool,
        trace: bool,
        deadline: float,
    ) -> Valuation:
        result = value(
            snapshot.rules,
            facts,
            policy=policy,
            as_of=as_of,
            allow_draft=allow_draft,
            trace=trace,
            audit=service.audit,
            budget=budget,
            deadline=_ns(deadline),
        )
        service.metrics.valuation(result.policy.id, result.policy.version, result.decision)
        return result

    @app.post(
        "/v1/valuations",
        response_model=Valuation,
        summary="Value one shipment",
        description="The body is the shipment facts (the JSON form of `tiv value`'s input); "
        "the answer is exactly `tiv value --format json`.",
        responses=errors_doc(401, 404, 409, 413, 422, 503),
        openapi_extra=body_doc(SHIPMENT_REF, "the shipment facts"),
        tags=["valuations"],
    )
    async def post_valuation(
        request: Request,
        key: Key,
        policy: Policy,
        as_of: AsOf = None,
        allow_draft: AllowDraft = False,
        trace: Annotated[bool, Query(description="include the step-by-step trace")] = True,
    ) -> Any:
        deadline, snapshot, body = await start(request, key, policy)
        require_object(body)
        try:
            result = await service.in_thread(
                lambda: value_one(snapshot, body, policy, as_of, allow_draft, trace, deadline),
                deadline,
            )
        except TivError as error:
            status, payload, headers = failed(error, snapshot, policy)
            return respond(payload, snapshot, status, headers)
        return _json_text(result.model_dump_json(), snapshot)

    @app.post(
        "/v1/valuations/batch",
        response_model=BatchResult,
        summary="Value a list of shipments",
        description="The body is a JSON array of shipment facts. Each shipment gets its own "
        "result or error, in request order; one bad shipment does not fail the others. "
        "Traces are left out unless `trace=true`.",
        responses=errors_doc(401, 404, 413, 422, 503),
        openapi_extra=body_doc(
            {"type": "array", "items": SHIPMENT_REF, "maxItems": settings.max_batch},
            "a list of shipment facts",
        ),
        tags=["valuations"],
    )
    async def post_batch(
        request: Request,
        key: Key,
        policy: Policy,
        as_of: AsOf = None,
        allow_draft: AllowDraft = False,
        trace: Annotated[bool, Query(description="include each step-by-step trace")] = False,
    ) -> Any:
        deadline, snapshot, body = await start(request, key, policy)
        items = shipments(body, settings.max_batch)

        def outcomes() -> Iterator[Valuation | TivError]:
            """Each item's valuation or error, in order: one `value_many` stream sharing
            everything compiled (or `value` one by one, which writes the audit record)."""
            if service.audit is not None:
                for item in items:
                    try:
                        if isinstance(item, FactsError):
                            raise item
                        yield value(
                            snapshot.rules,
                            item,
                            policy=policy,
                            as_of=as_of,
                            allow_draft=allow_draft,
                            trace=trace,
                            audit=service.audit,
                            budget=budget,
                        )
                    except TivError as error:
                        yield error
                return
            valued = value_many(
                snapshot.rules,
                (item for item in items if not isinstance(item, FactsError)),
                policy=policy,
                as_of=as_of,
                allow_draft=allow_draft,
                trace=trace,
                budget=budget,
            )
            for item in items:
                yield item if isinstance(item, FactsError) else next(valued)

        def work() -> tuple[list[str], int]:
            """Each result as the JSON text `respond` would write, and how many failed."""
            results: list[str] = []
            valued: Counter[tuple[str, str, str]] = Counter()
            failures: Counter[str] = Counter()
            stream = outcomes()
            try:
                for index in range(len(items)):
                    if time.monotonic() > deadline:
                        break  # the answer is a 503 already; stop spending the CPU
                    outcome = next(stream)
                    if isinstance(outcome, Valuation):
                        ref = outcome.policy
                        valued[ref.id, ref.version, outcome.decision] += 1
                        results.append(
                            f'{{"index":{index},"valuation":{outcome.model_dump_json()}}}'
                        )
                    else:
                        failures[outcome.kind] += 1
                        _, payload = tiv_error(outcome, snapshot, policy)
                        results.append(_COMPACT({"index": index, "error": payload}))
            finally:  # counted once per kind: each count is a locked file write
                for (pack, version, decision), count in valued.items():
                    service.metrics.valuation(pack, version, decision, count)
                for kind, count in failures.items():
                    service.metrics.error(kind, count)
            return results, failures.total()

        results, failed = await service.in_thread(work, deadline)
        if len(results) < len(items):
            raise service.over_budget()
        # The body `respond` would write for {"rules_id", "count", "failed", "results"}.
        text = (
            f'{{"rules_id":{_COMPACT(snapshot.rules_id)},"count":{len(results)},'
            f'"failed":{failed},"results":[{",".join(results)}]}}'
        )
        return _json_text(text, snapshot)

    @app.post(
        "/v1/claims",
        response_model=Claim,
        summary="Settle a loss",
        description='The body is `{"shipment": <facts>, "loss": <loss>}`; the shipment is '
        "valued, then the pack's claims formulas settle the loss (as `tiv claim --format json`). "
        'A loss is `{"kind": "total"}`, `{"kind": "partial", "damage_percent": '
        '"25"}`, or a partial loss with `gross_sound_value` and `gross_damaged_value`.',
        responses=errors_doc(401, 404, 409, 413, 422, 503),
        openapi_extra=body_doc(
            {
                "type": "object",
                "required": ["shipment", "loss"],
                "properties": {"shipment": SHIPMENT_REF, "loss": LOSS_REF},
                "additionalProperties": False,
            },
            "the shipment facts and the loss",
        ),
        tags=["claims"],
    )
    async def post_claim(
        request: Request,
        key: Key,
        policy: Policy,
        as_of: AsOf = None,
        allow_draft: AllowDraft = False,
        trace: Annotated[bool, Query(description="include the step-by-step traces")] = True,
    ) -> Any:
        deadline, snapshot, body = await start(request, key, policy)
        facts, loss = claim_body(body)

        def settle() -> Claim:
            result = claim(
                snapshot.rules,
                facts,
                loss,
                policy=policy,
                as_of=as_of,
                allow_draft=allow_draft,
                trace=trace,
                audit=service.audit,
                budget=budget,
                deadline=_ns(deadline),
            )
            service.metrics.claim(result.valuation.policy.id, result.valuation.policy.version)
            return result

        try:
            result = await service.in_thread(settle, deadline)
        except TivError as error:
            status, payload, headers = failed(error, snapshot, policy)
            for problem in payload["problems"]:  # facts paths are inside `shipment`
                path = problem.get("path")
                if path and not path.startswith("loss") and error.kind == "invalid_facts":
                    problem["path"] = f"shipment.{path}"
            return respond(payload, snapshot, status, headers)
        return respond(result.model_dump(mode="json"), snapshot)

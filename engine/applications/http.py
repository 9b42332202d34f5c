"""The application endpoints of the HTTP service, as a FastAPI router.

    POST /v1/quotes?policy=ID               {"insured", "conveyance"?, "shipment": {...}}
    GET  /v1/quotes/{id}
    POST /v1/quotes/{id}/review             {"decision": "approve"|"decline", "by", "reason",
                                             "premium"?, "conditions"?}  (underwriter role)
    POST /v1/quotes/{id}/bind               {"payment_ref", "amount"}
    GET  /v1/policies/{id}
    GET  /v1/policies/{id}/certificate      the certificate as JSON, with its record
    GET  /v1/policies/{id}/certificate.pdf

Keys and tenants are the service's own: the router is given the service's principal
dependency (request -> key), and a key sees only quotes and policies of the packs it may
use; any other id answers 404 as if it did not exist. Reviews need the `underwriter` role.
Amounts in request bodies are read as exact decimals (JSON numbers too, never floats).

The book is the `db` given to `applications_router`, else $TIV_BOOK (a SQLite path or a
postgresql:// URL); without one the endpoints answer 503 saying so. This module imports
neither SQLAlchemy nor the workflow until a book is opened, so the service runs without
the `applications` extra.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from engine import FactsError, RuleSet, SelectionError, TivError
from engine.loading import jsontext

BOOK_ENV = "TIV_BOOK"
UNDERWRITER = "underwriter"
_ID = Path(pattern=r"^[A-Z]-[0-9A-F]{16}$", description="a quote (Q-...) or policy (P-...) id")


class _Refusal(Exception):
    def __init__(self, status: int, kind: str, code: str, message: str, path: str = "") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind
        self.problem: dict[str, Any] = {"code": code, "message": message}
        if path:
            self.problem["path"] = path


def applications_router(
    settings: Any,
    current_rules: Callable[[], RuleSet],
    principal: Callable[..., Any],
    *,
    db: str | None = None,
) -> APIRouter:
    """The router. `settings`: the service's (max_body_bytes, audit); `current_rules`:
    the rule set now loaded (it changes on reload); `principal`: the dependency that
    authenticates a request and returns its key (name, roles, may_use(pack_id))."""
    router = APIRouter(tags=["applications"])
    auth = Depends(principal)  # the service's own authentication: keys, roles, tenants
    location = db or os.environ.get(BOOK_ENV) or None
    opened: dict[str, Any] = {}
    lock = threading.Lock()
    max_body = int(getattr(settings, "max_body_bytes", 1_048_576))

    def book() -> Any:
        if location is None:
            raise _Refusal(
                503,
                "no_book",
                "book.none",
                f"this service keeps no book of quotes and policies: start it with {BOOK_ENV}="
                "PATH or a postgresql:// URL",
            )
        with lock:
            if "book" not in opened:
                from engine.applications import Book

                audit = getattr(settings, "audit", None)
                opened["book"] = Book(location, current_rules, audit=audit)
            return opened["book"]

    async def run(work: Callable[[], Any], status: int = 200) -> Response:
        from engine.applications.errors import ApplicationError

        try:
            result = await anyio.to_thread.run_sync(work)
        except _Refusal as refusal:
            return _error(refusal.status, refusal.kind, [refusal.problem])
        except ApplicationError as exc:
            return _error(exc.http_status, exc.meaning, [exc.to_dict()])
        except TivError as exc:
            return _error(_status_of(exc), exc.kind, [_shipment_problem(p) for p in exc.problems])
        if isinstance(result, Response):
            return result
        return JSONResponse(result.model_dump(mode="json"), status_code=status)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > max_body:
            raise _Refusal(413, "too_large", "request.too_large", f"body over {max_body} bytes")
        try:  # the one strict reader: exact numbers, repeated keys and NaN refused
            data = jsontext.loads(raw or b"null")
        except FactsError as exc:
            first = exc.problems[0]
            raise _Refusal(
                422, "invalid_request", first.code, first.message, first.location.path
            ) from None
        if not isinstance(data, dict):
            raise _Refusal(422, "invalid_request", "request.type", "the body must be a JSON object")
        return data

    def visible(key: Any, what: str, ident: str, get: Callable[[str], Any]) -> Any:
        """The quote or policy `ident` if this key may see its pack; else 404, exactly as
        if it did not exist (another tenant's ids are not confirmed)."""
        from engine.applications.errors import ApplicationError

        try:
            found = get(ident)
        except ApplicationError as exc:
            if exc.meaning != "not_found":
                raise
            found = None
        if found is None or not key.may_use(found.policy.id):
            raise _Refusal(404, "not_found", f"{what}.unknown", f"no {what} {ident}")
        return found

    def visible_quote(key: Any, quote_id: str) -> Any:
        return visible(key, "quote", quote_id, book().get_quote)

    def visible_policy(key: Any, policy_id: str) -> Any:
        return visible(key, "policy", policy_id, book().get_policy)

    @router.post(
        "/v1/quotes",
        summary="Quote an insurance application",
        description="Value the shipment under the pack and record a quote that can be bound "
        "at its price until `valid_until`. Answers 201 with the quote; a referred quote "
        "waits for an underwriter's review.",
        status_code=201,
    )
    async def post_quote(
        request: Request,
        policy: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]+(@[0-9]+(\.[0-9]+)*)?$")],
        allow_draft: bool = False,
        key: Any = auth,
    ) -> Response:
        pack_id = policy.partition("@")[0]
        if not key.may_use(pack_id) or pack_id not in current_rules().packs:
            return _error(404, "no_policy", [_problem("policy.unknown", f"no pack `{pack_id}`")])
        try:
            data = await body_of(request)
        except _Refusal as refusal:
            return _error(refusal.status, refusal.kind, [refusal.problem])
        shipment = data.get("shipment")

        def work() -> Any:
            if not isinstance(shipment, dict):
                raise _Refusal(
                    422, "invalid_facts", "facts.type", "must be a JSON object", "shipment"
                )
            insured = data.get("insured")
            if not isinstance(insured, str) or not insured.strip():
                raise _Refusal(422, "invalid_request", "input.missing", "required", "insured")
            conveyance = data.get("conveyance")
            return book().quote(
                shipment,
                policy=policy,
                insured=insured,
                conveyance=conveyance if isinstance(conveyance, str) else None,
                allow_draft=allow_draft,
            )

        return await run(work, 201)

    @router.get("/v1/quotes/{quote_id}", summary="A quote")
    async def get_quote(quote_id: Annotated[str, _ID], key: Any = auth) -> Response:
        return await run(lambda: visible_quote(key, quote_id))

    @router.post(
        "/v1/quotes/{quote_id}/review",
        summary="An underwriter's decision on a referred quote",
        description="Needs a key with the `underwriter` role. `premium` overrides the rules' "
        "premium (which stays recorded next to it); a decline is final.",
    )
    async def post_review(
        request: Request, quote_id: Annotated[str, _ID], key: Any = auth
    ) -> Response:
        if UNDERWRITER not in key.roles:
            return _error(
                403,
                "forbidden",
                [
                    _problem(
                        "auth.role", "this key lacks the `underwriter` role this endpoint needs"
                    )
                ],
            )
        try:
            data = await body_of(request)
        except _Refusal as refusal:
            return _error(refusal.status, refusal.kind, [refusal.problem])

        def work() -> Any:
            visible_quote(key, quote_id)
            decision = data.get("decision")
            if decision not in ("approve", "decline"):
                raise _Refusal(
                    422, "invalid_request", "input.decision", "approve or decline", "decision"
                )
            premium = data.get("premium")
            if premium is not None and not isinstance(premium, str | Decimal | int):
                raise _Refusal(422, "invalid_request", "input.amount", "a decimal", "premium")
            return book().review(
                quote_id,
                approve=decision == "approve",
                by=str(data.get("by") or key.name),
                reason=str(data.get("reason") or ""),
                premium=None if premium is None else str(premium),
                conditions=data.get("conditions")
                if isinstance(data.get("conditions"), str)
                else None,
            )

        return await run(work)

    @router.post(
        "/v1/quotes/{quote_id}/bind",
        summary="Bind a quote by recording its payment",
        description="The amount must equal the premium due exactly; the quote must be "
        "accepted or approved and not expired. Of two racing binds exactly one wins; the "
        "other answers 409. Answers 201 with the policy.",
        status_code=201,
    )
    async def post_bind(
        request: Request, quote_id: Annotated[str, _ID], key: Any = auth
    ) -> Response:
        try:
            data = await body_of(request)
        except _Refusal as refusal:
            return _error(refusal.status, refusal.kind, [refusal.problem])

        def work() -> Any:
            visible_quote(key, quote_id)
            amount = data.get("amount")
            if not isinstance(amount, str | Decimal | int):
                raise _Refusal(422, "invalid_request", "input.amount", "a decimal string", "amount")
            ref = data.get("payment_ref")
            if not isinstance(ref, str):
                raise _Refusal(422, "invalid_request", "input.missing", "required", "payment_ref")
            return book().bind(quote_id, payment_ref=ref, amount=str(amount))

        return await run(work, 201)

    @router.get("/v1/policies/{policy_id}", summary="A bound policy with its endorsements")
    async def get_policy(policy_id: Annotated[str, _ID], key: Any = auth) -> Response:
        return await run(lambda: visible_policy(key, policy_id))

    @router.get(
        "/v1/policies/{policy_id}/certificate",
        summary="The certificate of insurance as JSON, with the record its hash covers",
    )
    async def get_certificate(policy_id: Annotated[str, _ID], key: Any = auth) -> Response:
        def work() -> Any:
            visible_policy(key, policy_id)
            return book().certificate(policy_id)

        return await run(work)

    @router.get(
        "/v1/policies/{policy_id}/certificate.pdf",
        summary="The certificate of insurance as PDF",
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}},
    )
    async def get_certificate_pdf(policy_id: Annotated[str, _ID], key: Any = auth) -> Response:
        def work() -> Response:
            policy = visible_policy(key, policy_id)
            pdf = book().certificate_pdf(policy_id)
            name = f"{policy.certificate_number}.pdf"
            return Response(
                pdf,
                media_type="application/pdf",
                headers={"Content-Disposition": f'inline; filename="{name}"'},
            )

        return await run(work)

    return router


def _problem(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _error(status: int, kind: str, problems: list[dict[str, Any]]) -> JSONResponse:
    # The service's error shape: {"error", "problems": [{code, message, path?}], "rules_id"}.
    return JSONResponse({"error": kind, "problems": problems, "rules_id": None}, status)


def _status_of(error: TivError) -> int:
    if isinstance(error, SelectionError):
        unknown = any(
            p.code in ("policy.unknown", "policy.unknown_version") for p in error.problems
        )
        return 404 if unknown else 409
    return 422


def _shipment_problem(problem: Any) -> dict[str, Any]:
    data: dict[str, Any] = problem.to_dict()
    data.pop("file", None)
    if data.get("path"):
        data["path"] = f"shipment.{data['path']}"
    return data


__all__ = ["BOOK_ENV", "UNDERWRITER", "applications_router"]

"""The HTTP valuation service: `create_app(settings)` builds the FastAPI application.

In: `Settings` (rules folder, keys, limits) and optionally an already loaded
`RulesState`. Out: an ASGI app serving, under /v1, valuations (one shipment or a list),
pack and country-rule listings, pack texts, audit records and a rules reload; plus
/healthz, /readyz, /metrics, /openapi.json and /docs.

Rules of the house:
- Bodies are read as bytes, capped at `max_body_bytes`, and handed to the engine's own
  facts reader, which parses JSON numbers as Decimal: no amount ever becomes a float.
- Every error is JSON (`ErrorBody`): the TivError's problems with their JSON paths, and
  the status its class calls for. Bad input never gets a 500; a bug gets a 500 without
  a traceback (the traceback goes to the server log).
- Valuations run in a thread pool of `threads` threads, so the event loop keeps answering
  while they compute; the durable_rules matcher serialises its own calls. Each request
  has `time_budget_s` from arrival to answer, waiting for a thread included: past it,
  503 and a Retry-After.
- A request takes `state.current` once: a reload meanwhile does not change its rules.
- A key sees only its packs (and their audit records): any other pack is answered
  exactly as a pack that does not exist.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import uvicorn
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine._version import __version__
from engine.api import claim, value
from engine.errors import (
    EvaluationError,
    FactsError,
    Location,
    Problem,
    RulesError,
    SelectionError,
    TivError,
)
from engine.facts import Shipment
from engine.result import Claim, Valuation
from engine.schema.models import Loss
from engine.service.metrics import Metrics
from engine.service.models import (
    BatchResult,
    CountryList,
    CountrySummary,
    CountryVersion,
    ErrorBody,
    Health,
    PackList,
    PackSummary,
    PackText,
    PackVersion,
    ReloadResult,
    VersionWindow,
)
from engine.service.settings import ALL_PACKS, ROLES, ApiKey, Settings, digest
from engine.service.state import RulesState, Snapshot

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines join its log

RULES_HEADER = "Tiv-Rules-Id"
_RECORD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OPEN_KEY = ApiKey("open", "", frozenset({ALL_PACKS}), ROLES)
T = TypeVar("T")


class ApiError(Exception):
    """An answer other than 200: a status, an error class and its problems."""

    def __init__(
        self,
        status: int,
        kind: str,
        problems: Problem | Iterable[Problem],
        *,
        headers: Mapping[str, str] | None = None,
        versions: list[VersionWindow] | None = None,
        rules_id: str | None = None,
    ) -> None:
        self.status = status
        self.kind = kind
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.headers = dict(headers or {})
        self.versions = versions
        self.rules_id = rules_id
        super().__init__(f"{status} {kind}")

    def body(self) -> dict[str, Any]:
        return error_body(
            self.kind, [_problem_dict(p) for p in self.problems], self.rules_id, self.versions
        )


def error_body(
    kind: str,
    problems: list[dict[str, Any]],
    rules_id: str | None,
    versions: list[VersionWindow] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": kind, "problems": problems, "rules_id": rules_id}
    if versions is not None:
        body["versions"] = [v.model_dump(mode="json") for v in versions]
    return body


def _problem_dict(problem: Problem) -> dict[str, Any]:
    """A Problem as JSON; `<input>` (the request body) is not named, it is implied."""
    data = problem.to_dict()
    if data.get("file") == "<input>":
        del data["file"]
    return data


# --- TivError -> HTTP ---------------------------------------------------------------

_NOT_FOUND_CODES = {"policy.unknown", "policy.unknown_version"}


def _status_of(error: TivError) -> int:
    if isinstance(error, SelectionError):
        if any(p.code in _NOT_FOUND_CODES for p in error.problems):
            return 404
        return 409  # the pack exists but no version may value on that date / draft
    if isinstance(error, FactsError | EvaluationError):
        return 422
    return 500  # RulesError cannot reach a valuation: the rules were checked at load


def _versions(snapshot: Snapshot, policy: str) -> list[VersionWindow] | None:
    pack_id = policy.partition("@")[0]
    versions = snapshot.rules.packs.get(pack_id)
    if versions is None:
        return None
    return [
        VersionWindow(
            version=p.version,
            status=p.status,  # type: ignore[arg-type]
            effective_from=p.effective_from,
            effective_to=p.effective_to,
        )
        for p in versions
    ]


def _tiv_error(error: TivError, snapshot: Snapshot, policy: str) -> tuple[int, dict[str, Any]]:
    status = _status_of(error)
    dated = any(p.code in ("policy.not_in_effect", "policy.draft") for p in error.problems)
    versions = _versions(snapshot, policy) if dated else None
    problems = [_problem_dict(p) for p in error.problems]
    return status, error_body(error.kind, problems, snapshot.rules_id, versions)


# --- request plumbing ---------------------------------------------------------------


class _Timing:
    """Pure ASGI middleware: every request's route, status and duration into Metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request(route, scope["method"], status, time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ApiError(
        413,
        "too_large",
        Problem(
            "request.too_large",
            f"the request body is over the limit of {limit} bytes; send fewer shipments "
            "per request or ask the operator to raise --max-body",
        ),
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _require_object(body: bytes) -> None:
    """The facts reader also takes YAML; over HTTP the body must be a JSON object."""
    if body.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{":
        return
    try:
        body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.encoding", f"the body is not UTF-8 text (byte {error.start})"),
        ) from None
    raise ApiError(
        422,
        "invalid_facts",
        Problem("facts.type", "the body must be a JSON object of shipment facts"),
    )


def split_array(body: bytes, limit: int) -> list[str]:
    """A JSON array's elements, each as its own text.

    Each element's text goes to the facts reader as is, so it gets the same exact
    parsing and checks (duplicate keys, NaN, Decimal numbers) as a single valuation.
    The scan parses numbers as Decimal too, though it keeps only the positions.
    """
    text = _text(body)
    decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=lambda _: None)
    items: list[str] = []
    position = _skip(text, 0)
    if text[position : position + 1] != "[":
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.type", "the body must be a JSON array of shipment facts objects"),
        )
    position = _skip(text, position + 1)
    if text[position : position + 1] == "]":
        return items
    while True:
        try:
            _, end = decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError, ValueError) as error:
            where = getattr(error, "msg", "too deep or too long a number")
            raise ApiError(
                422,
                "invalid_facts",
                Problem(
                    "facts.syntax",
                    f"invalid JSON in shipment {len(items)}: {where}",
                    Location(
                        line=getattr(error, "lineno", 0),
                        col=getattr(error, "colno", 0),
                        path=f"[{len(items)}]",
                    ),
                ),
            ) from None
        items.append(text[position:end])
        if len(items) > limit:
            raise ApiError(
                422,
                "too_many_shipments",
                Problem(
                    "request.too_many_shipments",
                    f"more than {limit} shipments in one request; split the list "
                    "(the limit is the server's --max-batch)",
                ),
            )
        position = _skip(text, end)
        separator = text[position : position + 1]
        if separator == "]":
            if _skip(text, position + 1) != len(text):
                raise _syntax(text, position + 1, "unexpected text after the array")
            return items
        if separator != ",":
            raise _syntax(text, position, "expected , or ] after a shipment")
        position = _skip(text, position + 1)


def split_object(body: bytes, wanted: tuple[str, ...]) -> dict[str, str]:
    """The members of a JSON object, each value as its own text (see `split_array`).

    Every name in `wanted` must be there, and nothing else; a repeated name is refused,
    since JSON readers disagree on which value wins.
    """
    text = _text(body)
    decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=lambda _: None)
    members: dict[str, str] = {}
    position = _skip(text, 0)
    if text[position : position + 1] != "{":
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.type", f"the body must be a JSON object with {' and '.join(wanted)}"),
        )
    position = _skip(text, position + 1)
    while text[position : position + 1] != "}":
        try:
            name, position = decoder.raw_decode(text, position)
            position = _skip(text, position)
            if not isinstance(name, str) or text[position : position + 1] != ":":
                raise _syntax(text, position, "expected a member name and :")
            start = _skip(text, position + 1)
            _, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError, ValueError) as error:
            message = getattr(error, "msg", "too deep or too long a number")
            raise _syntax(text, getattr(error, "pos", position), message) from None
        if name in members:
            raise ApiError(
                422,
                "invalid_facts",
                Problem(
                    "facts.duplicate_key",
                    f"duplicate key {name!r}: keep only one",
                    Location(path=name),
                ),
            )
        members[name] = text[start:end]
        position = _skip(text, end)
        if text[position : position + 1] == ",":
            position = _skip(text, position + 1)
        elif text[position : position + 1] != "}":
            raise _syntax(text, position, "expected , or } after a member")
    if _skip(text, position + 1) != len(text):
        raise _syntax(text, position + 1, "unexpected text after the object")
    problems = [
        Problem("facts.required", "is required", Location(path=name))
        for name in wanted
        if name not in members
    ] + [
        Problem(
            "facts.unknown_field",
            f"unknown field {name!r}; expected {', '.join(wanted)}",
            Location(path=name),
        )
        for name in members
        if name not in wanted
    ]
    if problems:
        raise ApiError(422, "invalid_facts", problems)
    return members


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.encoding", f"the body is not UTF-8 text (byte {error.start})"),
        ) from None


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _syntax(text: str, position: int, message: str) -> ApiError:
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    return ApiError(
        422,
        "invalid_facts",
        Problem("facts.syntax", f"invalid JSON: {message}", Location(line=line, col=col)),
    )


# --- the application ----------------------------------------------------------------


class Service:
    """What the handlers share: settings, the rules, metrics, the audit log, the pool."""

    def __init__(self, settings: Settings, state: RulesState) -> None:
        self.settings = settings
        self.state = state
        self.metrics = Metrics()
        self.keys = {key.sha256: key for key in settings.keys}
        self.audit = _open_audit(settings)
        self.limiter: anyio.CapacityLimiter | None = None  # made in the event loop
        self.ready = False

    def authenticate(self, request: Request) -> ApiKey:
        if self.settings.open:
            return OPEN_KEY
        token = request.headers.get("x-api-key", "")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if not token and scheme.lower() == "bearer":
            token = credentials.strip()
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                Problem(
                    "auth.missing",
                    "send an API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = self.keys.get(digest(token))
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                Problem("auth.invalid", "unknown API key"),
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key

    async def in_thread(self, func: Callable[[], T], deadline: float) -> T:
        """Run `func` in the valuation pool; 503 if the request's budget runs out first."""
        if self.limiter is None:  # the app was run without its lifespan (a bare ASGI test)
            self.limiter = anyio.CapacityLimiter(self.settings.threads)
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            with anyio.fail_after(remaining):
                return await anyio.to_thread.run_sync(
                    func, abandon_on_cancel=True, limiter=self.limiter
                )
        except TimeoutError:
            # The thread, if it started, finishes its current shipment and its result is
            # dropped: Python threads cannot be stopped, batch work checks the deadline.
            raise self.over_budget() from None

    def over_budget(self) -> ApiError:
        budget = self.settings.time_budget_s
        return ApiError(
            503,
            "time_budget",
            Problem(
                "request.time_budget",
                f"the request did not finish within the time budget of {budget:g} s; "
                "retry later or send fewer shipments per request",
            ),
            headers={"Retry-After": str(max(1, round(budget)))},
        )


def _open_audit(settings: Settings) -> _AuditThread | None:
    if settings.audit is None:
        return None
    return _AuditThread(settings.audit)


class _AuditThread:
    """The audit log, used from one thread of its own.

    Valuations run on many pool threads, but a SQLite connection belongs to the thread
    that made it: every call is handed to this one thread, which also serialises writes
    (across processes, the log's own transactions do).
    """

    def __init__(self, path: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from engine.audit import AuditLog

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiv-audit")
        self._log = self._thread.submit(AuditLog, path).result()

    def record(self, kind: str, facts: Mapping[str, Any], result: Valuation, rules: Any) -> str:
        return str(self._thread.submit(self._log.record, kind, facts, result, rules).result())

    def get(self, record_id: str) -> Any:
        """The record, or None when there is none with this id."""
        from engine.audit import AuditError

        try:
            return self._thread.submit(self._log.get, record_id).result()
        except AuditError:
            return None


def _visible_pack(snapshot: Snapshot, key: ApiKey, policy: str) -> str:
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


def _pack_version(p: Any) -> PackVersion:
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


def _pack_summaries(snapshot: Snapshot, key: ApiKey) -> list[PackSummary]:
    return [
        PackSummary(id=pack_id, versions=[_pack_version(p) for p in versions])
        for pack_id, versions in snapshot.rules.packs.items()
        if key.may_use(pack_id)
    ]


def _json(data: Any, snapshot: Snapshot | None, status: int = 200) -> JSONResponse:
    headers = {RULES_HEADER: snapshot.rules_id} if snapshot else None
    return JSONResponse(data, status_code=status, headers=headers)


_SHIPMENT_REF = {"$ref": "#/components/schemas/Shipment"}
_LOSS_REF = {"$ref": "#/components/schemas/Loss"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _body_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _errors_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        401: "no API key, or an unknown one",
        403: "the key lacks the role this endpoint needs",
        404: "no such pack, version or record (or not this key's)",
        409: "the pack has no version that may value on that date (the body lists them)",
        413: "the body is over the size limit",
        422: "invalid facts (each problem has its JSON path), too many shipments, "
        "or an evaluation that failed",
        503: "the request's time budget ran out",
    }
    return {s: {"model": ErrorBody, "description": meaning[s]} for s in statuses}


def _principal(request: Request) -> ApiKey:
    service: Service = request.app.state.service
    return service.authenticate(request)


# Parameter types shared by the endpoints. Module level, so FastAPI can resolve them.
Key = Annotated[ApiKey, Depends(_principal)]
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


def create_app(settings: Settings, state: RulesState | None = None) -> FastAPI:
    """The service. Loads the rules now unless `state` is given: raises RulesError."""
    service = Service(settings, state or RulesState(settings.rules))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.limiter = anyio.CapacityLimiter(settings.threads)
        async with anyio.create_task_group() as tasks:
            if settings.watch_s > 0:
                tasks.start_soon(_watch, service)
            service.ready = True
            try:
                yield
            finally:
                service.ready = False
                tasks.cancel_scope.cancel()

    app = FastAPI(
        title="tiv valuation service",
        version=__version__,
        description=(
            "Total Insured Value of cargo shipments from versioned rule packs. Amounts "
            "are decimal strings (numbers in requests are read exactly, never as floats). "
            "Authenticate with `Authorization: Bearer KEY` or `X-API-Key: KEY`. Every "
            f"valuation response carries the `{RULES_HEADER}` header: the loaded rule set."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Timing, metrics=service.metrics)
    _install_error_handlers(app, service)
    # Insurance applications (quotes, binds, certificates): their own router and module.
    from engine.applications.http import applications_router

    app.include_router(
        applications_router(settings, lambda: service.state.current.rules, _principal)
    )

    def require_role(key: ApiKey, role: str) -> None:
        if role not in key.roles:
            raise ApiError(
                403,
                "forbidden",
                Problem("auth.role", f"this key lacks the `{role}` role this endpoint needs"),
            )

    def value_one(
        snapshot: Snapshot,
        facts: str | bytes,
        policy: str,
        as_of: Any,
        allow_draft: bool,
        trace: bool,
    ) -> Valuation:
        result = value(
            snapshot.rules,
            facts,
            policy=policy,
            as_of=as_of,
            allow_draft=allow_draft,
            trace=trace,
            audit=service.audit,
        )
        service.metrics.valuation(result.policy.id, result.policy.version, result.decision)
        return result

    @app.post(
        "/v1/valuations",
        response_model=Valuation,
        summary="Value one shipment",
        description="The body is the shipment facts (the JSON form of `tiv value`'s input); "
        "the answer is exactly `tiv value --format json`.",
        responses=_errors_doc(401, 404, 409, 413, 422, 503),
        openapi_extra=_body_doc(_SHIPMENT_REF, "the shipment facts"),
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
        deadline = time.monotonic() + settings.time_budget_s
        snapshot = service.state.current
        _visible_pack(snapshot, key, policy)
        body = await read_body(request, settings.max_body_bytes)
        _require_object(body)
        try:
            result = await service.in_thread(
                lambda: value_one(snapshot, body, policy, as_of, allow_draft, trace), deadline
            )
        except TivError as error:
            service.metrics.error(error.kind)
            status, payload = _tiv_error(error, snapshot, policy)
            return _json(payload, snapshot, status)
        return _json(result.model_dump(mode="json"), snapshot)

    @app.post(
        "/v1/valuations/batch",
        response_model=BatchResult,
        summary="Value a list of shipments",
        description="The body is a JSON array of shipment facts. Each shipment gets its own "
        "result or error, in request order; one bad shipment does not fail the others. "
        "Traces are left out unless `trace=true`.",
        responses=_errors_doc(401, 404, 413, 422, 503),
        openapi_extra=_body_doc(
            {"type": "array", "items": _SHIPMENT_REF, "maxItems": settings.max_batch},
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
        deadline = time.monotonic() + settings.time_budget_s
        snapshot = service.state.current
        _visible_pack(snapshot, key, policy)
        body = await read_body(request, settings.max_body_bytes)
        items = split_array(body, settings.max_batch)

        def work() -> list[dict[str, Any]]:
            results: list[dict[str, Any]] = []
            for index, text in enumerate(items):
                if time.monotonic() > deadline:
                    break  # the answer is a 503 already; stop spending the CPU
                try:
                    result = value_one(snapshot, text, policy, as_of, allow_draft, trace)
                except TivError as error:
                    service.metrics.error(error.kind)
                    _, payload = _tiv_error(error, snapshot, policy)
                    results.append({"index": index, "error": payload})
                else:
                    results.append({"index": index, "valuation": result.model_dump(mode="json")})
            return results

        results = await service.in_thread(work, deadline)
        if len(results) < len(items):
            raise service.over_budget()
        failed = sum("error" in r for r in results)
        payload = {
            "rules_id": snapshot.rules_id,
            "count": len(results),
            "failed": failed,
            "results": results,
        }
        return _json(payload, snapshot)

    @app.post(
        "/v1/claims",
        response_model=Claim,
        summary="Settle a loss",
        description='The body is `{"shipment": <facts>, "loss": <loss>}`; the shipment is '
        "valued, then the pack's claims formulas settle the loss (as `tiv claim --format json`). "
        'A loss is `{"kind": "total"}`, `{"kind": "partial", "damage_percent": '
        '"25"}`, or a partial loss with `gross_sound_value` and `gross_damaged_value`.',
        responses=_errors_doc(401, 404, 409, 413, 422, 503),
        openapi_extra=_body_doc(
            {
                "type": "object",
                "required": ["shipment", "loss"],
                "properties": {"shipment": _SHIPMENT_REF, "loss": _LOSS_REF},
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
        deadline = time.monotonic() + settings.time_budget_s
        snapshot = service.state.current
        _visible_pack(snapshot, key, policy)
        body = await read_body(request, settings.max_body_bytes)
        members = split_object(body, ("shipment", "loss"))
        facts = members["shipment"]
        if not facts.startswith("{"):
            raise ApiError(
                422,
                "invalid_facts",
                Problem(
                    "facts.type",
                    "must be a JSON object of shipment facts",
                    Location(path="shipment"),
                ),
            )
        try:
            loss = json.loads(members["loss"], parse_float=Decimal, parse_constant=_no_constant)
        except ValueError:
            loss = None
        if not isinstance(loss, dict):
            raise ApiError(
                422,
                "invalid_facts",
                Problem(
                    "facts.loss",
                    'must be an object such as {"kind": "total"}',
                    Location(path="loss"),
                ),
            )

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
            )
            service.metrics.claim(result.valuation.policy.id, result.valuation.policy.version)
            return result

        try:
            result = await service.in_thread(settle, deadline)
        except TivError as error:
            service.metrics.error(error.kind)
            status, payload = _tiv_error(error, snapshot, policy)
            for problem in payload["problems"]:  # facts paths are inside `shipment`
                path = problem.get("path")
                if path and not path.startswith("loss") and error.kind == "invalid_facts":
                    problem["path"] = f"shipment.{path}"
            return _json(payload, snapshot, status)
        return _json(result.model_dump(mode="json"), snapshot)

    @app.get(
        "/v1/packs",
        response_model=PackList,
        summary="The packs this key may use",
        responses=_errors_doc(401),
        tags=["rules"],
    )
    async def get_packs(key: Key) -> Any:
        snapshot = service.state.current
        packs = [s.model_dump(mode="json") for s in _pack_summaries(snapshot, key)]
        return _json({"rules_id": snapshot.rules_id, "packs": packs}, snapshot)

    @app.get(
        "/v1/packs/{pack_id}",
        response_model=PackSummary,
        summary="One pack's versions and windows",
        responses=_errors_doc(401, 404),
        tags=["rules"],
    )
    async def get_pack(key: Key, pack_id: Annotated[str, Path()]) -> Any:
        snapshot = service.state.current
        _visible_pack(snapshot, key, pack_id)
        versions = [_pack_version(p) for p in snapshot.rules.packs[pack_id]]
        summary = PackSummary(id=pack_id, versions=versions)
        return _json(summary.model_dump(mode="json"), snapshot)

    @app.get(
        "/v1/packs/{pack_id}/{version}",
        response_model=PackText,
        summary="One pack version: its YAML, byte for byte, and sha256",
        responses=_errors_doc(401, 404),
        tags=["rules"],
    )
    async def get_pack_version(
        key: Key, pack_id: Annotated[str, Path()], version: Annotated[str, Path()]
    ) -> Any:
        snapshot = service.state.current
        _visible_pack(snapshot, key, pack_id)
        for pack in snapshot.rules.packs[pack_id]:
            if pack.version == version:
                text = snapshot.texts[pack.source].decode("utf-8")
                out = PackText(**_pack_version(pack).model_dump(), yaml=text)
                return _json(out.model_dump(mode="json"), snapshot)
        listed = ", ".join(p.version for p in snapshot.rules.packs[pack_id])
        raise ApiError(
            404,
            "no_policy",
            Problem(
                "policy.unknown_version", f"{pack_id} has no version {version} (versions: {listed})"
            ),
            rules_id=snapshot.rules_id,
        )

    @app.get(
        "/v1/countries",
        response_model=CountryList,
        summary="Country duty rules: versions and effective windows",
        description="Country rules are shared reference data: every key may read them.",
        responses=_errors_doc(401),
        tags=["rules"],
    )
    async def get_countries(key: Key) -> Any:
        snapshot = service.state.current
        countries = [
            CountrySummary(
                id=country_id,
                versions=[
                    CountryVersion(
                        id=c.id,
                        version=c.version,
                        status=c.status,
                        title=c.title,
                        effective_from=c.effective_from,
                        effective_to=c.effective_to,
                        sha256=c.sha256,
                        source=c.source,
                        customs_union=getattr(c, "customs_union", None),
                    )
                    for c in versions
                ],
            ).model_dump(mode="json")
            for country_id, versions in getattr(snapshot.rules, "duty_rules", {}).items()
        ]
        return _json({"rules_id": snapshot.rules_id, "countries": countries}, snapshot)

    @app.get(
        "/v1/audit/{record_id}",
        summary="One audit record",
        description="Visible only to keys whose packs include the record's pack.",
        responses=_errors_doc(401, 404),
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
        data = record.model_dump(mode="json") if hasattr(record, "model_dump") else record
        return _json(data, snapshot)

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResult,
        summary="Load the rule folder anew and swap it in",
        description="The folder is checked completely (structure, meaning, examples) "
        "first; if anything is wrong the answer lists every problem and the rules in "
        "service stay. Needs a key with the `admin` role.",
        responses=_errors_doc(401, 403, 422),
        tags=["admin"],
    )
    async def post_reload(key: Key) -> Any:
        require_role(key, "admin")
        try:
            outcome = await anyio.to_thread.run_sync(service.state.reload)
        except RulesError as error:
            service.metrics.reload("refused")
            log.warning("tiv: reload refused: %s", error)
            current = service.state.current
            body = error_body(
                error.kind, [_problem_dict(p) for p in error.problems], current.rules_id
            )
            return _json(body, current, 422)
        service.metrics.reload("ok")
        current = service.state.current
        log.info("tiv: rules reloaded: %s -> %s", outcome.previous, outcome.current)
        result = ReloadResult(
            rules_id=outcome.current,
            previous_rules_id=outcome.previous,
            changed=outcome.changed,
            packs=_pack_summaries(current, key),
        )
        return _json(result.model_dump(mode="json"), current)

    @app.get("/healthz", response_model=Health, summary="The process is up", tags=["ops"])
    async def healthz() -> Any:
        return JSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=Health,
        summary="Rules loaded; taking requests",
        responses={503: {"model": Health}},
        tags=["ops"],
    )
    async def readyz() -> Any:
        snapshot = service.state.current
        if not service.ready:
            return JSONResponse({"status": "ok", "rules_id": None}, status_code=503)
        return _json(
            {
                "status": "ready",
                "rules_id": snapshot.rules_id,
                "loaded_at": snapshot.loaded_at.isoformat(),
            },
            snapshot,
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics of this process",
        description="Needs a key with the `metrics` role when keys are configured.",
        tags=["ops"],
    )
    async def metrics(key: Key) -> Any:
        require_role(key, "metrics")
        snapshot = service.state.current
        text = service.metrics.render(
            snapshot.rules, snapshot.rules_id, snapshot.loaded_at.timestamp()
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        # The facts schema is the facts model's own, so requests validate as the engine does.
        facts = Shipment.model_json_schema(ref_template="#/components/schemas/Shipment{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in facts.pop("$defs", {}).items():
            components[f"Shipment{name}"] = definition
        components["Shipment"] = facts
        components["Loss"] = Loss.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _record_pack(record: Any) -> str:
    """The pack an audit record belongs to: the policy file it names."""
    for used in getattr(record, "rule_files", ()):
        if used.role == "policy":
            return str(used.id)
    return ""  # a record that names no pack is no key's to read


async def _watch(service: Service) -> None:
    """Reload when the rule files change on disk (polling: works on every filesystem)."""
    while True:
        await anyio.sleep(service.settings.watch_s)
        if not service.state.changed_on_disk():
            continue
        try:
            outcome = await anyio.to_thread.run_sync(service.state.reload)
        except RulesError as error:
            service.metrics.reload("refused")
            log.warning(
                "tiv: rule files changed but are invalid; keeping %s: %s",
                service.state.current.rules_id,
                error,
            )
        except Exception:  # a bug must not stop the watcher for good
            log.exception("tiv: reload after a file change failed")
        else:
            service.metrics.reload("ok")
            log.info(
                "tiv: rule files changed; reloaded %s -> %s", outcome.previous, outcome.current
            )


def _install_error_handlers(app: FastAPI, service: Service) -> None:
    def rules_id() -> str:
        return service.state.current.rules_id

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        service.metrics.error(error.kind)
        body = error.body()
        body["rules_id"] = body["rules_id"] or rules_id()
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        service.metrics.error("invalid_request")
        problems = [
            {
                "code": f"request.{detail.get('type', 'invalid')}",
                "message": str(detail.get("msg", "is invalid")),
                "path": ".".join(str(part) for part in detail.get("loc", ())),
            }
            for detail in error.errors()
        ]
        return JSONResponse(error_body("invalid_request", problems, rules_id()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        problem = {"code": f"request.{kind}", "message": str(error.detail)}
        return JSONResponse(
            error_body(kind, [problem], rules_id()),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        service.metrics.error("internal")
        log.exception("tiv: internal error on %s %s", request.method, request.url.path)
        problem = {
            "code": "internal",
            "message": f"internal error ({type(error).__name__}); the server log has the "
            "details, please report it",
        }
        return JSONResponse(error_body("internal", [problem], rules_id()), status_code=500)


class NoDelayConfig(uvicorn.Config):
    """uvicorn's Config, whose shared listening socket sets TCP_NODELAY.

    For several workers uvicorn makes the listening socket with protocol 0, so asyncio
    does not set TCP_NODELAY on the connections it accepts, and each response waits on
    the client's delayed ACK: ~40 ms a request (measured: 176 requests/s with 2 workers
    against 516 with 1; 1,343 with this). Accepted connections inherit the option.
    Module level, because the config is pickled to each worker process.
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def run_workers(workers: int, options: Mapping[str, Any]) -> None:
    """Serve with `workers` processes, as uvicorn.run does, on a TCP_NODELAY listener.

    Each worker builds its app with `from_env`; the settings must be in the environment.
    """
    from uvicorn.supervisors import Multiprocess

    config = NoDelayConfig("engine.service.app:from_env", factory=True, workers=workers, **options)
    sock = config.bind_socket()
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
        supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])
    else:
        supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()


def from_env() -> FastAPI:
    """The app of a uvicorn worker process: settings come from $TIV_SERVICE_SETTINGS."""
    import os

    return create_app(Settings.from_json(os.environ["TIV_SERVICE_SETTINGS"]))

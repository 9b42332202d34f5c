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
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine._version import __version__
from engine.applications.http import applications_router
from engine.errors import Location, Problem
from engine.facts import Shipment
from engine.schema.models import Loss
from engine.service import routes
from engine.service.auth import principal
from engine.service.bodies import BodyClock
from engine.service.context import Service, watch
from engine.service.errors import error_body, install_error_handlers, problem_dict
from engine.service.metrics import Metrics
from engine.service.routes.common import RULES_HEADER
from engine.service.settings import Settings
from engine.service.state import RulesState
from engine.service.ui import docs_router, ui_router


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


class _SingleParameters:
    """Pure ASGI middleware: a query parameter given twice is a 422 naming it.

    `?policy=blue-harbour&policy=standard` would otherwise be read as its last value by
    the handler, while a proxy or a log reads the first: one request, two packs. Refused
    before any handler (or authorisation) runs, so the pack checked is the pack valued.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            names = [
                name
                for name, _ in parse_qsl(
                    scope["query_string"].decode("latin-1"),
                    keep_blank_values=True,
                    errors="replace",
                )
            ]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                problems = [
                    problem_dict(
                        Problem(
                            "request.repeated_parameter",
                            f"the query parameter `{name}` is given {names.count(name)} "
                            "times; give it once",
                            Location(path=name),
                        )
                    )
                    for name in repeated
                ]
                body = error_body("invalid_request", problems, None)
                await JSONResponse(body, status_code=422)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, state: RulesState | None = None) -> FastAPI:
    """The service. Loads the rules now unless `state` is given: raises RulesError."""
    service = Service(settings, state or RulesState(settings.rules))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.limiter = anyio.CapacityLimiter(settings.threads)
        if service.heap is not None:
            service.heap.freeze()  # the rules and the app are loaded: what lives on
        async with anyio.create_task_group() as tasks:
            if settings.watch_s > 0:
                tasks.start_soon(watch, service)
            service.ready = True
            try:
                yield
            finally:
                service.ready = False
                tasks.cancel_scope.cancel()
                if service.heap is not None:
                    service.heap.stop()

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
        docs_url=None,  # /docs is served by engine/service/ui from vendored assets, no CDN
    )
    app.state.service = service
    # Outermost last: timing sees every answer, the 422s and 408s of the edges included.
    app.add_middleware(
        BodyClock, timeout_s=settings.body_timeout_s, min_rate=settings.body_min_rate
    )
    app.add_middleware(_SingleParameters)
    app.add_middleware(_Timing, metrics=service.metrics)
    install_error_handlers(app, service)
    for resource in (routes.valuations, routes.rules, routes.audit, routes.ops):
        resource.install(app, service)

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

    # Routers of their own: the offline /docs and the /ui workbench (engine/service/ui), and
    # insurance applications (engine/applications), which imports SQLAlchemy only when a
    # book is opened, so the service runs without the `applications` extra.
    app.include_router(docs_router())
    app.include_router(ui_router(settings, lambda: service.state.current))
    app.include_router(
        applications_router(settings, lambda: service.state.current.rules, principal)
    )
    return app

"""POST /v1/admin/reload; GET /healthz, /readyz and /metrics."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from engine.errors import (
    RulesError,
)
from engine.service.auth import Key, require_role
from engine.service.context import Service
from engine.service.errors import error_body, problem_dict
from engine.service.models import (
    Health,
    ReloadResult,
)
from engine.service.routes.common import errors_doc, pack_summaries, respond

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines join its log


def install(app: FastAPI, service: Service) -> None:
    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResult,
        summary="Load the rule folder anew and swap it in",
        description="The folder is checked completely (structure, meaning, examples) "
        "first; if anything is wrong the answer lists every problem and the rules in "
        "service stay. Needs a key with the `admin` role.",
        responses=errors_doc(401, 403, 422),
        tags=["admin"],
    )
    async def post_reload(key: Key) -> Any:
        require_role(key, "admin")
        try:
            outcome = await anyio.to_thread.run_sync(service.reload)
        except RulesError as error:
            service.metrics.reload("refused")
            log.warning("tiv: reload refused: %s", error)
            current = service.state.current
            body = error_body(
                error.kind, [problem_dict(p) for p in error.problems], current.rules_id
            )
            return respond(body, current, 422)
        service.metrics.reload("ok")
        current = service.state.current
        log.info("tiv: rules reloaded: %s -> %s", outcome.previous, outcome.current)
        result = ReloadResult(
            rules_id=outcome.current,
            previous_rules_id=outcome.previous,
            changed=outcome.changed,
            packs=pack_summaries(current, key),
        )
        return respond(result.model_dump(mode="json"), current)

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
        return respond(
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

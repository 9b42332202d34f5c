"""HTTP errors: every answer other than 200 is JSON (`ErrorBody`).

A TivError's problems keep their JSON paths and take the status their class calls for
(404 no such pack, 409 no version in effect, 422 bad facts); a bug is a 500 without a
traceback (the traceback goes to the server log). Messages name HTTP parameters
(`as_of`, `allow_draft=true`), not the CLI flags the library's messages name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import (
    EvaluationError,
    FactsError,
    Problem,
    SelectionError,
    TivError,
    pydantic_problems,
)
from engine.loading.snapshot import Snapshot
from engine.service.models import (
    VersionWindow,
)

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines join its log


if TYPE_CHECKING:
    from engine.service.context import Service


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
            self.kind, [problem_dict(p) for p in self.problems], self.rules_id, self.versions
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


# The library words its advice for the command line; over HTTP the same choices are
# query parameters, so a client is told what it can actually send.
_HTTP_WORDS = (
    ("--as-of", "the as_of parameter"),
    ("--allow-draft", "allow_draft=true"),
    (
        "--time-budget SECONDS, $TIV_TIME_BUDGET, value(..., budget=...)",
        "the service's --valuation-budget",
    ),
)


def problem_dict(problem: Problem) -> dict[str, Any]:
    """A Problem as JSON; `<input>` (the request body) is not named, it is implied."""
    data = problem.to_dict()
    if data.get("file") == "<input>":
        del data["file"]
    for flag, parameter in _HTTP_WORDS:
        data["message"] = data["message"].replace(flag, parameter)
    return data


# --- TivError -> HTTP ---------------------------------------------------------------

_NOT_FOUND_CODES = {"policy.unknown", "policy.unknown_version"}


# A valuation over its time budget: the input is not known to be wrong, the service was
# not fast enough for it now (503 with Retry-After, as a request over its budget).
OVER_BUDGET = "valuation.time_budget"


def _status_of(error: TivError) -> int:
    if isinstance(error, EvaluationError) and any(p.code == OVER_BUDGET for p in error.problems):
        return 503
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
            status=p.status,
            effective_from=p.effective_from,
            effective_to=p.effective_to,
        )
        for p in versions
    ]


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header of a 503 over a time budget of `seconds`."""
    return {"Retry-After": str(max(1, round(seconds)))}


def tiv_error(error: TivError, snapshot: Snapshot, policy: str) -> tuple[int, dict[str, Any]]:
    status = _status_of(error)
    dated = any(p.code in ("policy.not_in_effect", "policy.draft") for p in error.problems)
    versions = _versions(snapshot, policy) if dated else None
    problems = [problem_dict(p) for p in error.problems]
    return status, error_body(error.kind, problems, snapshot.rules_id, versions)


def install_error_handlers(app: FastAPI, service: Service) -> None:
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
        found = pydantic_problems(error.errors(), lambda kind: f"request.{kind}")
        problems = [problem.to_dict() for problem in found]
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

    @app.exception_handler(ArithmeticError)
    async def arithmetic(request: Request, error: ArithmeticError) -> JSONResponse:
        # A decimal signal (Overflow, InvalidOperation, DivisionByZero) the evaluation did
        # not turn into an EvaluationError: the facts or the rules asked for arithmetic
        # that has no answer. Bad input, so 422, not 500; the log keeps the traceback
        # until the core names the formula and the fact (issue 12, item 3).
        service.metrics.error("evaluation_error")
        log.warning(
            "tiv: %s on %s %s",
            type(error).__name__,
            request.method,
            request.url.path,
            exc_info=error,
        )
        problem = {
            "code": "evaluation.arithmetic",
            "message": f"the valuation's arithmetic failed ({type(error).__name__}): a number "
            "in the facts is too large, too small or too precise to value",
        }
        return JSONResponse(error_body("evaluation_error", [problem], rules_id()), status_code=422)

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

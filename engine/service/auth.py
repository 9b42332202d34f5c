"""API keys: who is asking, and what they may see.

A key sees only its packs (and their audit records): any other pack is answered exactly
as a pack that does not exist. Roles (`admin`, `metrics`) open the admin and metrics
endpoints. With no keys configured the service is open (loopback only, see settings).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from engine.errors import Problem
from engine.service.errors import ApiError
from engine.service.settings import ALL_PACKS, ROLES, ApiKey, Settings, digest

__all__ = ["OPEN_KEY", "Authenticator", "Key", "require_role"]

OPEN_KEY = ApiKey("open", "", frozenset({ALL_PACKS}), ROLES)


class Authenticator:
    """The key a request presents, looked up by its sha256 (keys are never kept in clear)."""

    def __init__(self, settings: Settings) -> None:
        self.open = settings.open
        self.keys = {key.sha256: key for key in settings.keys}

    def __call__(self, request: Request) -> ApiKey:
        if self.open:
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


def require_role(key: ApiKey, role: str) -> None:
    if role not in key.roles:
        raise ApiError(
            403,
            "forbidden",
            Problem("auth.role", f"this key lacks the `{role}` role this endpoint needs"),
        )


async def principal(request: Request) -> ApiKey:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
    # request for a dictionary lookup; this runs on the event loop and never blocks.
    authenticate: Authenticator = request.app.state.service.authenticate
    return authenticate(request)


# Module level, so FastAPI can resolve it.
Key = Annotated[ApiKey, Depends(principal)]

"""API keys: who is asking, and what they may see.

A key sees only its packs (and their audit records): any other pack is answered exactly
as a pack that does not exist. Roles (`admin`, `metrics`) open the admin and metrics
endpoints. With no keys configured the service is open (loopback only, see settings).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request

from engine.errors import Problem
from engine.service.errors import ApiError
from engine.service.settings import ALL_PACKS, ROLES, ApiKey, Settings, digest

__all__ = ["OPEN_KEY", "Authenticator", "Key", "presented", "require_role"]

OPEN_KEY = ApiKey("open", "", frozenset({ALL_PACKS}), ROLES)


class Authenticator:
    """The key a request presents, looked up by its sha256 (keys are never kept in clear).

    The key is the header's exact bytes: nothing is stripped, case-folded or decoded, so
    `KEY ` (a no-break space after it, say) or `Bearer  KEY` is another key, unknown. Every
    configured digest is compared, in constant time, so the time taken says nothing about
    which key came close.
    """

    def __init__(self, settings: Settings) -> None:
        self.open = settings.open
        self.keys = tuple((key.sha256.encode("ascii"), key) for key in settings.keys)

    def __call__(self, request: Request) -> ApiKey:
        if self.open:
            return OPEN_KEY
        token = presented(request.scope.get("headers", []))
        if token is None:
            raise ApiError(
                401,
                "unauthorized",
                Problem(
                    "auth.missing",
                    "send an API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )
        sha = digest(token).encode("ascii")
        found = None
        for known, key in self.keys:
            if hmac.compare_digest(sha, known):
                found = key
        if found is None:
            raise ApiError(
                401,
                "unauthorized",
                Problem("auth.invalid", "unknown API key"),
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found


def presented(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key's exact bytes from `X-API-Key: KEY` or `Authorization: Bearer KEY`.

    The scheme is case-insensitive and followed by exactly one space (RFC 9110); anything
    after that space is the key, as sent.
    """
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value
        elif name == b"authorization" and bearer is None:
            scheme, space, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and space:
                bearer = credentials
    token = api_key or bearer
    return token or None


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

"""Who is asking: the API key behind a workbench request, and what that key may see.

A browser cannot add a header to a link, so the key travels in a cookie: the login form
posts it once and gets `tiv_ui_key` back, HttpOnly (page scripts cannot read it),
SameSite=Strict (no other site's page can make the browser send it, so no cross-site
request can act with it) and Path=/ui; Secure when the page came over https. The cookie
holds the key itself, as the header would; the server keeps only its sha256, as for the
API. Requests may also send the key as the API does (`Authorization: Bearer`,
`X-API-Key`). With no keys configured the service is open and listens on loopback only
(`tiv serve` refuses anything else), so the workbench is open too.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs

from fastapi import Request

from engine.service.settings import ALL_PACKS, ROLES, ApiKey, Settings, digest

COOKIE = "tiv_ui_key"
OPEN = ApiKey("open", "", frozenset({ALL_PACKS}), ROLES)


class Access:
    """Resolves a request's key from the settings' keys (kept as digests)."""

    def __init__(self, settings: Settings) -> None:
        self.open = settings.open
        self._keys: Mapping[str, ApiKey] = {key.sha256: key for key in settings.keys}

    def key_of(self, request: Request) -> ApiKey | None:
        """The caller's key, or None: no key, or one the server does not know."""
        if self.open:
            return OPEN
        token = request.cookies.get(COOKIE, "")
        if not token:
            token = request.headers.get("x-api-key", "")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if not token and scheme.lower() == "bearer":
            token = credentials.strip()
        return self.check(token)

    def check(self, token: str) -> ApiKey | None:
        return self._keys.get(digest(token)) if token else None


def form_fields(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; a repeated name keeps its last value.

    Parsed here rather than with FastAPI's Form, which needs python-multipart for what
    is one standard-library call.
    """
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}

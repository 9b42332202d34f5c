"""The workbench under /ui and the offline /docs: pages for actuaries, underwriters, auditors.

In: the service's `Settings` and a callable giving the current rules `Snapshot`. Out:
two FastAPI routers. `docs_router()` serves /docs (Swagger UI) and every static asset
from this package, so no page loads anything from the internet. `ui_router(...)` serves
the server-rendered pages: the rule browser, the simulator, diff and impact, audit.

Modules: `access` (who is asking: the key from the login cookie or a header), `rulebook`
(what a pack file says, line by line), `simulator` (form fields <-> shipment facts),
`charts` (SVG drawn here), `jobs` (impact runs in the background, with progress and
cancel), `compliance` (the one place that imports diff, impact, corpus and audit),
`pages` (the routes). Templates are Jinja2 (autoescaped), in `templates/`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from engine.loading.snapshot import Snapshot
from engine.service.settings import Settings
from engine.service.ui.docs import docs_router

__all__ = ["docs_router", "ui_router"]


def ui_router(settings: Settings, current: Callable[[], Snapshot]) -> APIRouter:
    """The /ui pages; without the `ui` extra (Jinja2), /ui says how to install it."""
    try:
        from engine.service.ui.pages import ui_router as pages
    except ImportError as error:
        missing = error.name or "jinja2"
        router = APIRouter(include_in_schema=False)

        @router.get("/ui{rest:path}")
        async def not_installed(rest: str) -> PlainTextResponse:
            return PlainTextResponse(
                f"The workbench needs the ui extra ({missing} is missing): "
                "pip install 'tiv-engine[ui]'",
                status_code=501,
            )

        return router
    return pages(settings, current)

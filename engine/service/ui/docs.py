"""/docs and /ui/static: Swagger UI and the workbench's CSS and JS, served by tiv itself.

FastAPI's own /docs page loads Swagger UI from a CDN, which leaves it blank on a closed
network; this one loads the copy vendored in `static/swagger-ui` (see VENDORED.md).
Only fastapi is needed here, so /docs works without the `ui` extra.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

STATIC = Path(__file__).parent / "static"
STATIC_URL = "/ui/static"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE, NOTICE
}


def docs_router(
    openapi_url: str = "/openapi.json", title: str = "tiv valuation service"
) -> APIRouter:
    """/docs from the vendored Swagger UI, and every file under `static/`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs", response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title}: API docs",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/swagger-ui/favicon-32x32.png",
        )

    @router.get(STATIC_URL + "/{name:path}")
    async def static(name: str) -> Response:
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            return PlainTextResponse(f"no static file {name}", status_code=404)
        if path.suffix not in _TYPES:
            return PlainTextResponse(f"no static file {name}", status_code=404)
        # Assets change only with a new tiv version; an hour keeps pages fast yet fresh.
        return FileResponse(
            path,
            media_type=_TYPES[path.suffix],
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return router

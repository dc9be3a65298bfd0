"""``/docs`` (Swagger UI) and ``/redoc`` that work offline: their scripts, styles and icon are
served by the API itself (``/static/docs/``, from the ``fastapi-offline`` package, which ships
them), never from a CDN; ReDoc without Google's fonts, Swagger UI without the online validator,
and a Content-Security-Policy that lets neither page load anything from elsewhere.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PREFIX = "/static/docs"
#: The docs pages load only this origin's files (ReDoc's bundle would fetch a logo from its CDN:
#: refused here, and it hides the broken image). Both bundles need inline scripts and styles.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve the docs pages; ``app`` must be made with ``docs_url=None, redoc_url=None``."""
    app.mount(PREFIX, StaticFiles(directory=assets()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return _offline(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} — API docs", oauth2_redirect_url=oauth_redirect,
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png", swagger_ui_parameters={"validatorUrl": None}))

    @app.get(oauth_redirect, include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _offline(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} — ReDoc", redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png", with_google_fonts=False))

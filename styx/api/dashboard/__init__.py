"""The web dashboard, served by the API at ``/``: server-rendered pages (Jinja2) with a little
htmx (vendored in ``static/``), signed in with an API token exchanged for a cookie.

It decides nothing the API does not: pages read through the services and stores the REST
routes use and map rows with the routes' own functions; actions call the route functions
themselves (see ``actions``), so access rules, validation and messages are the API's.

- ``session``: sign-in cookie, the signed-in ``Viewer``, CSRF checks of every action.
- ``signin``: ``/signin``, ``/signout``.
- ``clusters``: ``/`` (filters in the URL; ``?history=1`` the downed clusters), a cluster's
  page with its jobs, and stop / start / down / autostop.
- ``jobs``: a job's page, its log (its end, with earlier lines on demand, when finished;
  followed over server-sent events while it runs), the raw log, cancel.
- ``managed``: managed jobs (``styx jobs``): the viewer's own, everyone's for an admin; one
  job's tasks and attempts; cancel.
- ``repos``: repositories, branches, recent pushes and their runs.
- ``docs``: ``/docs`` and ``/redoc`` from local assets; ``Assets`` (here): the dashboard's own
  files, kept by browsers until they change.
- ``data``: what the pages show; ``columns``: the tables' columns; ``render``: templates,
  navigation, formats; ``actions``: how an action answers.

A new page is a module with a ``router`` added to ``PAGES`` and a ``render.NavLink`` added to
``render.NAV``; a new column one ``Column`` in ``columns``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from styx.api.dashboard import clusters, docs, jobs, managed, repos, signin
from styx.api.dashboard.actions import refused
from styx.api.dashboard.render import ASSETS_VERSION, STATIC
from styx.api.dashboard.session import ActionRefused, SignInRequired, signin_url

#: The dashboard's routers; a new page's router goes here.
PAGES = [signin.router, clusters.router, jobs.router, managed.router, repos.router]


class Assets(StaticFiles):
    """The dashboard's own files. Asked for by the version the pages link them with
    (``?v=`` ``render.ASSETS_VERSION``, a digest of their contents), a browser keeps them
    without asking again; a new version is a new URL. Asked for otherwise, it revalidates."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            asked = parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("v")
            response.headers["Cache-Control"] = ("public, max-age=31536000, immutable" if asked == [ASSETS_VERSION]
                                                 else "no-cache")
        return response


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = signin_url(exc.next_url)
    if exc.why:
        target += ("&" if "?" in target else "?") + "why=" + quote(exc.why, safe="")
    if request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    if request.method != "GET" or "text/event-stream" in request.headers.get("accept", ""):
        return PlainTextResponse(str(exc), status_code=401)
    return RedirectResponse(target, status_code=303)


def install(app: FastAPI) -> None:
    """Add the dashboard's pages, its static files and the offline API docs to ``app``."""
    docs.install(app)
    app.mount("/static", Assets(directory=STATIC), name="static")
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(ActionRefused, refused)
    for router in PAGES:
        app.include_router(router)

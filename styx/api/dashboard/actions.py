"""How an action (a button on a page) runs and answers.

Every action calls the REST route's own function (``styx.api.routes.clusters.stop`` …), so the
rules — who may, what state allows it, the messages — are the API's. ``perform`` turns its
answer, or the ``HTTPException`` it raised, into a message: for htmx, a fragment for the page's
``#flash`` area with the route's status code, and an ``HX-Trigger: styx:refresh`` that makes the
page's tables reload; for a plain form post, a redirect back to the page (or the error as
text). ``ActionRefused`` (a form that failed its CSRF check, say) is answered the same way.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from styx.api.dashboard.render import render
from styx.api.dashboard.session import ActionRefused, safe_next


def flash(request: Request, message: str, status_code: int = 200, back: str = "/") -> Response:
    if request.headers.get("hx-request") != "true":
        if status_code >= 400:
            return PlainTextResponse(message, status_code=status_code)
        return RedirectResponse(safe_next(back), status_code=303)
    html = render("flash.html", message=message, ok=status_code < 400)
    return HTMLResponse(html, status_code=status_code, headers={"HX-Trigger": "styx:refresh"})


async def perform(request: Request, call: Callable[[], Awaitable[Any]], done: Callable[[Any], str],
                  back: str = "/") -> Response:
    """Run ``call`` (a REST route function); ``done`` says what happened from its answer."""
    try:
        result = await call()
    except HTTPException as err:
        return flash(request, str(err.detail), err.status_code, back)
    return flash(request, done(result), 200, back)


async def refused(request: Request, exc: Exception) -> Response:
    """The app's handler for ``ActionRefused``."""
    assert isinstance(exc, ActionRefused)
    return flash(request, str(exc.detail), exc.status_code)

"""Pages: sign in (``/signin``: an API token for the session cookie, see
``styx.api.dashboard.session``) and sign out (``POST /signout``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from styx.api.dashboard.render import page
from styx.api.dashboard.session import (
    COOKIE,
    SESSION_SECONDS,
    ActionRefused,
    SIGN_IN_REASONS,
    KeysDep,
    ViewerDep,
    check_same_site,
    form_fields,
    read_form,
    safe_next,
)
from styx.api.deps import StateDep

router = APIRouter(include_in_schema=False)


def _form(request: Request, problem: str | None, next_url: str, status_code: int) -> Response:
    return page(request, None, "signin.html", status_code=status_code, problem=problem, next_url=next_url)


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    why = SIGN_IN_REASONS.get(request.query_params.get("why") or "")
    return _form(request, why, safe_next(request.query_params.get("next")), 200)


@router.post("/signin")
async def signin(request: Request, state: StateDep, found: KeysDep) -> Response:
    try:
        check_same_site(request)  # no other site signs a browser in (login CSRF)
        fields = await form_fields(request)
    except ActionRefused as err:
        return _form(request, str(err.detail), "/", err.status_code)
    next_url = safe_next(fields.get("next"))
    token = (fields.get("token") or "").strip()
    if not token:
        return _form(request, "token: paste an API token (`styx token create`, or STYX_HOME/credentials)",
                     next_url, 422)
    check = await asyncio.to_thread(state.db.users.check_token, token[:512])
    if check.user is None:
        problem = check.problem if check.problem and not check.problem.startswith("invalid") else None
        return _form(request, f"token: {problem or 'not a valid Styx API token'}", next_url, 401)
    answer = RedirectResponse(next_url, status_code=303)
    answer.set_cookie(COOKIE, found.seal(token), max_age=SESSION_SECONDS, path="/", httponly=True,
                      samesite="strict", secure=request.url.scheme == "https")
    return answer


@router.post("/signout")
async def signout(request: Request, viewer: ViewerDep) -> Response:
    await read_form(request, viewer)
    answer = RedirectResponse("/signin", status_code=303)
    answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    if request.headers.get("hx-request") == "true":
        answer = Response(status_code=200, headers={"HX-Redirect": "/signin"})
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return answer

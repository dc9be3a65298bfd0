"""Signing in to the dashboard, who is signed in, and CSRF.

- Sign-in exchanges an API token (checked as the API checks a bearer token) for the cookie
  ``styx_session``: the token sealed with Styx's key (Fernet, so the cookie carries its
  issue time and expires after ``SESSION_SECONDS``), ``HttpOnly`` (no script reads it),
  ``SameSite=Strict`` (no other site's page sends it), ``Secure`` over HTTPS. Every request
  checks the token again, so a revoked or expired token, or a disabled user, is signed out
  at once. The REST API itself never reads the cookie: it stays bearer-only.
- ``page_viewer`` is the dependency every page takes: the signed-in ``Viewer`` (their user
  and their CSRF token), or a redirect to ``/signin``.
- ``read_form`` is what every action reads its form through: it refuses (403) a request
  another site made — a missing or wrong CSRF token (``csrf_token`` field or ``X-CSRF-Token``
  header, an HMAC of the session), or a browser's ``Sec-Fetch-Site``/``Origin`` naming
  another site.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Depends, HTTPException, Request

from styx.api.deps import StateDep
from styx.config import Settings
from styx.db import User
from styx.secrets import secret_key

COOKIE = "styx_session"
#: How long a sign-in lasts (the token's own expiry or revocation ends it sooner).
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: The largest form an action reads (they hold a few short fields).
MAX_FORM_BYTES = 16 << 10


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page."""

    user: User
    csrf: str


class ActionRefused(HTTPException):
    """An action's form failed a check before it ran: answered like the action's result
    (``styx.api.dashboard.actions``)."""


#: Why the sign-in page was shown, by the code its URL carries (``/signin?why=expired``): only
#: these texts, so a link cannot make the page say something else.
SIGN_IN_REASONS = {
    "expired": "your sign-in expired (after 12 hours): sign in again",
    "token": "your token no longer works (revoked or expired, or your user was disabled): sign in again",
}


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page; ``why`` is a
    key of ``SIGN_IN_REASONS``."""

    def __init__(self, next_url: str, why: str | None = None) -> None:
        super().__init__(SIGN_IN_REASONS.get(why or "", "sign in first"))
        self.next_url = next_url
        self.why = why


class Keys:
    """The cookie's box and the CSRF key, made once per app from Styx's secret key."""

    def __init__(self, settings: Settings) -> None:
        key = secret_key(settings.home)
        self.box = Fernet(key)
        self.csrf_key = hashlib.sha256(b"styx-dashboard-csrf:" + key).digest()

    def seal(self, token: str) -> str:
        return self.box.encrypt(token.encode()).decode()

    def unseal(self, cookie: str) -> str | None:
        try:
            return self.box.decrypt(cookie.encode(), ttl=SESSION_SECONDS).decode()
        except (InvalidToken, ValueError):
            return None

    def csrf(self, cookie: str) -> str:
        return hmac.new(self.csrf_key, cookie.encode(), hashlib.sha256).hexdigest()


async def keys(request: Request, state: StateDep) -> Keys:
    found = getattr(request.app.state, "styx_dashboard_keys", None)
    if found is None:
        found = request.app.state.styx_dashboard_keys = Keys(state.settings)
    return found


KeysDep = Annotated[Keys, Depends(keys)]


def safe_next(url: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` or a URL)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def signin_url(next_url: str) -> str:
    return "/signin" if next_url == "/" else f"/signin?next={quote(next_url, safe='')}"


async def page_viewer(request: Request, state: StateDep, found: KeysDep) -> Viewer:
    cookie = request.cookies.get(COOKIE)
    token = found.unseal(cookie) if cookie else None
    if cookie is None or token is None:
        raise SignInRequired(_here(request), "expired" if cookie else None)
    check = await asyncio.to_thread(state.db.users.check_token, token)
    if check.user is None:
        raise SignInRequired(_here(request), "token")
    return Viewer(check.user, found.csrf(cookie))


ViewerDep = Annotated[Viewer, Depends(page_viewer)]


def check_same_site(request: Request) -> None:
    """Refuse a request a browser says another site made (``Sec-Fetch-Site``, ``Origin``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise ActionRefused(403, "refused: the request came from another site")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise ActionRefused(403, f"refused: the request came from {origin}, not this site")


async def form_fields(request: Request) -> dict[str, str]:
    """The request's url-encoded form (the first value of each field), bounded."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ActionRefused(413, f"form: larger than {MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as err:
        raise ActionRefused(422, f"form: cannot be read ({err})") from None
    return {k: v[0] for k, v in parsed.items()}


async def read_form(request: Request, viewer: Viewer) -> dict[str, str]:
    """The action's form, once it proved it came from one of our pages."""
    check_same_site(request)
    fields = await form_fields(request)
    sent = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD) or ""
    if not hmac.compare_digest(sent.encode(), viewer.csrf.encode()):
        raise ActionRefused(403, "refused: the form's CSRF token is missing or stale; reload the page")
    return fields

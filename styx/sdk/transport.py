"""How the SDK reaches the API; the clients' methods (``client.py``, ``repos.py``) build on it.

- ``StyxError`` / ``NotFound`` / ``Conflict``: an error answer, with the API's message.
- ``read_credentials`` / ``resolve_endpoint``: the URL and token, found the way the CLI does
  (arguments, then ``STYX_API_URL`` / ``STYX_TOKEN``, then ``STYX_HOME/credentials``).
- ``Request``: one API call as data; ``raise_for_status`` turns an error answer into a ``StyxError``.
- ``SyncTransport`` / ``AsyncTransport``: the HTTP connection, its lifetime, and ``_send(Request)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx

from styx.config import Settings


class StyxError(Exception):
    """An error answer from the API; ``status_code`` is the HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class NotFound(StyxError):
    pass


class Conflict(StyxError):
    pass


def read_credentials(home: Path) -> dict[str, str]:
    try:
        return json.loads((home / "credentials").read_text())
    except (OSError, ValueError):
        return {}


def resolve_endpoint(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The API's base URL and the token to send."""
    settings = Settings.from_env()
    creds = read_credentials(settings.home)
    url = url or os.environ.get("STYX_API_URL") or creds.get("url") or settings.api_url
    token = token or os.environ.get("STYX_TOKEN") or creds.get("token")
    return url.rstrip("/"), token


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None


def raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    cls = {404: NotFound, 409: Conflict}.get(resp.status_code, StyxError)
    raise cls(resp.status_code, detail)


def _auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class SyncTransport:
    """The blocking connection to the API. Every call raises :class:`StyxError` (``NotFound``,
    ``Conflict``) with the API's message on an error answer."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0) -> None:
        self.url, token = resolve_endpoint(url, token)
        self._http = httpx.Client(base_url=self.url, headers=_auth_headers(token), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: Request) -> Any:
        """The decoded JSON answer (None for an empty one, e.g. 204)."""
        resp = self._http.request(req.method, req.path, json=req.json, params=req.params)
        raise_for_status(resp)
        return resp.json() if resp.content else None


class AsyncTransport:
    """The asynchronous twin of :class:`SyncTransport`."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0) -> None:
        self.url, token = resolve_endpoint(url, token)
        self._http = httpx.AsyncClient(base_url=self.url, headers=_auth_headers(token), timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: Request) -> Any:
        resp = await self._http.request(req.method, req.path, json=req.json, params=req.params)
        raise_for_status(resp)
        return resp.json() if resp.content else None

"""How the SDK reaches the API; the clients' methods (``client.py``, ``repos.py``) build on it.

- ``StyxError`` and its kinds: every failure of an SDK call, with the API's message (or what
  went wrong on the way) and a ``hint`` saying what to do. ``Unauthorized`` (401),
  ``Forbidden`` (403), ``NotFound`` (404), ``Conflict`` (409), ``Invalid`` (400/413/422, and
  bad arguments; also a ``ValueError``), ``Unavailable`` (503), ``ApiUnreachable`` (no answer
  at all: refused, timed out, cut), ``WaitTimeout`` (``wait`` gave up; also a ``TimeoutError``).
- ``read_credentials`` / ``resolve_endpoint``: the URL and token, found the way the CLI does
  (arguments, then ``STYX_API_URL`` / ``STYX_TOKEN``, then ``STYX_HOME/credentials``).
- ``Request``: one API call as data; ``raise_for_status`` turns an error answer into a ``StyxError``.
- ``SyncTransport`` / ``AsyncTransport``: the HTTP connection, its lifetime, and ``_send(Request)``.
  A request with an ``idempotency_key`` (launch, exec) carries it as the ``Idempotency-Key``
  header and is sent again, with the same key, when the connection fails or times out
  (``SUBMIT_ATTEMPTS``): the API answers a repeated key with the first submission's job.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Self

import httpx

from styx.config import Settings

#: How many times a submission is sent when no answer comes back, and the pause before each retry.
SUBMIT_ATTEMPTS = 4
RETRY_DELAYS = (0.5, 1.0, 2.0)


class StyxError(Exception):
    """Any failure of an SDK call. ``status_code`` is the HTTP status (None when no answer
    came), ``message`` the API's message or what went wrong, ``hint`` what to try."""

    hint: str | None = None

    def __init__(self, status_code: int | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class Unauthorized(StyxError):
    hint = "check STYX_TOKEN, or the token in STYX_HOME/credentials"


class Forbidden(StyxError):
    hint = "ask an admin, or the owner"


class NotFound(StyxError):
    pass


class Conflict(StyxError):
    pass


class Invalid(StyxError, ValueError):
    """The request was refused as it is (or could not be built): the message names the field."""


class Unavailable(StyxError):
    hint = "Temporal or a worker may be down: `styx doctor` says which"


class ApiUnreachable(StyxError):
    """No answer from the API: the connection was refused, cut, or timed out."""

    hint = "is `styx up` running?"

    def __init__(self, status_code: int | None, message: str, hint: str | None = None,
                 idempotency_key: str | None = None) -> None:
        super().__init__(status_code, message, hint)
        #: Set for a submission: sending it again with this key cannot run it twice.
        self.idempotency_key = idempotency_key


class WaitTimeout(StyxError, TimeoutError):
    """``wait`` gave up before the job finished (the job goes on)."""


_BY_STATUS: dict[int, type[StyxError]] = {
    400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: Invalid,
    422: Invalid, 503: Unavailable,
}


def read_credentials(home: Path) -> dict[str, str]:
    try:
        return json.loads((home / "credentials").read_text())
    except (OSError, ValueError):
        return {}


def resolve_endpoint(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The API's base URL and the token to send."""
    try:
        settings = Settings.from_env(temporal=False)
    except ValueError as err:
        raise Invalid(None, str(err)) from None
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
    #: Sent as ``Idempotency-Key``; the request is then retried when no answer comes back
    #: (or a 503 with ``Retry-After``: the API's database was busy).
    idempotency_key: str | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else None

    @property
    def attempts(self) -> int:
        return SUBMIT_ATTEMPTS if self.idempotency_key else 1


def _busy(resp: httpx.Response) -> bool:
    """A 503 with ``Retry-After``: the API did nothing (its database was busy); a request
    with an idempotency key is sent again."""
    return resp.status_code == 503 and "retry-after" in resp.headers


def raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    detail = body.get("detail", resp.text) if isinstance(body, dict) else (resp.text or resp.reason_phrase)
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    raise _BY_STATUS.get(resp.status_code, StyxError)(resp.status_code, detail)


def unreachable(url: str, err: Exception, req: Request | None = None, attempts: int = 1) -> StyxError:
    """The error for a request that got no answer (``err`` is httpx's)."""
    if isinstance(err, httpx.InvalidURL):
        return Invalid(None, f"{url!r} is not a usable Styx API URL ({err})",
                       "set STYX_API_URL, e.g. http://127.0.0.1:7780")
    tried = f" ({attempts} attempts)" if attempts > 1 else ""
    what = f"{req.method} {req.path}" if req else "the request"
    if isinstance(err, httpx.TimeoutException):
        message = f"the Styx API at {url} did not answer {what} in time{tried} ({type(err).__name__})"
    else:
        message = f"cannot reach the Styx API at {url}{tried} ({type(err).__name__}: {err or 'no detail'})"
    key = req.idempotency_key if req else None
    hint = (f"the submission may have been queued: send it again with idempotency_key={key!r} "
            "and it will not run twice") if key and isinstance(err, httpx.TimeoutException) else None
    return ApiUnreachable(None, message, hint, idempotency_key=key)


def _decoded(resp: httpx.Response, shape: Any = None) -> Any:
    raise_for_status(resp)
    if not resp.content and shape is None:
        return None
    try:
        return resp.json() if shape is None else shape.validate_json(resp.content)
    except ValueError as err:  # pydantic's ValidationError is one too
        invalid_json = shape is None or any(e.get("type") == "json_invalid" for e in err.errors())  # type: ignore[attr-defined]
        what = "is not JSON" if invalid_json else "is not what the SDK expects"
        raise StyxError(resp.status_code, f"the API answered {resp.request.url.path} with something that "
                                          f"{what}: {resp.text[:200]!r}") from None


def _plain_http(url: str) -> bool:
    """Whether the API is reached over plain ``http://``. Its transport then makes no TLS
    context (loading the CA bundle costs ~40 ms, a sixth of a fast CLI command); there is no
    TLS to verify on that connection, and a proxy from the environment still gets its own
    transport, verified."""
    return url.lower().startswith("http://")


def _auth_headers(token: str | None) -> dict[str, str]:
    if token and not token.isascii():
        raise Invalid(None, "the API token is not ASCII: check STYX_TOKEN or STYX_HOME/credentials")
    return {"Authorization": f"Bearer {token}"} if token else {}


class SyncTransport:
    """The blocking connection to the API. Every call raises a :class:`StyxError` on failure:
    the API's message on an error answer, ``ApiUnreachable`` when no answer comes.
    ``transport`` is httpx's (tests hand one in)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url, token = resolve_endpoint(url, token)
        if transport is None and _plain_http(self.url):
            transport = httpx.HTTPTransport(verify=False)  # no TLS on the way: see _plain_http
        try:
            self._http = httpx.Client(base_url=self.url, headers=_auth_headers(token), timeout=timeout,
                                      transport=transport)
        except httpx.InvalidURL as err:
            raise unreachable(self.url, err) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: Request, shape: Any = None) -> Any:
        """The decoded JSON answer (None for an empty one, e.g. 204); with ``shape`` (a
        pydantic ``TypeAdapter``), the answer parsed straight from its bytes into it."""
        for attempt in range(1, req.attempts + 1):
            try:
                resp = self._http.request(req.method, req.path, json=req.json, params=req.params,
                                          headers=req.headers)
            except httpx.TransportError as err:
                if attempt == req.attempts:
                    raise unreachable(self.url, err, req, attempt) from None
                time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as err:
                raise unreachable(self.url, err, req, attempt) from None
            if _busy(resp) and attempt < req.attempts:  # nothing was done: send it again
                time.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
                continue
            return _decoded(resp, shape)

    def _stream(self, req: Request) -> Iterator[bytes]:
        """The answer's body as it arrives (a log that follows its job): no read timeout; an
        error answer raised as ``raise_for_status`` does."""
        try:
            with self._http.stream(req.method, req.path, params=req.params, timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise_for_status(resp)
                yield from resp.iter_bytes()
        except httpx.HTTPError as err:
            raise unreachable(self.url, err, req) from None


class AsyncTransport:
    """The asynchronous twin of :class:`SyncTransport`."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, token = resolve_endpoint(url, token)
        if transport is None and _plain_http(self.url):
            transport = httpx.AsyncHTTPTransport(verify=False)  # no TLS on the way: see _plain_http
        try:
            self._http = httpx.AsyncClient(base_url=self.url, headers=_auth_headers(token), timeout=timeout,
                                           transport=transport)
        except httpx.InvalidURL as err:
            raise unreachable(self.url, err) from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: Request, shape: Any = None) -> Any:
        import asyncio  # here: a sync client never needs the event loop's modules

        for attempt in range(1, req.attempts + 1):
            try:
                resp = await self._http.request(req.method, req.path, json=req.json, params=req.params,
                                                headers=req.headers)
            except httpx.TransportError as err:
                if attempt == req.attempts:
                    raise unreachable(self.url, err, req, attempt) from None
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as err:
                raise unreachable(self.url, err, req, attempt) from None
            if _busy(resp) and attempt < req.attempts:
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])
                continue
            return _decoded(resp, shape)

    async def _stream(self, req: Request) -> AsyncIterator[bytes]:
        """``SyncTransport._stream``, for the async client."""
        try:
            async with self._http.stream(req.method, req.path, params=req.params, timeout=None) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise_for_status(resp)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.HTTPError as err:
            raise unreachable(self.url, err, req) from None

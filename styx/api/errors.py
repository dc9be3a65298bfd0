"""Error answers: one shape for all of them, declared in the OpenAPI document.

- ``error_responses(*codes)``: the ``responses=`` a router or route declares, each with the
  one error schema ``ErrorBody{detail: str}``.
- ``validation_error``: the app's handler for ``RequestValidationError``: a 422 whose
  ``detail`` is one line naming the field (``body.task: Field required``), not FastAPI's list.
- ``database_busy``: the handler for SQLite's ``database is locked``: a 503 with
  ``Retry-After`` rather than a 500.
"""

from __future__ import annotations

from typing import Any, Sequence

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from styx.contracts.rest import ErrorBody

_MEANING = {
    400: "The request cannot be carried out as it is",
    401: "Missing or invalid API token",
    403: "The token's user may not do this",
    404: "No such resource (or not one you may see)",
    409: "Conflicts with the resource's current state",
    413: "Request body over STYX_MAX_REQUEST_BYTES",
    422: "Invalid request: `detail` names the field",
    503: "Temporal (or a worker) is not answering, or the cluster or database is too busy: try again",
}

#: What every route behind a token may answer.
AUTHENTICATED = (401, 413, 422)
#: ... and every route that reads or changes one resource.
RESOURCE = (*AUTHENTICATED, 403, 404, 409)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


#: At most this many problems are named in one answer.
_SHOWN = 3


def describe_errors(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one line: ``body.task: Field required; query.limit: ...``."""
    parts = []
    for err in errors[:_SHOWN]:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "header":
            where = f"{loc[-1]} header"
        else:
            where = ".".join(loc) or "request"
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            message = f"invalid JSON ({(err.get('ctx') or {}).get('error', 'cannot decode')})"
            where = loc[0] if loc else "body"
        parts.append(f"{where}: {message}")
    if len(errors) > _SHOWN:
        parts.append(f"and {len(errors) - _SHOWN} more")
    return " ".join("; ".join(parts).split())  # one line, whatever the messages hold


#: What a client waits before sending again a request the busy database refused (seconds).
BUSY_RETRY_AFTER = 1


async def database_busy(request: Request, exc: Exception) -> JSONResponse:
    """SQLite's write lock held past its busy timeout (``database is locked``): a 503 with
    ``Retry-After`` (the transaction was rolled back: nothing changed; the SDK sends a
    request with an idempotency key again), not a 500. Any other database error is raised."""
    from sqlalchemy.exc import OperationalError

    assert isinstance(exc, OperationalError)
    if "database is locked" not in str(exc) and "database is busy" not in str(exc):
        raise exc
    return JSONResponse(status_code=503, headers={"Retry-After": str(BUSY_RETRY_AFTER)},
                        content={"detail": "the database is busy (its write lock was held longer than the busy "
                                           "timeout); nothing was changed: try again"})


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": describe_errors(exc.errors())})

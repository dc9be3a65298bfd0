"""Typed dependencies shared by the routers: the app state, the DB, Temporal, the caller."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from styx.config import Settings
from styx.contracts.rest import IDEMPOTENCY_KEY_PATTERN, MAX_ID
from styx.db import Database, User
from styx.temporal import TemporalUnavailable, connect


@dataclass
class AppState:
    settings: Settings
    db: Database
    _client: Client | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def temporal(self, wait_seconds: float = 10.0) -> Client:
        """The Temporal client, connected on first use (the API may start before Temporal)."""
        async with self._lock:
            if self._client is None:
                self._client = await connect(self.settings, wait_seconds=wait_seconds)
            return self._client


async def get_state(request: Request) -> AppState:
    # ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    return request.app.state.styx


StateDep = Annotated[AppState, Depends(get_state)]


async def get_temporal(state: StateDep) -> Client:
    try:
        return await state.temporal()
    except TemporalUnavailable as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None


TemporalDep = Annotated[Client, Depends(get_temporal)]

_bearer = HTTPBearer(auto_error=False, description="a Styx API token (see STYX_HOME/credentials)")


async def current_user(
    state: StateDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "missing or invalid API token: send 'Authorization: Bearer <token>' "
        "(the admin token is in STYX_HOME/credentials)",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if creds is None:
        raise unauthorized
    # Checked on every request: a revoked or expired token, or a disabled user, stops at once.
    check = await asyncio.to_thread(state.db.users.check_token, creds.credentials)
    if check.user is None:
        if check.problem and not check.problem.startswith("invalid"):
            unauthorized.detail = check.problem
        raise unauthorized
    return check.user


CurrentUser = Annotated[User, Depends(current_user)]


#: An id in a path (a job's, a key's): bounded, so no number overflows the database.
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]

#: The ``Idempotency-Key`` of a submission: every attempt of one submission sends the same
#: one, and all get the first attempt's job. Typed ``str`` with a None default in the handlers,
#: so the OpenAPI schema says "a string, optional" rather than "string or null".
IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN, max_length=64,
    description="names one logical submission (1-64 letters, digits, '_' or '-'): a retry with the "
                "same key returns the first job instead of queueing another")]

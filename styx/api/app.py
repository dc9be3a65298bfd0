"""The HTTP front: authenticates, validates, starts / updates / queries workflows, reads the DB."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from styx import __version__
from styx.api.deps import AppState
from styx.api.limits import BodyLimit
from styx.api.routes import clusters, repos, users
from styx.config import Settings
from styx.db import Database, migrate


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_home()
        await asyncio.to_thread(migrate, settings.db_url)
        app.state.styx = AppState(settings=settings, db=Database(settings.db_url))
        try:
            yield
        finally:
            app.state.styx = None

    app = FastAPI(
        title="Styx",
        version=__version__,
        description="Clusters, jobs and git-push runs as durable Temporal workflows.",
        lifespan=lifespan,
    )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """200 when the database and Temporal both answer, 503 (saying which failed) otherwise."""
        state: AppState = app.state.styx
        checks: dict[str, str] = {}
        try:
            await asyncio.to_thread(state.db.ping)
            checks["database"] = "ok"
        except Exception as err:  # any failure is the answer here
            checks["database"] = f"error: {err}"
        try:
            client = await state.temporal(wait_seconds=0)
            await asyncio.wait_for(client.service_client.check_health(), timeout=3)
            checks["temporal"] = "ok"
        except Exception as err:
            checks["temporal"] = f"error: {err}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unhealthy", **checks},
                            status_code=200 if healthy else 503)

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.include_router(clusters.router)
    app.include_router(clusters.check_router)
    app.include_router(users.router)
    app.include_router(repos.router)
    return app

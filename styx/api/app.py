"""The HTTP front: authenticates, validates, starts / updates / queries workflows, reads the DB."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError

from styx import __version__
from styx.api import dashboard, metrics
from styx.api.deps import AppState
from styx.api.errors import AUTHENTICATED, RESOURCE, database_busy, error_responses, validation_error
from styx.api.limits import BodyLimit, RouteLimit
from styx.api.routes import clusters, costs, managed, repos, services, system, uploads, users
from styx.config import Settings
from styx.db import Database, migrate
from styx.services import specsweep


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_home()
        await asyncio.to_thread(migrate, settings.db_url)
        db = Database(settings.db_url)
        app.state.styx = AppState(settings=settings, db=db)
        # Job bodies whose submission died before reaching its cluster (styx.services.specsweep).
        sweeper = asyncio.create_task(specsweep.sweep_forever(db, settings.spec_sweep_seconds,
                                                              settings.spec_orphan_seconds))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            app.state.styx = None

    app = FastAPI(
        title="Styx",
        version=__version__,
        description="Clusters, jobs and git-push runs as durable Temporal workflows.",
        lifespan=lifespan,
        docs_url=None,  # served offline by the dashboard (styx.api.dashboard.docs)
        redoc_url=None,
    )

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, routes=[
        RouteLimit("PUT", uploads.UPLOAD_PATH_PREFIX, settings.max_upload_bytes, "STYX_MAX_UPLOAD_BYTES")])
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(OperationalError, database_busy)
    # Every error answer is an ErrorBody; each router declares the ones its routes give.
    app.include_router(system.router)
    app.include_router(clusters.router, responses=error_responses(*RESOURCE, 503))
    app.include_router(clusters.check_router, responses=error_responses(*AUTHENTICATED, 403, 503))
    app.include_router(users.router, responses=error_responses(*RESOURCE))
    app.include_router(repos.router, responses=error_responses(*RESOURCE))
    app.include_router(uploads.router, responses=error_responses(*RESOURCE))
    app.include_router(services.router, responses=error_responses(*RESOURCE, 503))
    app.include_router(costs.router, responses=error_responses(*AUTHENTICATED))
    app.include_router(managed.router, responses=error_responses(*RESOURCE, 503))
    metrics.install(app, settings)  # GET /metrics, and requests counted by route
    dashboard.install(app)  # the web pages at /, their static files, /docs and /redoc
    return app

"""The API's ``GET /metrics``, in the Prometheus text format.

What it exports (besides the standard ``process_*`` and ``python_*``):

- ``styx_jobs{status}``: jobs in each status, every status listed (0 when none); read from
  the database at each scrape with one grouped query.
- ``styx_queue_depth{cluster}``: PENDING jobs of each cluster that is not TERMINATED, so the
  label takes as many values as there are live clusters.
- ``styx_database_up``: 1 when those reads worked, 0 when the database did not answer (the
  scrape still succeeds, with the other metrics).
- ``styx_submission_seconds{kind}``: how long the API took to accept a submission -- a
  launch (``POST /api/v1/clusters``) or an exec (``POST /api/v1/clusters/{name}/jobs``)
  answered 2xx: validation, the database and the workflow update that queues the job.
- ``styx_api_requests_total{method, route, status}``: every request, by route template
  (``/api/v1/clusters/{name}``, never the raw path; ``<unmatched>`` for unknown paths).

Who may read it: ``Settings.metrics_token_required`` (``STYX_METRICS_TOKEN_REQUIRED``).
Unset, an API that listens on loopback answers anyone who reaches it (a local Prometheus
scrapes it without credentials), and one that listens beyond wants an admin token
(``Authorization: Bearer``, Prometheus' ``authorization: {credentials_file: ...}``): the
metrics name every user's clusters.

``install(app, settings)`` adds the route and the request-counting middleware; each app has
its own registry, so several apps in one process (tests) do not share counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any, Iterable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from styx.api.deps import AppState, StateDep, current_user
from styx.config import Settings
from styx.contracts.jobs import JobStatus

log = logging.getLogger("styx.api.metrics")

disable_created_metrics()  # no ``*_created`` series beside every counter

#: The submissions ``styx_submission_seconds`` times: (method, route template) -> kind.
SUBMISSIONS = {
    ("POST", "/api/v1/clusters"): "launch",
    ("POST", "/api/v1/clusters/{name}/jobs"): "exec",
}
SUBMISSION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"


class _DatabaseCounts(Collector):
    """Jobs by status and queue depth per live cluster, read when scraped."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("styx_database_up", "1 when the database answered this scrape's reads")
        state: AppState | None = getattr(self.app.state, "styx", None)
        try:
            if state is None:
                raise RuntimeError("the API is not started")
            counts = state.db.clusters.job_counts()
            depth = state.db.clusters.pending_by_cluster()
        except Exception as err:  # the scrape still answers; styx_database_up says why not
            log.warning("metrics: cannot read the database: %s", err)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        jobs = GaugeMetricFamily("styx_jobs", "Jobs by status", labels=["status"])
        for job_status in JobStatus:
            jobs.add_metric([job_status.value], counts.get(job_status, 0))
        queue = GaugeMetricFamily("styx_queue_depth", "PENDING jobs per cluster not TERMINATED",
                                  labels=["cluster"])
        for cluster, pending in sorted(depth.items()):
            queue.add_metric([cluster], pending)
        return [up, jobs, queue]


class ApiMetrics:
    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)
        self.registry.register(_DatabaseCounts(app))
        self.requests = Counter("styx_api_requests", "API requests by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.submissions = Histogram("styx_submission_seconds",
                                     "Time to accept a launch or exec submission (2xx answers)", ["kind"],
                                     buckets=SUBMISSION_BUCKETS, registry=self.registry)


class RequestMetrics:
    """Pure ASGI middleware: counts each request by route template and status, and times
    submissions. The route is known once the router matched (``scope["route"]``)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # if the app raises before answering

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(code)).inc()
            kind = SUBMISSIONS.get((method, route))
            if kind is not None and 200 <= code < 300:
                self.metrics.submissions.labels(kind).observe(time.perf_counter() - started)


_bearer = HTTPBearer(auto_error=False, description="an admin's Styx API token")


def install(app: FastAPI, settings: Settings) -> None:
    """Add ``GET /metrics`` and the request-counting middleware to ``app``."""
    metrics = ApiMetrics(app)
    router = APIRouter(tags=["health"])

    async def may_read(state: StateDep,
                       creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if not settings.metrics_token_required:
            return
        user = await current_user(state, creds)
        if not user.is_admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin may read /metrics")

    @router.get("/metrics", response_class=Response, dependencies=[Depends(may_read)],
                summary="Prometheus metrics (admin token unless the API listens on loopback)")
    async def read_metrics() -> Response:
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=metrics)

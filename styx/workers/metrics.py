"""A worker's ``/metrics``: the Temporal SDK's metrics and Styx's own, on one port.

- ``SdkMetrics``: a Temporal ``Runtime`` (``.runtime``, for the worker's client) whose metrics
  go to a ``MetricBuffer`` rather than to the SDK's own Prometheus server, and a
  ``prometheus_client`` collector that drains that buffer (at every scrape, and every
  ``DRAIN_SECONDS`` so that it never fills) into running totals. The names are the SDK's
  (``temporal_workflow_completed``, ``temporal_activity_execution_latency`` ...) written the
  Prometheus way, as the SDK's ``PrometheusConfig(counters_total_suffix=True,
  unit_suffix=True, durations_as_seconds=True)`` would: counters end in ``_total``,
  durations are histograms in seconds (``BUCKETS``) ending in ``_seconds``. Being in Styx's
  registry, they share its port: one scrape job per worker.
- ``ActivityMetrics``: a worker interceptor counting every activity by type and outcome, and
  the SSH phases started (``styx.activities.metrics.WorkerMetrics``).
- ``serving(...)``: the HTTP server on ``Settings.host:worker_metrics_port`` for the life of
  the worker. A port already taken (a second worker on the host) is logged and skipped: the
  worker runs on without metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio import activity
from temporalio.exceptions import CancelledError
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from styx.activities.metrics import WorkerMetrics

log = logging.getLogger("styx.worker.metrics")

#: Updates the SDK may buffer between drains; past it, it drops them (and logs).
BUFFER_SIZE = 100_000
DRAIN_SECONDS = 1.0
#: Bucket bounds (seconds) for the SDK's latency histograms: poll latencies to hour-long workflows.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

Labels = tuple[tuple[str, str], ...]


def _labels(attributes: Any) -> Labels:
    return tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in attributes.items()))


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)  # not cumulative; summed when collected
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
                break
        self.count += 1
        self.sum += value


class _Family:
    def __init__(self, name: str, description: str, kind: int, unit: str | None) -> None:
        self.kind = kind
        self.description = description
        if kind == BUFFERED_METRIC_KIND_HISTOGRAM and unit == "s":
            name += "_seconds"
        elif kind == BUFFERED_METRIC_KIND_COUNTER:  # its samples get "_total": once is enough
            name = name.removesuffix("_total")
        self.name = name
        self.values: dict[Labels, float] = {}
        self.histograms: dict[Labels, _Histogram] = {}

    def update(self, labels: Labels, value: float) -> None:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:  # a delta
            self.values[labels] = self.values.get(labels, 0) + value
        elif self.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            self.histograms.setdefault(labels, _Histogram()).observe(value)
        else:  # a gauge: the last value
            self.values[labels] = value

    def metric(self) -> Metric:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:
            metric = Metric(self.name, self.description, "counter")
            for labels, value in self.values.items():
                metric.add_sample(self.name + "_total", dict(labels), value)
        elif self.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            metric = Metric(self.name, self.description, "histogram")
            for labels, hist in self.histograms.items():
                cumulative = 0
                for bound, count in zip(BUCKETS, hist.buckets):
                    cumulative += count
                    metric.add_sample(self.name + "_bucket", {**dict(labels), "le": repr(bound)}, cumulative)
                metric.add_sample(self.name + "_bucket", {**dict(labels), "le": "+Inf"}, hist.count)
                metric.add_sample(self.name + "_count", dict(labels), hist.count)
                metric.add_sample(self.name + "_sum", dict(labels), hist.sum)
        else:
            metric = Metric(self.name, self.description, "gauge")
            for labels, value in self.values.items():
                metric.add_sample(self.name, dict(labels), value)
        return metric


class SdkMetrics(Collector):
    """The Temporal SDK's metrics, drained from a ``MetricBuffer`` into running totals.

    ``runtime`` is the Temporal runtime to connect the worker's client with; the collector
    registers itself in ``registry``. Label sets come from the SDK (namespace, task queue,
    workflow and activity types, operation names), all bounded by what the worker registered.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()  # scrapes run on the HTTP server's thread
        registry.register(self)

    def drain(self) -> None:
        with self._lock:
            for update in self.buffer.retrieve_updates():
                m = update.metric
                family = self._families.get(m.name)
                if family is None:
                    family = self._families[m.name] = _Family(m.name, m.description or m.name, m.kind, m.unit)
                family.update(_labels(update.attributes), update.value)

    def collect(self) -> Iterable[Metric]:
        self.drain()
        with self._lock:
            return [family.metric() for family in self._families.values()]


class ActivityMetrics(Interceptor):
    """Counts every activity this worker runs, by type and outcome, and the SSH phases started."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountingActivities(next, self.metrics)


class _CountingActivities(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: WorkerMetrics) -> None:
        super().__init__(next)
        self.metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        if name == "run_phase" and input.args:
            self.metrics.phase_started(str(getattr(input.args[0], "phase", "")))
        outcome = "failed"
        try:
            result = await super().execute_activity(input)
            outcome = "succeeded"
            return result
        except (asyncio.CancelledError, CancelledError):
            outcome = "cancelled"
            raise
        finally:
            self.metrics.activities.labels(name, outcome).inc()


@contextlib.asynccontextmanager
async def serving(registry: CollectorRegistry, host: str, port: int,
                  sdk: SdkMetrics | None = None) -> AsyncIterator[None]:
    """Serve ``registry`` at ``http://host:port/metrics`` (any path answers) while the body
    runs, draining ``sdk`` every ``DRAIN_SECONDS``. Port 0: nothing is served."""
    server = thread = None
    if port:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as err:
            log.warning("worker metrics not served: cannot listen on %s:%s (%s); "
                        "give each worker on a host its own STYX_WORKER_METRICS_PORT", host, port, err)
        else:
            log.info("worker metrics on http://%s:%s/metrics", host, port)
    drainer = asyncio.create_task(_drain_forever(sdk)) if sdk is not None else None
    try:
        yield
    finally:
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        if server is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


async def _drain_forever(sdk: SdkMetrics) -> None:
    while True:
        await asyncio.sleep(DRAIN_SECONDS)
        try:
            sdk.drain()
        except Exception:  # a bad update must not stop the worker
            log.exception("draining the SDK's metrics failed")

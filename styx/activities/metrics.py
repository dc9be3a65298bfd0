"""Styx's own worker metrics, in one ``prometheus_client`` registry per worker.

- ``styx_activities_total{activity, outcome}``: activities this worker ran, by type and
  ``succeeded`` / ``failed`` / ``cancelled`` (counted by the worker's interceptor,
  ``styx.workers.metrics``).
- ``styx_ssh_phase_starts_total{phase}``: ``setup`` and ``run`` phases started on nodes.
- ``styx_provision_attempts_total{provider}`` and ``styx_provision_failures_total{provider,
  reason}``: ``provision`` activities (one per launch attempt: zone, region, spot or not) and
  those that failed, ``reason`` being the error type the cluster workflow sees
  (``InsufficientCapacity``, ``InvalidTask``, ``ProvisionFailed``; ``Error`` for anything
  else, which the workflow retries).

Every label takes values from a fixed set or from names the worker registered (activity
types, provider names), so the series stay few. The worker serves this registry with the
Temporal SDK's own metrics on ``STYX_WORKER_METRICS_PORT`` (``styx.workers.metrics``).
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
)

disable_created_metrics()  # no ``*_created`` series beside every counter

#: The phases ``styx_ssh_phase_starts_total`` names; any other is counted as ``other``.
PHASES = ("setup", "run")


class WorkerMetrics:
    """The counters, in their own registry (a test may build many workers in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # process_*, python_*
            self.registry.register(standard)
        self.activities = Counter(
            "styx_activities", "Activities run by this worker, by type and outcome",
            ["activity", "outcome"], registry=self.registry)
        self.ssh_phase_starts = Counter(
            "styx_ssh_phase_starts", "SSH phases (setup, run) started on nodes", ["phase"],
            registry=self.registry)
        self.provision_attempts = Counter(
            "styx_provision_attempts", "Provisioning attempts (provision activities), by provider",
            ["provider"], registry=self.registry)
        self.provision_failures = Counter(
            "styx_provision_failures", "Provisioning attempts that failed, by provider and error type",
            ["provider", "reason"], registry=self.registry)

    def phase_started(self, phase: str) -> None:
        self.ssh_phase_starts.labels(phase if phase in PHASES else "other").inc()

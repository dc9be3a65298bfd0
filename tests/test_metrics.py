"""``/metrics`` on the API and on each worker, scraped as Prometheus would: a real stack (Temporal
dev server, a worker process with its metrics port, the API), real jobs on local nodes."""

from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from styx.api.app import create_app
from tests.fixtures.stack import StyxStack, settings_for, wait_for
from tests.fixtures.temporal import free_port

pytestmark = pytest.mark.slow


def scrape(url: str, token: str | None = None) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` from a Prometheus text page (it must parse)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def metered(temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    address = temporal_env.client.service_client.config.target_host
    s = StyxStack(tmp_path_factory.mktemp("styx-home"), address,
                  extra_env={"STYX_WORKER_METRICS_PORT": str(free_port())})
    try:
        yield s.start()
    finally:
        s.stop()


def worker_metrics_url(stack: StyxStack) -> str:
    return f"http://127.0.0.1:{stack.settings.worker_metrics_port}/metrics"


def test_a_finished_job_shows_in_the_api_metrics(metered: StyxStack):
    client = metered.client()
    launched = client.launch({"run": "echo one"}, cluster="meter")
    assert client.wait("meter", launched.job_id, timeout=120).status == "SUCCEEDED"
    executed = client.exec("meter", {"run": "echo two"})
    assert client.wait("meter", executed.job_id, timeout=60).status == "SUCCEEDED"

    # On a loopback API, Prometheus needs no token.
    samples = scrape(f"{metered.settings.api_url}/metrics")
    assert value(samples, "styx_jobs", status="SUCCEEDED") >= 2
    assert ("styx_jobs", frozenset({("status", "CANCELLED")})) in samples  # every status, 0 included
    assert samples[("styx_queue_depth", frozenset({("cluster", "meter")}))] == 0
    assert value(samples, "styx_database_up") == 1
    assert value(samples, "styx_submission_seconds_count", kind="launch") >= 1
    assert value(samples, "styx_submission_seconds_count", kind="exec") >= 1
    assert value(samples, "styx_submission_seconds_sum", kind="launch") > 0
    # Requests are counted by route template, never by raw path.
    assert value(samples, "styx_api_requests_total", method="POST", route="/api/v1/clusters", status="201") >= 1
    assert value(samples, "styx_api_requests_total", route="/api/v1/clusters/{name}/jobs/{job_id}") >= 1
    assert not any("meter" in dict(ls).get("route", "") for _, ls in samples)


def test_a_refused_submission_is_counted_but_not_timed(metered: StyxStack):
    url = f"{metered.settings.api_url}/api/v1/clusters"
    before = scrape(f"{metered.settings.api_url}/metrics")
    r = httpx.post(url, json={"cluster": "nope", "task": {"run": "true"}}, timeout=10)  # no token
    assert r.status_code == 401
    r = httpx.get(f"{metered.settings.api_url}/no/such/{uuid.uuid4().hex}", timeout=10)
    assert r.status_code == 404

    after = scrape(f"{metered.settings.api_url}/metrics")
    refused = {"route": "/api/v1/clusters", "status": "401"}
    assert value(after, "styx_api_requests_total", **refused) == value(before, "styx_api_requests_total", **refused) + 1
    assert value(after, "styx_api_requests_total", route="<unmatched>", status="404") >= 1
    assert value(after, "styx_submission_seconds_count", kind="launch") == \
        value(before, "styx_submission_seconds_count", kind="launch")


def test_the_worker_serves_temporal_sdk_and_styx_metrics_on_one_port(metered: StyxStack):
    client = metered.client()
    job = client.launch({"run": "echo counted"}, cluster="wmeter")
    assert client.wait("wmeter", job.job_id, timeout=120).status == "SUCCEEDED"
    # A launch that cannot be provisioned: an SSH pool that is not configured.
    client.launch({"resources": {"infra": "ssh/no-such-pool"}, "run": "true"}, cluster="nopool")

    def scraped() -> dict | None:
        samples = scrape(worker_metrics_url(metered))
        failed = value(samples, "styx_provision_failures_total", provider="ssh", reason="InvalidTask")
        # The failed cluster's workflow ends (a job's runs inside its cluster's: none ends).
        ended = value(samples, "temporal_workflow_completed_total")
        return samples if failed >= 1 and ended >= 1 else None

    samples = wait_for(scraped, 60, "the failed provisioning to be counted, and its cluster's workflow to end")
    # The Temporal SDK's own metrics, Prometheus-style names.
    assert value(samples, "temporal_activity_execution_latency_seconds_count", activity_type="provision") >= 1
    assert value(samples, "temporal_worker_task_slots_available", worker_type="ActivityWorker") > 0
    assert value(samples, "temporal_request_total") >= 1
    assert value(samples, "temporal_local_activity_total_total") == 0  # "_total" once, not twice
    assert value(samples, "temporal_local_activity_total", activity_type="record_cluster") >= 1
    # Styx's own.
    assert value(samples, "styx_activities_total", activity="provision", outcome="succeeded") >= 1
    assert value(samples, "styx_activities_total", activity="run_phase", outcome="succeeded") >= 1
    assert value(samples, "styx_activities_total", activity="provision", outcome="failed") >= 1
    assert value(samples, "styx_provision_attempts_total", provider="local") >= 1
    assert value(samples, "styx_provision_attempts_total", provider="ssh") >= 1
    assert value(samples, "styx_provision_failures_total", provider="local") == 0
    assert value(samples, "styx_ssh_phase_starts_total", phase="run") >= 1
    assert value(samples, "process_resident_memory_bytes") > 0


def test_a_second_worker_on_a_taken_metrics_port_still_works_and_says_why(metered: StyxStack):
    first = metered.worker
    second = metered.start_worker()  # same STYX_WORKER_METRICS_PORT, already served by the first
    try:
        assert second.poll() is None
        log = (metered.home / "logs" / "worker.log").read_text()
        assert "worker metrics not served" in log and "STYX_WORKER_METRICS_PORT" in log
        scrape(worker_metrics_url(metered))  # the first still answers
    finally:
        second.terminate()
        try:
            second.wait(timeout=15)
        except subprocess.TimeoutExpired:
            second.kill()
        metered.worker = first


def test_metrics_want_an_admin_token_when_required(metered: StyxStack):
    settings = settings_for({**metered.env, "STYX_METRICS_TOKEN_REQUIRED": "1"})
    assert settings.metrics_token_required
    with TestClient(create_app(settings)) as api:
        r = api.get("/metrics")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        admin = {"Authorization": f"Bearer {metered.token}"}
        r = api.post("/api/v1/users", json={"name": f"u{uuid.uuid4().hex[:6]}"}, headers=admin)
        assert r.status_code == 201, r.text
        user = {"Authorization": f"Bearer {r.json()['token']}"}
        r = api.get("/metrics", headers=user)
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        r = api.get("/metrics", headers=admin)
        assert r.status_code == 200
        families = {f.name for f in text_string_to_metric_families(r.text)}
        assert {"styx_jobs", "styx_queue_depth", "styx_api_requests"} <= families


def test_metrics_settings_default_to_a_token_beyond_loopback_and_name_bad_values():
    assert not settings_for({"STYX_HOST": "127.0.0.1"}).metrics_token_required
    assert settings_for({"STYX_HOST": "0.0.0.0"}).metrics_token_required
    assert not settings_for({"STYX_HOST": "0.0.0.0", "STYX_METRICS_TOKEN_REQUIRED": "0"}).metrics_token_required
    assert settings_for({"STYX_WORKER_METRICS_PORT": "0"}).worker_metrics_port == 0
    with pytest.raises(ValueError, match="STYX_METRICS_TOKEN_REQUIRED"):
        settings_for({"STYX_METRICS_TOKEN_REQUIRED": "maybe"})
    with pytest.raises(ValueError, match="STYX_WORKER_METRICS_PORT"):
        settings_for({"STYX_WORKER_METRICS_PORT": "-1"})


def test_job_counts_and_queue_depth_read_live_clusters_only(database):
    """What ``styx_jobs`` and ``styx_queue_depth`` are read from, on SQLite and PostgreSQL."""
    database.clusters.upsert("busy", status="UP")
    database.clusters.upsert("idle", status="INIT")
    database.clusters.upsert("gone", status="TERMINATED")
    for job_id in (1, 2, 3):
        database.clusters.upsert_job("busy", job_id, status="PENDING")
    database.clusters.upsert_job("busy", 4, status="SUCCEEDED")
    database.clusters.upsert_job("gone", 1, status="PENDING")

    assert database.clusters.job_counts() == {"PENDING": 4, "SUCCEEDED": 1}
    assert database.clusters.pending_by_cluster() == {"busy": 3, "idle": 0}

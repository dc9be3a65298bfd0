"""`styx serve`, the suites of minutes (``make chaos``): a rolling update under load fails no
request; the autoscaler goes from 1 to 3 replicas under load and back to 1 once it stops;
kill -9 of the load balancer and of the worker in the middle of an update: the service ends
on the new version with the right replica count, no replica cluster leaked, and requests
flow again through a new load balancer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fixtures.stack import wait_for
from tests.fixtures.temporal import free_port
from tests.serve_fixtures import Load, ServeStack, get, service_task

pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def stack(temporal_env, tmp_path_factory) -> Iterator[ServeStack]:
    address = temporal_env.client.service_client.config.target_host
    s = ServeStack(tmp_path_factory.mktemp("styx-home"), address)
    try:
        yield s.start()
    finally:
        s.stop()


def live_replica_clusters(client, service: str) -> list[str]:
    return sorted(c.name for c in client.status() if c.name.startswith(f"{service}-"))


def test_rolling_update_under_load_fails_no_request(stack: ServeStack) -> None:
    port = free_port()
    with stack.client() as client:
        client.serve_up(service_task(port, "1"), "roll")
        info = client.serve_wait("roll", ready=2, timeout=180)
        url = info.endpoint + "/"
        with Load(url) as load:
            wait_for(lambda: load.count() > 10, 30, "requests to flow")
            updated = client.serve_update("roll", service_task(port, "2"))
            assert updated.target_version == 2 and updated.status == "UPDATING"
            info = client.serve_wait("roll", ready=2, version=2, timeout=240)
            after = load.count()
            wait_for(lambda: load.count() > after + 10, 30, "requests after the update")
        assert not load.failures(), f"requests failed during the rolling update: {load.failures()[:5]}"
        versions = [body["version"] for _, _, body in load.results if body]
        assert versions[0] == "1" and versions[-1] == "2"
        assert sorted(r.version for r in info.replicas) == [2, 2] and info.status == "READY"
        assert {r.replica_id for r in info.replicas} == {3, 4}
        assert "serving" in client.serve_logs("roll", 3)
        client.serve_down("roll", wait=True, timeout=180)
        assert live_replica_clusters(client, "roll") == []


def test_autoscales_from_one_to_three_under_load_and_back(stack: ServeStack) -> None:
    port = free_port()
    policy = {"min_replicas": 1, "max_replicas": 3, "target_qps_per_replica": 2,
              "upscale_delay_seconds": 2, "downscale_delay_seconds": 6}
    with stack.client() as client:
        client.serve_up(service_task(port, policy=policy), "auto")
        info = client.serve_wait("auto", ready=1, timeout=180)
        assert info.target_replicas == 1
        url = info.endpoint + "/"
        with Load(url, threads=2) as load:
            info = client.serve_wait("auto", ready=3, timeout=240)
            assert info.target_replicas == 3 and info.qps > 4, info
            after = load.count()
            wait_for(lambda: load.count() > after + 30, 30, "requests on three replicas")
            seen = {body["replica"] for at, _, body in load.results[after:] if body}
            assert len(seen) == 3, f"requests reached only replicas {seen}"
        assert not load.failures(), load.failures()[:5]
        info = wait_for(lambda: (lambda i: i if i.target_replicas == 1 and len(i.replicas) == 1 else None)(
            client.service("auto")), 180, "the service to scale back to one replica")
        assert info.replicas[0].status == "READY"
        client.serve_down("auto", wait=True, timeout=180)
        assert live_replica_clusters(client, "auto") == []


def test_kill_9_of_the_lb_and_the_worker_during_an_update(stack: ServeStack) -> None:
    port = free_port()
    with stack.client() as client:
        client.serve_up(service_task(port, "1"), "tough")
        info = client.serve_wait("tough", ready=2, timeout=180)
        url = info.endpoint + "/"
        client.serve_update("tough", service_task(port, "2"))
        # Half-way: the first new replica exists.
        wait_for(lambda: any(r.version == 2 for r in client.service("tough").replicas), 60, "a v2 replica")
        stack.kill_lb()
        stack.kill_worker()
        stack.start_worker()
        stack.start_lb()
        info = client.serve_wait("tough", ready=2, version=2, timeout=300)
        assert info.status == "READY" and sorted(r.version for r in info.replicas) == [2, 2]
        # The old replicas' clusters are gone, and no replica cluster leaked.
        wait_for(lambda: len(live_replica_clusters(client, "tough")) == 2, 120, "the old replicas to go")
        assert live_replica_clusters(client, "tough") == sorted(r.cluster for r in info.replicas)
        with Load(url) as load:
            wait_for(lambda: load.count() > 20, 30, "requests through the new load balancer")
        assert not load.failures(), load.failures()[:5]
        assert {body["version"] for _, _, body in load.results if body} == {"2"}
        assert get(url)["version"] == "2"
        client.serve_down("tough", wait=True, timeout=180)
        assert live_replica_clusters(client, "tough") == []

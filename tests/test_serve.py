"""`styx serve` end to end on local nodes: a real Temporal dev server, worker, API and load
balancer (subprocesses), replicas that are clusters running a small HTTP server.

Fast (unmarked): two replicas share the requests; a replica's node is lost (kill -9 of its
server and everything on it) and no request fails (the load balancer retries the other
replica) while the workflow replaces it; a rolling update under load fails no request;
bad service files are refused naming the field and change nothing; another user sees no
service. Long (``make chaos``): autoscaling 1 → 3 → 1 under load; kill -9 of the load
balancer and the worker in the middle of an update.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from styx.sdk.transport import Invalid, NotFound
from tests.fixtures.stack import wait_for
from tests.fixtures.temporal import free_port
from tests.serve_fixtures import Load, ServeStack, get, kill_node, service_task


@pytest.fixture(scope="module")
def stack(temporal_env, tmp_path_factory) -> Iterator[ServeStack]:
    address = temporal_env.client.service_client.config.target_host
    s = ServeStack(tmp_path_factory.mktemp("styx-home"), address)
    try:
        yield s.start()
    finally:
        s.stop()


def ready_ids(info) -> list[int]:
    return sorted(r.replica_id for r in info.replicas if r.status == "READY")


def cluster_status(client, name: str) -> str | None:
    return next((c.status for c in client.status(all=True) if c.name == name), None)


def test_two_replicas_share_requests_and_a_lost_node_costs_no_request(stack: ServeStack) -> None:
    port = free_port()
    with stack.client() as client:
        info = client.serve_up(service_task(port), "web")
        assert info.status == "STARTING" and info.endpoint.startswith("http://127.0.0.1:")
        info = client.serve_wait("web", ready=2, timeout=120)
        assert ready_ids(info) == [1, 2] and info.status == "READY"
        url = info.endpoint + "/"
        seen = {get(url)["replica"] for _ in range(20)}
        assert seen == {"1", "2"}, f"requests went only to replica(s) {seen}"

        with Load(url) as load:
            wait_for(lambda: load.count() > 20, 30, "requests to flow")
            killed_at = time.monotonic()
            kill_node(stack.nodes_root, "web-1")
            info = wait_for(lambda: (lambda i: i if ready_ids(i) == [2, 3] else None)(client.service("web")),
                            120, "replica 3 to replace replica 1")
            after = load.count()
            wait_for(lambda: load.count() > after + 20, 30, "requests after the replacement")
        assert not load.failures(), f"requests failed after the node was lost: {load.failures()[:5]}"
        served_after = {body["replica"] for at, status, body in load.results if body and at > killed_at + 5}
        assert "1" not in served_after and "3" in served_after, served_after
        wait_for(lambda: cluster_status(client, "web-1") == "TERMINATED", 60, "the lost replica's cluster to go")
        assert "retry" in client.serve_lb_logs("web").lower() or "refused" in client.serve_lb_logs("web")

        client.serve_down("web", wait=True, timeout=120)
        with pytest.raises(NotFound):
            client.service("web")
        assert {cluster_status(client, c) for c in ("web-1", "web-2", "web-3")} == {"TERMINATED"}


def test_rolling_update_under_load_fails_no_request(stack: ServeStack) -> None:
    port = free_port()
    with stack.client() as client:
        client.serve_up(service_task(port, "1"), "roll")
        info = client.serve_wait("roll", ready=2, timeout=120)
        url = info.endpoint + "/"
        with Load(url) as load:
            wait_for(lambda: load.count() > 10, 30, "requests to flow")
            updated = client.serve_update("roll", service_task(port, "2"))
            assert updated.target_version == 2
            info = client.serve_wait("roll", ready=2, version=2, timeout=180)
            after = load.count()
            wait_for(lambda: load.count() > after + 10, 30, "requests after the update")
        assert not load.failures(), f"requests failed during the rolling update: {load.failures()[:5]}"
        versions = [body["version"] for _, _, body in load.results if body]
        assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}
        assert sorted(r.version for r in info.replicas) == [2, 2] and info.status == "READY"
        assert {r.replica_id for r in info.replicas} == {3, 4}
        assert "2" in client.serve_logs("roll", 3) or "serving" in client.serve_logs("roll", 3)
        client.serve_down("roll", wait=True, timeout=120)


def test_bad_service_files_are_refused_naming_the_field(stack: ServeStack) -> None:
    port = free_port()
    cases = [
        ({"run": "true"}, "task.service"),
        ({**service_task(port), "service": {"readiness_probe": "/", "replicas": 1, "replica_polcy": {}}},
         'task.service.replica_polcy: unknown key; did you mean "replica_policy"?'),
        ({**service_task(port), "service": {"readiness_probe": "/", "replicas": 99, "ports": port}},
         "task.service.replicas: must be a whole number from 1 to 16"),
        ({**service_task(port), "service": {"readiness_probe": "health", "replicas": 1, "ports": port}},
         "task.service.readiness_probe.path"),
        ({**service_task(port), "service": {"readiness_probe": "/", "replicas": 1}}, "task.service.ports"),
        ({**service_task(port), "service": {"readiness_probe": "/", "ports": port,
                                            "replica_policy": {"min_replicas": 0, "max_replicas": 2}}},
         "target_qps_per_replica"),
    ]
    with stack.client() as client:
        for task, expected in cases:
            with pytest.raises(Invalid) as err:
                client.serve_up(task, "bad")
            assert expected in str(err.value), (task, str(err.value))
        with pytest.raises(Invalid) as err:
            client.serve_up(service_task(port), "Bad_Name")
        assert "name" in str(err.value)
        assert client.serve_status() == [] or all(s.name != "bad" for s in client.serve_status())
        with pytest.raises(NotFound):
            client.service("bad")
    (stack.home.parent / "project" / "svc.yaml").parent.mkdir(exist_ok=True)
    (stack.home.parent / "project" / "svc.yaml").write_text("run: echo hi\nservice:\n  replicas: 1\n  ports: 8080\n")
    result = stack.cli("serve", "up", "svc.yaml", "-n", "bad", "-y")
    assert result.returncode == 1 and "task.service.readiness_probe: required" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_another_user_sees_no_service(stack: ServeStack) -> None:
    port = free_port()
    with stack.client() as admin:
        bob = admin.create_user(f"bob{port}")
        admin.serve_up(service_task(port, replicas=1), "mine")
        try:
            from styx.sdk.client import Client

            with Client(stack.settings.api_url, bob.token) as client:
                assert all(s.name != "mine" for s in client.serve_status())
                for call in (lambda: client.service("mine"), lambda: client.serve_down("mine"),
                             lambda: client.serve_update("mine", service_task(port)),
                             lambda: client.serve_logs("mine", 1), lambda: client.serve_lb_logs("mine")):
                    with pytest.raises(NotFound):
                        call()
            assert admin.service("mine").status != "SHUTTING_DOWN"
        finally:
            admin.serve_down("mine", wait=True, timeout=120)


def test_cli_status_endpoint_and_lb_endpoint_answers(stack: ServeStack) -> None:
    port = free_port()
    project = stack.home.parent / "project"
    project.mkdir(exist_ok=True)
    import yaml

    (project / "one.yaml").write_text(yaml.safe_dump(service_task(port, replicas=1)))
    up = stack.cli("serve", "up", "one.yaml", "-n", "one", "-y", check=True)
    assert "endpoint" in up.stdout
    with stack.client() as client:
        client.serve_wait("one", ready=1, timeout=120)
    endpoint = stack.cli("serve", "status", "one", "--endpoint", check=True).stdout.strip()
    assert endpoint.startswith("http://")
    echoed = httpx.post(endpoint + "/echo", content=b"x" * 100_000, timeout=30, trust_env=False)
    assert echoed.status_code == 200 and echoed.content == b"x" * 100_000
    table = stack.cli("serve", "status", check=True).stdout
    assert "one" in table and "READY" in table
    down = stack.cli("serve", "down", "one", "-y", check=True, timeout=180)
    assert "is down" in down.stdout

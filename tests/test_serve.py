"""`styx serve` end to end on local nodes: a real Temporal dev server, worker, API and load
balancer (subprocesses), replicas that are clusters running a small HTTP server.

Two replicas share the requests; a replica's node is lost (kill -9 of its server and
everything on it) and no request fails (the load balancer retries the other replica) while
the workflow replaces it; bad service files are refused naming the field and change nothing;
the CLI brings a service up, shows its endpoint (a 100 KB body goes through and back) and
takes it down; another user sees nothing of it. The suites of minutes (rolling update under
load, autoscaling, kill -9 during an update) are in ``test_serve_long.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from styx.sdk.client import Client
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


@pytest.mark.long  # ~1-2 min; `make chaos` runs it (make test keeps serve's bad-input and CLI tests)
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
            # The load balancers read the ready set every second: the replacement gets requests soon after.
            wait_for(lambda: any(body and body["replica"] == "3" and at > killed_at + 5
                                 for at, _, body in list(load.results)), 30, "replica 3 to serve requests")
        assert not load.failures(), f"requests failed after the node was lost: {load.failures()[:5]}"
        served_after = {body["replica"] for at, status, body in load.results if body and at > killed_at + 5}
        assert "1" not in served_after and "3" in served_after, served_after
        wait_for(lambda: cluster_status(client, "web-1") == "TERMINATED", 60, "the lost replica's cluster to go")
        assert "trying another replica" in client.serve_lb_logs("web")

        client.serve_down("web", wait=True, timeout=120)
        with pytest.raises(NotFound):
            client.service("web")
        assert {cluster_status(client, c) for c in ("web-1", "web-2", "web-3")} == {"TERMINATED"}


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


def test_cli_up_status_down_and_another_user_sees_nothing(stack: ServeStack) -> None:
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
    with stack.client() as admin:
        bob = admin.create_user(f"bob{port}")
    with Client(stack.settings.api_url, bob.token) as client:
        assert all(s.name != "one" for s in client.serve_status())
        for call in (lambda: client.service("one"), lambda: client.serve_down("one"),
                     lambda: client.serve_update("one", service_task(port)),
                     lambda: client.serve_logs("one", 1), lambda: client.serve_lb_logs("one")):
            with pytest.raises(NotFound):
                call()
    bob_cli = stack.cli("serve", "down", "one", "-y", env={"STYX_TOKEN": bob.token})
    assert bob_cli.returncode == 1 and "service 'one' not found" in bob_cli.stderr
    down = stack.cli("serve", "down", "one", "-y", check=True, timeout=180)
    assert "is down" in down.stdout

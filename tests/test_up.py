"""`styx up` as a user runs it: a subprocess in a fresh STYX_HOME, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from styx.config import Settings
from styx.temporal import connect
from styx.contracts.system import PingWorkflowInput
from styx.workflows.ping import PingWorkflow
from tests.fixtures.processes import pid_alive
from tests.fixtures.stack import settings_for, wait_for
from tests.fixtures.temporal import free_port

pytestmark = pytest.mark.slow


class Stack:
    """A running `styx up` subprocess and what it wrote to STYX_HOME."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "styx", "up"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def state(self) -> dict | None:
        try:
            return json.loads((self.home / "up.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_up(self, timeout: float = 120) -> dict:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"styx up exited early:\n{self.proc.stdout.read()}")
            return self.state()
        return wait_for(ready, timeout, "styx up to report ready")

    def settings(self) -> Settings:
        return settings_for(self.env)


@pytest.fixture
def stack(tmp_path):
    home = tmp_path / "styx-home"
    env = {
        **os.environ,
        "STYX_HOME": str(home),
        "STYX_API_PORT": str(free_port()),
        "STYX_TEMPORAL_PORT": str(free_port()),
        "STYX_TEMPORAL_UI_PORT": str(free_port()),
        "STYX_GIT_HTTP_PORT": str(free_port()),
        "STYX_GIT_SSH_PORT": str(free_port()),
    }
    for var in ("TEMPORAL_ADDRESS", "STYX_TEMPORAL_ADDRESS", "STYX_DB_URL"):
        env.pop(var, None)
    s = Stack(home, env)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


async def test_up_serves_health_ui_and_workflows_then_stops_every_child(stack):
    info = stack.wait_up()
    settings = stack.settings()
    children = info["children"]
    assert set(children) == {"temporal", "worker", "api", "lb", "gitserver"}
    # Everything `styx up` and the Temporal dev server made in STYX_HOME is private.
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    for made in ("temporal.db", "styx.db", "credentials", "logs/temporal.log"):
        assert stat.S_IMODE((stack.home / made).stat().st_mode) == 0o600, made

    health = httpx.get(f"{settings.api_url}/healthz", timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["temporal"] == "ok" and health.json()["database"] == "ok"
    assert httpx.get(f"{settings.api_url}/openapi.json", timeout=5).json()["info"]["title"] == "Styx"
    ui = httpx.get(f"{settings.temporal_ui_url}/api/v1/namespaces/default", timeout=5)
    assert ui.status_code == 200
    assert httpx.get(f"http://127.0.0.1:{stack.env['STYX_GIT_HTTP_PORT']}/nobody/nothing.git/info/refs",
                     params={"service": "git-upload-pack"}, timeout=5).status_code in (401, 404)

    client = await connect(settings, wait_seconds=10)
    out = await client.execute_workflow(
        PingWorkflow.run, PingWorkflowInput("round trip"), id=f"ping/{uuid.uuid4()}",
        task_queue=settings.task_queue,
    )
    assert out.message == "round trip"
    assert out.worker.endswith(f":{children['worker']}")

    # `styx doctor` asks the API, which runs the same round trip; the token is the one `styx up` wrote.
    doctor = subprocess.run([sys.executable, "-m", "styx", "doctor"], env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "database: ok" in doctor.stdout and "Temporal: ok" in doctor.stdout
    assert f":{children['worker']}" in doctor.stdout

    # A second `styx up` on the same home says so instead of failing on a busy port.
    second = subprocess.run([sys.executable, "-m", "styx", "up"], env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0
    assert "already running" in second.stdout

    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0
    for name, pid in children.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) outlived styx up"
    assert not (stack.home / "up.json").exists()
    for part in ("temporal", "worker", "api", "lb", "gitserver", "supervisor"):
        assert (stack.home / "logs" / f"{part}.log").exists()


async def test_worker_killed_under_up_is_restarted_and_finishes_inflight_workflow(stack):
    info = stack.wait_up()
    settings = stack.settings()
    old_worker = info["children"]["worker"]
    client = await connect(settings, wait_seconds=10)
    handle = await client.start_workflow(
        PingWorkflow.run, PingWorkflowInput("survived", delay_seconds=2), id=f"ping/{uuid.uuid4()}",
        task_queue=settings.task_queue,
    )
    time.sleep(0.5)  # the workflow has started its timer on the old worker
    os.kill(old_worker, signal.SIGKILL)

    new_worker = wait_for(
        lambda: (pid := (stack.state() or {}).get("children", {}).get("worker")) not in (None, old_worker) and pid,
        15, "a new worker pid")
    out = await handle.result()
    assert out.message == "survived"
    assert out.worker.endswith(f":{new_worker}")
    log = (stack.home / "logs" / "supervisor.log").read_text()
    assert f"worker (pid {old_worker}) exited with code -9" in log

    # The Temporal dev server too comes back, on the same database: the history survives.
    temporal_pid = stack.state()["children"]["temporal"]
    os.kill(temporal_pid, signal.SIGKILL)
    wait_for(lambda: (stack.state() or {}).get("children", {}).get("temporal") not in (None, temporal_pid),
             30, "a new Temporal dev server")
    client = await connect(settings, wait_seconds=30)
    desc = await client.get_workflow_handle(handle.id).describe()
    assert desc.status is not None and desc.status.name == "COMPLETED"

    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0

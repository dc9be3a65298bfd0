"""Styx on a Temporal it did not start: a dev server started by the test WITHOUT Styx's search
attributes, as a self-hosted cluster would be. The API explains (503, with the command) while
nothing has registered them; a worker registers them at start; then everything works."""

from __future__ import annotations

from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from styx.config import find_temporal_binary
from styx.contracts.search import SEARCH_ATTRIBUTES
from styx.temporal import missing_search_attributes
from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import free_port

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module")
async def bare_temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal server that knows none of Styx's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(), ip="127.0.0.1", port=free_port(), ui=False)
    try:
        yield env
    finally:
        await env.shutdown()


async def test_a_worker_registers_styx_search_attributes_on_a_temporal_styx_did_not_start(
        bare_temporal: WorkflowEnvironment, tmp_path):
    assert set(await missing_search_attributes(bare_temporal.client, "default")) == set(SEARCH_ATTRIBUTES)
    address = bare_temporal.client.service_client.config.target_host
    stack = StyxStack(tmp_path / "home", address)
    try:
        # The API alone: a launch is refused with the command that fixes it, not a 500.
        stack.api = stack._spawn("api")
        wait_for(lambda: _healthy(stack), 60, "the API")
        refused = httpx.post(f"{stack.settings.api_url}/api/v1/clusters", timeout=30,
                             headers={"Authorization": f"Bearer {stack.token}"},
                             json={"cluster": "ext", "task": {"run": "echo hi"}})
        assert refused.status_code == 503, refused.text
        assert "temporal operator search-attribute create" in refused.json()["detail"]
        doctor = stack.cli("doctor")
        assert doctor.returncode == 1 and "search attributes: missing" in doctor.stdout, doctor.stdout

        # A worker registers them before it polls; then a launch runs to the end.
        stack.start_worker()
        assert await missing_search_attributes(bare_temporal.client, "default") == []
        client = stack.client()
        job = client.launch({"run": "echo on-external-temporal"}, cluster="ext")
        assert client.wait("ext", job.job_id, timeout=120).status == "SUCCEEDED"
        assert "on-external-temporal" in client.logs("ext", job.job_id)
        assert "search attributes: registered" in stack.cli("doctor", check=True).stdout
        client.down("ext")
    finally:
        stack.stop()


def _healthy(stack: StyxStack) -> bool:
    try:
        return httpx.get(f"{stack.settings.api_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

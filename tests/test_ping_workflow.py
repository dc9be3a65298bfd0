"""The trivial workflow round-trips through a real worker on both Temporal test servers."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.worker import Worker

from styx.activities.ping import ping
from styx.config import Settings
from styx.workers.worker import build_worker
from styx.contracts.system import PingWorkflowInput
from styx.workflows.ping import PingWorkflow


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'styx.db'}")


async def test_ping_round_trips_through_worker_on_dev_server(temporal_env, tmp_path):
    settings = _settings(tmp_path)
    async with build_worker(temporal_env.client, settings):
        out = await temporal_env.client.execute_workflow(
            PingWorkflow.run, PingWorkflowInput("hello"), id=f"ping/{uuid.uuid4()}",
            task_queue=settings.task_queue,
        )
    assert out.message == "hello"
    assert ":" in out.worker


async def test_durable_timer_skips_on_time_skipping_server(time_skipping_env):
    async with Worker(time_skipping_env.client, task_queue="t", workflows=[PingWorkflow], activities=[ping]):
        out = await time_skipping_env.client.execute_workflow(
            PingWorkflow.run, PingWorkflowInput("later", delay_seconds=3 * 24 * 3600),
            id=f"ping/{uuid.uuid4()}", task_queue="t",
        )
    assert out.message == "later"

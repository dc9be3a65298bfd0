"""A job cancelled while Styx copies its log keeps its log whole in the database: the run
activity, cancelled mid-copy, stores what the node holds before it goes (found by the faults
suite: a job that had ended on its node as `styx stop` cancelled it kept 91 of its 215 bytes).
The run_phase activity against a real local node, cancelled at its first heartbeat."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import asyncssh
import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from styx import ssh
from styx.activities.ssh import LOG_CHUNK, SshActivities
from styx.contracts.jobs import RunPhaseInput
from styx.db import Database, migrate
from styx.providers.local.provider import LocalProvider
from styx.ssh import SshPool, phase_state, start_phase
from tests.fixtures.stack import wait_for_async


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> asyncssh.SSHKey:
    return ssh.ensure_client_key(tmp_path_factory.mktemp("keys") / "id_ed25519")


@pytest_asyncio.fixture
async def provider(tmp_path: Path, client_key: asyncssh.SSHKey) -> AsyncIterator[LocalProvider]:
    prov = LocalProvider(tmp_path / "local", ssh.public_key_line(client_key))
    try:
        yield prov
    finally:
        for cluster in prov.list_clusters():
            await prov.terminate(cluster, None)


async def test_a_run_cancelled_while_its_log_is_copied_stores_the_rest_first(
        tmp_path: Path, provider: LocalProvider, pool: SshPool) -> None:
    db_url = f"sqlite:///{tmp_path / 'styx.db'}"
    migrate(db_url)
    db = Database(db_url)
    db.clusters.upsert("c", provider="local", status="UP", num_nodes=1)
    db.clusters.upsert_job("c", 1, status="RUNNING", name="j", num_nodes=1)
    node = (await provider.provision("c", 1, {})).endpoints()[0]
    conn = await pool.get(node)
    # A job whose output (three rows' worth) is all on the node before Styx copies any of it.
    script = f"head -c {3 * LOG_CHUNK} /dev/zero | tr '\\0' x | fold -w 99"
    await start_phase(conn, "1", "run", script)

    async def ended() -> bool:
        return not (await phase_state(conn, "1", "run")).running

    await wait_for_async(ended, 30, "the job to end on its node")

    env = ActivityEnvironment()
    heartbeats: list[object] = []

    def on_heartbeat(*details: object) -> None:
        heartbeats.append(details)
        if len(heartbeats) == 1:  # the first row is stored: `styx stop` comes now
            env.cancel()

    env.on_heartbeat = on_heartbeat
    activities = SshActivities(tmp_path / "home", pool, db)
    with pytest.raises(BaseException) as stopped:
        await env.run(activities.run_phase, RunPhaseInput("c", 1, "run", 0, node.to_dict(), script))
    assert "Cancel" in type(stopped.value).__name__

    on_node = (provider.root / "c" / "node-0" / "home" / ".styx" / "jobs" / "1" / "run.log").read_bytes()
    stored = b"".join(data for _, data in db.joblogs.read("c", 1, "run", 0, 0, max_rows=100))
    assert len(on_node) > LOG_CHUNK
    assert db.joblogs.size("c", 1, "run", 0) == len(on_node) and stored == on_node

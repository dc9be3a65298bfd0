"""Deep queues of large scripts on a local cluster, end to end (API, worker, Temporal, SSH).

The cluster workflow holds at most its window of waiting jobs (``STYX_QUEUE_WINDOW``, 8 here so
that a few dozen jobs overflow it) and never a job's script: the rest wait in the database and
are fetched in submission order as the window drains. What a user checks: every job runs, in
order, once, even when the worker is killed half-way; a job waiting in the database can be
cancelled; ``down`` with the queue deep answers and ends every job; a body larger than Styx hands Temporal is refused up front, naming
the field and the limit, and nothing is queued. The 10,000 × 64 KB case is the long test at the
end (``make chaos``) and ``bench/deep_queue.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from styx.contracts.clusters import ClusterDescription, cluster_workflow_id
from styx.contracts.payloads import MAX_PAYLOAD_BYTES
from styx.db import Database
from styx.sdk.transport import Invalid
from tests.fixtures.stack import StyxStack, wait_for

pytestmark = pytest.mark.slow

WINDOW = 8
#: Each job's ``run``: 64 KB, as a long inline script.
SCRIPT_BYTES = 64 * 1024


def big_script(marker: Path, size: int = SCRIPT_BYTES) -> str:
    """A ``size``-byte script that appends its job id to ``marker`` (the rest is a comment)."""
    head = f'echo "$STYX_JOB_ID" >> {marker}\n# '
    return head + "x" * (size - len(head) - 1) + "\n"


def marks(stack: StyxStack, name: str) -> Path:
    """A file jobs may append to: in a directory every job user may write (a root run's
    jobs run as per-cluster users)."""
    shared = stack.shared_dir / "marks"
    shared.mkdir(exist_ok=True)
    shared.chmod(0o1777)
    return shared / name


def gate_script(gate: Path) -> str:
    return f"while [ ! -e {gate} ]; do sleep 0.05; done"


@pytest.fixture(scope="module")
def deep(temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    address = temporal_env.client.service_client.config.target_host
    stack = StyxStack(tmp_path_factory.mktemp("deep-home"), address, extra_env={
        "STYX_QUEUE_WINDOW": str(WINDOW),
        # Tasks up to 4 MB pass the task-file check, so that the payload guard is what answers.
        "STYX_MAX_TASK_BYTES": str(4 << 20), "STYX_MAX_REQUEST_BYTES": str(8 << 20)})
    try:
        yield stack.start()
    finally:
        stack.stop()


async def _describe(temporal_env, cluster: str) -> ClusterDescription:
    handle = temporal_env.client.get_workflow_handle(cluster_workflow_id(cluster))
    return await handle.query("describe", result_type=ClusterDescription)


async def _largest_payload(temporal_env, cluster: str) -> int:
    """The largest payload in every run of the cluster workflow's history."""
    largest = 0
    async for event in temporal_env.client.get_workflow_handle(cluster_workflow_id(cluster)).fetch_history_events():
        for payload in _payloads(event):
            largest = max(largest, len(payload.data))
    return largest


def _payloads(message) -> Iterator:
    from google.protobuf.message import Message
    from temporalio.api.common.v1 import Payload

    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        else:
            values = [value] if isinstance(value, Message) else list(value)
        for item in values:
            yield from _payloads(item)


def _submit_many(stack: StyxStack, cluster: str, marker: Path, n: int) -> list[int]:
    task = {"resources": {"cpus": 1}, "run": big_script(marker)}
    with ThreadPoolExecutor(4) as pool:
        return sorted(pool.map(lambda _: stack.client().exec(cluster, task).job_id, range(n)))


async def test_a_deep_queue_of_large_scripts_drains_in_order_and_a_waiting_job_is_cancelled(
        deep: StyxStack, temporal_env) -> None:
    client = deep.client()
    gate, marker = deep.shared_dir / "deep-gate", marks(deep, "deep-order")
    first = client.launch({"resources": {"cpus": 1}, "run": gate_script(gate)}, cluster="deep").job_id
    wait_for(lambda: client.job("deep", first).status == "RUNNING", 60, "the gate job to run")
    ids = _submit_many(deep, "deep", marker, 4 * WINDOW)
    assert ids == list(range(2, 2 + 4 * WINDOW))

    described = await _describe(temporal_env, "deep")
    assert len(described.queued) <= WINDOW and described.backlog_from is not None
    assert all(j.status == "PENDING" for j in client.queue("deep") if j.job_id != first)
    # The cluster's history holds ids and shapes, never a 64 KB script.
    assert await _largest_payload(temporal_env, "deep") < SCRIPT_BYTES // 2

    waiting = ids[-3]  # beyond the window: it waits in the database
    assert client.cancel("deep", [waiting]).cancelled == [waiting]
    assert client.job("deep", waiting).status == "CANCELLED"

    gate.touch()
    for job_id in ids:
        client.wait("deep", job_id, timeout=180)
    ran = [int(line) for line in marker.read_text().split()]
    assert ran == [j for j in ids if j != waiting], "a job ran out of order, twice, or not at all"
    assert {client.job("deep", j).status for j in ids if j != waiting} == {"SUCCEEDED"}
    assert client.job("deep", waiting).status == "CANCELLED"
    assert (await _describe(temporal_env, "deep")).backlog_from is None
    client.down("deep")


async def test_down_with_a_deep_queue_answers_and_ends_every_job(deep: StyxStack, temporal_env) -> None:
    client = deep.client()
    gate, marker = deep.shared_dir / "down-gate", marks(deep, "down-order")
    first = client.launch({"resources": {"cpus": 1}, "run": gate_script(gate)}, cluster="deepdown").job_id
    wait_for(lambda: client.job("deepdown", first).status == "RUNNING", 60, "the gate job to run")
    ids = _submit_many(deep, "deepdown", marker, 5 * WINDOW)
    assert (await _describe(temporal_env, "deepdown")).backlog_from is not None

    downed = client.down("deepdown")
    assert downed.status == "TERMINATED"
    jobs = {j.job_id: j.status for j in client.queue("deepdown")}
    assert jobs == {job_id: "CANCELLED" for job_id in [first, *ids]}
    assert not marker.exists(), "a queued job ran after down"


async def test_a_pending_row_the_workflow_never_heard_of_is_ended_by_stop_and_its_id_never_reused(
        deep: StyxStack, temporal_env) -> None:
    """The faults suite's find: Temporal killed -9 after the cluster workflow's batched row
    write but before its task was saved leaves a PENDING row past the ids the workflow handed
    out. ``stop`` ends it, and the next job gets an id past it instead of taking that row over."""
    client = deep.client()
    first = client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="ghost").job_id
    client.wait("ghost", first, timeout=120)
    ghost = (await _describe(temporal_env, "ghost")).next_job_id
    Database(deep.settings.db_url).clusters.upsert_job("ghost", ghost, status="PENDING", name="lost-submission")

    client.stop("ghost")
    assert client.job("ghost", ghost).status == "CANCELLED"
    client.start("ghost")
    after = client.exec("ghost", {"resources": {"cpus": 1}, "run": "true"}).job_id
    assert after > ghost
    assert client.wait("ghost", after, timeout=120).status == "SUCCEEDED"
    assert client.job("ghost", ghost).status == "CANCELLED" and client.job("ghost", ghost).name == "lost-submission"
    client.down("ghost")


@pytest.mark.long  # `make chaos` runs it; make test keeps the drain, cancel and down tests
def test_worker_killed_while_a_deep_queue_drains_runs_every_job_once_in_order(deep: StyxStack) -> None:
    client = deep.client()
    gate, marker = deep.shared_dir / "kill-gate", marks(deep, "kill-order")
    first = client.launch({"resources": {"cpus": 1}, "run": gate_script(gate)}, cluster="deepkill").job_id
    wait_for(lambda: client.job("deepkill", first).status == "RUNNING", 60, "the gate job to run")
    ids = _submit_many(deep, "deepkill", marker, 4 * WINDOW)
    gate.touch()
    # Half-way: the window has been refilled from the database at least once.
    wait_for(lambda: marker.exists() and len(marker.read_text().split()) > WINDOW + 2, 120,
             "the queue to drain past its first window")
    deep.kill_worker()
    deep.start_worker()
    for job_id in ids:
        client.wait("deepkill", job_id, timeout=180)
    assert [int(line) for line in marker.read_text().split()] == ids, "a job ran twice, out of order, or not at all"
    assert {client.job("deepkill", j).status for j in ids} == {"SUCCEEDED"}
    client.down("deepkill")


def test_a_body_over_the_payload_limit_is_refused_naming_the_field_and_queues_nothing(
        deep: StyxStack, tmp_path: Path) -> None:
    client = deep.client()
    client.wait("guard", client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="guard").job_id,
                timeout=60)
    huge = "echo big\n#" + "y" * (MAX_PAYLOAD_BYTES + 1000)
    with pytest.raises(Invalid) as refused:
        client.exec("guard", {"run": huge})
    assert refused.value.status_code == 413
    assert refused.value.message.startswith("task.run: ")
    assert f"{MAX_PAYLOAD_BYTES:,} bytes allowed" in refused.value.message

    task_file = tmp_path / "huge.yaml"
    task_file.write_text(yaml.safe_dump({"run": huge}))
    r = deep.cli("exec", "guard", str(task_file))
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "task.run" in lines[0] and "bytes allowed" in lines[0], r.stdout + r.stderr
    assert [j.job_id for j in client.queue("guard")] == [1]  # nothing was queued
    client.down("guard")


# -- the target size (make chaos) --------------------------------------------------------------

DEEP_JOBS = int(os.environ.get("STYX_DEEP_QUEUE_JOBS", "10000"))


@pytest.mark.long
async def test_ten_thousand_queued_jobs_of_64_kb_keep_the_cluster_running_and_down_works(
        temporal_env, tmp_path_factory) -> None:
    """The default window (200): 10,000 jobs of 64 KB scripts queued behind a gate job; the
    cluster workflow continues as new under the payload limits, the first jobs past the window
    run when the gate opens, and ``down`` answers with thousands still waiting."""
    address = temporal_env.client.service_client.config.target_host
    stack = StyxStack(tmp_path_factory.mktemp("deep10k"), address).start()
    try:
        client = stack.client()
        gate, marker = stack.shared_dir / "gate10k", marks(stack, "order10k")
        first = client.launch({"resources": {"cpus": 1}, "run": gate_script(gate)}, cluster="big").job_id
        wait_for(lambda: client.job("big", first).status == "RUNNING", 60, "the gate job to run")
        task = {"resources": {"cpus": 1}, "run": big_script(marker)}
        with ThreadPoolExecutor(4) as pool:
            ids = sorted(pool.map(lambda _: stack.client().exec("big", task).job_id, range(DEEP_JOBS)))
        assert ids == list(range(2, DEEP_JOBS + 2))
        handle = temporal_env.client.get_workflow_handle(cluster_workflow_id("big"))
        assert (await handle.describe()).status.name == "RUNNING"
        assert await _largest_payload(temporal_env, "big") < SCRIPT_BYTES // 2

        gate.touch()
        past_window = ids[250]
        client.wait("big", past_window, timeout=600)
        assert client.job("big", past_window).status == "SUCCEEDED"

        assert client.down("big").status == "TERMINATED"
        statuses = [j.status for j in client.queue("big")]
        assert "PENDING" not in statuses and "RUNNING" not in statuses
        ran = [int(line) for line in marker.read_text().split()]
        assert ran == sorted(set(ran)), "a job ran twice or out of order"
    finally:
        stack.stop()

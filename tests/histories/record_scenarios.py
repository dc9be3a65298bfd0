"""Records histories of ClusterWorkflow and JobWorkflow runs for ``tests/test_replay.py``.

To add the histories of a commit (say, before changing a workflow)::

    git worktree add --detach /tmp/rec <commit>
    cp tests/histories/record_scenarios.py /tmp/rec/tests/test_zz_record.py
    cd /tmp/rec && STYX_HISTORY_OUT=/tmp/h PYTHONPATH=$PWD python -m pytest -q tests/test_zz_record.py
    mkdir tests/histories/<short commit> && gzip -9 each /tmp/h/*.json into it

It runs on the time-skipping test server with the fake activities of that commit's
``tests/test_cluster_workflow.py`` (any commit whose ``Cloud`` fixture is there).
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JobStatus
try:
    from styx.contracts.jobs import CancelJobInput
except ImportError:  # older layouts
    from styx.contracts.clusters import CancelJobInput  # type: ignore
from styx.workflows.cluster import ClusterWorkflow
from tests.test_cluster_workflow import Cloud, cloud  # noqa: F401

OUT = Path(os.environ.get("STYX_HISTORY_OUT", "/tmp/histories"))


async def _save(cloud: Cloud, scenario: str, cluster: WorkflowHandle, jobs: list[int]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for handle in [cluster] + [cloud.env.client.get_workflow_handle(f"{cluster.id}/job/{j}") for j in jobs]:
        try:
            history = await handle.fetch_history()
        except RPCError:  # a job run inside its cluster's workflow has none of its own
            continue
        (OUT / f"{scenario}-{handle.id.replace('/', '_')}.json").write_text(history.to_json())


async def test_record_jobs_cancel_stop_start_down(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(name="jobs", num_nodes=2, node_cpus=2.0)
    both = await cloud.submit(cluster, num_nodes=2)
    small = await cloud.submit(cluster)
    waiting = await cloud.submit(cluster, cpus=2.0)
    later = await cloud.submit(cluster)
    await fake.until(lambda: len(fake.hosts.get(both, [])) == 2, "the 2-node job to run")
    await cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput(later))
    fake.finish(both)
    await fake.until(lambda: fake.status(both) == JobStatus.SUCCEEDED, "the 2-node job to succeed")
    await fake.until(lambda: fake.status(small) == JobStatus.RUNNING, "the small job to run")
    fake.finish(small, exit_code=3)
    await fake.until(lambda: fake.status(small) == JobStatus.FAILED, "the small job to fail")
    await fake.until(lambda: fake.status(waiting) == JobStatus.RUNNING, "the 2-CPU job to run")
    await cluster.execute_update(ClusterWorkflow.stop)
    await cluster.execute_update(ClusterWorkflow.start)
    after = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(after) == JobStatus.RUNNING, "a job after start")
    fake.finish(after)
    await fake.until(lambda: fake.status(after) == JobStatus.SUCCEEDED, "it to succeed")
    await cluster.execute_update(ClusterWorkflow.down)
    assert (await cluster.result()).status == ClusterStatus.TERMINATED
    await _save(cloud, "jobs", cluster, [both, small, waiting, after])


async def test_record_autostop_then_start_then_autostop_down(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(name="idle", autostop_minutes=10)
    job = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(job) == JobStatus.RUNNING, "the job to run")
    fake.finish(job)
    await fake.until(lambda: fake.status(job) == JobStatus.SUCCEEDED, "the job to succeed")
    await cloud.env.sleep(timedelta(minutes=11))
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "autostop")
    await cluster.execute_update(ClusterWorkflow.start)
    from styx.contracts.clusters import AutostopInput
    await cluster.execute_update(ClusterWorkflow.set_autostop, AutostopInput(5, down=True))
    assert (await cluster.result()).status == ClusterStatus.TERMINATED
    await _save(cloud, "idle", cluster, [job])

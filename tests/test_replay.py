"""Runs begun by an earlier Styx carry on under this one: recorded histories of the cluster and
job workflows, replayed against today's code.

A workflow change that alters what an old run does next (a command added, moved or dropped
without ``workflow.patched``) fails its replay here with a nondeterminism error, which is what
a worker upgraded under running clusters would meet. Each directory of ``tests/histories/`` is
named after the commit that recorded it (``record_scenarios.py`` there says how): a cluster that
ran jobs (two nodes, a two-node job, a cancel, a failure, stop, start, down) and one that
autostopped, started again and autostopped with ``--down``. ``child_jobs/``: a 2-node cluster
from just before jobs ran inside it (``styx-inline-jobs``), whose jobs were child
``JobWorkflow``s — one with setup that succeeded, one whose rank 1 failed, one cancelled while
it ran — then taken down, and the three jobs' own histories. ``inline_jobs/``: the two first
scenarios once jobs ran inside their cluster's workflow.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from styx.workflows.cluster import ClusterWorkflow
from styx.workflows.job import JobWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json.gz"))


def test_there_are_histories_of_both_workflows_from_more_than_one_commit() -> None:
    assert {h.parent.name for h in HISTORIES} >= {"a11c7e8", "dbd2369", "child_jobs", "inline_jobs"}
    kinds = {"job" if "_job_" in h.name else "cluster" for h in HISTORIES}
    assert kinds == {"cluster", "job"}


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{h.parent.name}/{h.name.removesuffix('.json.gz')}"
                                                 for h in HISTORIES])
async def test_a_recorded_run_replays_unchanged(path: Path) -> None:
    history = WorkflowHistory.from_json(path.name.removesuffix(".json.gz"), gzip.decompress(path.read_bytes()).decode())
    replayer = Replayer(workflows=[ClusterWorkflow, JobWorkflow], workflow_runner=SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.parent.name}/{path.name}: {result.replay_failure}"

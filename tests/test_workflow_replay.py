"""Histories recorded by earlier versions replay on today's workflows (``workflow.patched``).

``histories/child_jobs/``: a 2-node cluster from before ``INLINE_JOBS_PATCH``, whose jobs ran
as child ``JobWorkflow``s — one with setup that succeeded, one whose rank 1 failed, one
cancelled while it ran — then taken down; and the three jobs' own histories. Recorded with
the fake activities of ``test_cluster_workflow.py`` on the code of that time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from styx.workflows.cluster import ClusterWorkflow
from styx.workflows.job import JobWorkflow

HISTORIES = Path(__file__).parent / "histories"


def _histories(folder: str) -> list[WorkflowHistory]:
    return [WorkflowHistory.from_json(path.stem.replace("_", "/"), path.read_text())
            for path in sorted((HISTORIES / folder).glob("*.json"))]


@pytest.mark.parametrize("history", _histories("child_jobs"), ids=lambda h: h.workflow_id)
async def test_a_cluster_whose_jobs_ran_as_child_workflows_replays_unchanged(history: WorkflowHistory) -> None:
    replayer = Replayer(workflows=[ClusterWorkflow, JobWorkflow], workflow_runner=SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure

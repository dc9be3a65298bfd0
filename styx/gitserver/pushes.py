"""After a push: start one PushWorkflow per new commit that has a ``.styx.yaml``, and tell
the pusher (on the sideband) which jobs it queued.

The workflow id is ``push/<owner>/<repo>/<sha>``, started with ``REJECT_DUPLICATE`` reuse
and ``USE_EXISTING`` conflict policies: pushing the same commit again (to another branch,
or after a delete) attaches to the run in flight or reports the finished one, and never
runs it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from styx.config import Settings
from styx.db import Database
from styx.gitserver.config import GitServerConfig
from styx.gitserver.hooks import Update
from styx.gitserver.names import ZERO_SHA, RepoName
from styx.gitserver.storage import RepoStore
from styx.gitserver.triggers import CONFIG_FILE
from styx.contracts.pushes import (
    PUSH_SUBMITTED_UPDATE,
    PUSH_WORKFLOW,
    PushInput,
    PushRunStatus,
    PushSummary,
    git_task_queue,
    push_workflow_id,
)
from styx.contracts.search import REPO_KEY
from styx.temporal import TemporalUnavailable, connect

log = logging.getLogger("styx.gitserver.pushes")

Emit = Callable[[str], Awaitable[None]]


def summary_lines(settings: Settings, owner: str, repo: str, summary: PushSummary) -> list[str]:
    """What the pusher reads (each line is printed as ``remote: styx: ...``)."""
    short = summary.sha[:10]
    if summary.status == "SKIPPED":
        return [f"{short}: nothing to run ({summary.message})"]
    lines = []
    if summary.status == PushRunStatus.FAILED and not summary.jobs:
        lines.append(f"{short}: run failed: {summary.message}")
    for job in summary.jobs:
        if job.managed_id:
            url = settings.workflow_url(job.workflow_id) or f"styx jobs logs {job.managed_id}"
            lines.append(f"managed job {job.managed_id} started — {url} ({job.name})")
        elif job.job_id:
            url = settings.workflow_url(job.workflow_id) or f"styx logs {job.cluster} {job.job_id}"
            where = f"a fresh cluster {job.cluster}" if job.managed else f"cluster {job.cluster}"
            lines.append(f"job {job.job_id} queued on {where} — {url} ({job.name})")
        else:
            lines.append(f"job {job.name} not queued: {job.message}")
    lines.append(f"status: styx repo runs {owner}/{repo}  ({summary.workflow_id})")
    return lines


class PushStarter:
    def __init__(self, settings: Settings, config: GitServerConfig, store: RepoStore, db: Database,
                 client: Client | None = None) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.db = db
        self._client = client
        self._lock = asyncio.Lock()

    async def temporal(self) -> Client:
        async with self._lock:
            if self._client is None:
                self._client = await connect(self.settings, wait_seconds=2)
            return self._client

    async def close(self) -> None:
        self._client = None

    async def on_push(self, repo: RepoName, repo_id: int, pusher: str, updates: list[Update], emit: Emit) -> bool:
        """Start the run of every new commit that has a ``.styx.yaml``; False if one could not
        be started now (Temporal unreachable): the push's intents are then kept for the sweeper."""
        seen: set[str] = set()
        started = True
        for old, new, ref in updates:
            if new == ZERO_SHA or not ref.startswith(("refs/heads/", "refs/tags/")):
                continue
            sha = await asyncio.to_thread(self.store.resolve, repo, new)  # a tag: its commit
            if sha is None or sha in seen:
                continue
            seen.add(sha)
            if await asyncio.to_thread(self.store.read_file, repo, sha, CONFIG_FILE) is None:
                continue
            started &= await self._start(repo, PushInput(
                owner=repo.owner, repo=repo.name, repo_id=repo_id, sha=sha, ref=ref, before=old, pusher=pusher,
                git_task_queue=git_task_queue(self.settings.task_queue)), emit)
        return started

    async def _start(self, repo: RepoName, inp: PushInput, emit: Emit) -> bool:
        """Start the run (or find it started already) and report it; False if it could not start."""
        wid = push_workflow_id(inp.owner, inp.repo, inp.sha)
        try:
            client = await self.temporal()
        except TemporalUnavailable as err:
            await emit(f"styx: {inp.sha[:10]}: cannot start its run now ({err}); it starts when Temporal is back")
            return False
        try:
            await client.start_workflow(
                PUSH_WORKFLOW, inp, id=wid, task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes([SearchAttributePair(REPO_KEY, str(repo))]))
        except WorkflowAlreadyStartedError:
            await emit(f"styx: {inp.sha[:10]} already ran ({wid}); see `styx repo runs {repo}`")
            return True
        except RPCError as err:
            await emit(f"styx: {inp.sha[:10]}: could not start its run now ({err.message}); "
                       "it starts when Temporal is back")
            return False
        try:
            summary = await asyncio.wait_for(self._summary(client, wid), self.config.push_report_seconds)
        except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # The update cut off by the wait (or by the server's own poll timeout) says so with
            # its own error, not TimeoutError: either way the run started and is not summed up yet.
            await emit(f"styx: {inp.sha[:10]}: run {wid} started; no worker has picked it up yet "
                       f"(see `styx repo runs {repo}`)")
            return True
        for line in summary_lines(self.settings, inp.owner, inp.repo, summary):
            await emit(f"styx: {line}")
        return True

    async def _summary(self, client: Client, wid: str) -> PushSummary:
        handle = client.get_workflow_handle(wid, result_type=PushSummary)
        try:
            return await handle.execute_update(PUSH_SUBMITTED_UPDATE, result_type=PushSummary)
        except (WorkflowUpdateFailedError, RPCError):
            # The run finished before the update reached it (nothing to run): its result says.
            return await handle.result()

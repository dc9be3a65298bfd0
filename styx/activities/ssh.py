"""Job execution on nodes over SSH: the same code for local nodes, AWS instances and SSH hosts.

``run_phase`` starts a job phase detached on the node (idempotently: a retried activity
re-attaches to the process an earlier attempt started) and copies its log to the Styx side,
heartbeating the offset, until the phase exits. ``sync_files`` copies a job's workdir and
file mounts to a node: uploads (``upload:<sha256>``, fetched from the database through
``styx.activities.uploads``) or files of a commit this worker exported for a push.

A node that does not answer (refused, reset, timed out) makes either activity fail with the
non-retryable ``NodeUnreachable`` type carrying the worker's ``STYX_NODE_LOST_SECONDS``: the
job workflow retries it on its own clock and gives the node up after that long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx import joblogs
from styx.config import Settings
from styx.contracts.jobs import JobErrors, JobStatus, KillJobInput, RunPhaseInput, RunPhaseOutput, SyncFilesInput
from styx.contracts.uploads import InvalidUploadRef, UploadRef
from styx.activities.heartbeat import heartbeating
from styx.activities.uploads import UploadCache, UploadUnusable
from styx.db import Database
from styx.secrets import unseal
from styx.ssh import (
    CommandTimeout,
    JobCancelled,
    NodeEndpoint,
    NodeUnreachable,
    SshPool,
    kill_phase,
    phase_state,
    read_log,
    start_phase,
    upload_dir,
    upload_file,
)

LOG_CHUNK = 1 << 20
POLL_MIN, POLL_MAX = 0.01, 0.5

#: What a node that does not answer looks like (as opposed to one that answers "no").
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    NodeUnreachable, CommandTimeout, ConnectionError, asyncssh.ConnectionLost, asyncssh.SFTPConnectionLost,
)


class SshActivities:
    """``uploads`` is where ``sync_files`` gets uploads; ``local_roots`` the only directories it
    copies local files from (the trees exported for pushes, ``STYX_HOME/git-runs``);
    ``node_lost_seconds`` how long the job workflow lets a node stay unreachable."""

    def __init__(self, home: Path, pool: SshPool, db: Database, uploads: UploadCache | None = None,
                 local_roots: Sequence[Path] = (), node_lost_seconds: int = Settings.node_lost_seconds) -> None:
        self.home = home
        self.pool = pool
        self.db = db
        self.uploads = uploads or UploadCache(home / "uploads", db, Settings.max_unpacked_bytes)
        self.local_roots = tuple(local_roots)
        self.node_lost_seconds = node_lost_seconds

    def _unreachable(self, what: str, node: NodeEndpoint, err: BaseException) -> ApplicationError:
        """The error a job workflow reads as "node did not answer; retry until it is lost"."""
        self.pool.discard(node)  # the next attempt connects afresh
        return ApplicationError(
            f"{what}: {node.host}:{node.port} does not answer: {str(err) or type(err).__name__}",
            self.node_lost_seconds, type=JobErrors.NODE_UNREACHABLE, non_retryable=True,
        )

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: RunPhaseInput) -> RunPhaseOutput:
        node = NodeEndpoint.from_dict(inp.node)
        try:
            return await self._run_phase(inp, node)
        except UNREACHABLE_ERRORS as err:
            raise self._unreachable(f"{inp.phase} of job {inp.job_id}", node, err) from None

    async def _run_phase(self, inp: RunPhaseInput, node: NodeEndpoint) -> RunPhaseOutput:
        job_id = str(inp.job_id)
        conn = await self.pool.get(node)
        try:
            # Secrets go apart from the env: they must not stay in the node's wrapper script.
            await start_phase(conn, job_id, inp.phase, inp.script, inp.env,
                              secrets=unseal(self.home, inp.sealed_secrets))
            if inp.phase == "run" and inp.rank == 0:
                # Recorded here, once the job really started, rather than by the workflow:
                # that saves the job a workflow task. The upsert is idempotent.
                await asyncio.to_thread(self.db.clusters.upsert_job, inp.cluster, inp.job_id, status=JobStatus.RUNNING)
        except JobCancelled:
            raise ApplicationError(f"job {inp.job_id} was cancelled", type="JobCancelled",
                                   non_retryable=True) from None
        path = joblogs.phase_log(self.home, inp.cluster, inp.job_id, inp.phase, inp.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        sftp: asyncssh.SFTPClient | None = None  # opened on the first output: `true` needs none
        # The local copy is the offset: what an earlier attempt copied is never copied again.
        try:
            with open(path, "ab") as out:
                offset = out.tell()
                delay = POLL_MIN
                while True:
                    # State first: for a job that already ended, one call says so and sizes its log.
                    state = await phase_state(conn, job_id, inp.phase)
                    while offset < state.log_size:
                        sftp = sftp or await conn.start_sftp_client()
                        chunk = await read_log(sftp, job_id, inp.phase, offset, LOG_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        out.flush()
                        offset += len(chunk)
                        activity.heartbeat(offset)
                        delay = POLL_MIN
                    if not state.running:
                        break
                    activity.heartbeat(offset)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, POLL_MAX)
        finally:
            if sftp is not None:
                sftp.exit()
        if state.exit_code is None:
            raise ApplicationError(
                f"{inp.phase} of job {inp.job_id} on node {inp.rank} ({node.host}:{node.port}) "
                "died without an exit code (node stopped or process killed)",
                type="JobLost", non_retryable=True,
            )
        if inp.record_end and not state.cancelled and state.exit_code == 0:
            # A one-node job ends with its run phase: say so now rather than a workflow task
            # later (the workflow records the same; the first terminal status wins). A failure
            # is left to the workflow, which records it with its message; so is a phase ended
            # by a cancel (CANCELLED).
            await asyncio.to_thread(self.db.clusters.upsert_job, inp.cluster, inp.job_id,
                                    status=JobStatus.SUCCEEDED, exit_codes=[state.exit_code])
        return RunPhaseOutput(exit_code=state.exit_code, log_bytes=offset)

    @activity.defn(name="kill_job")
    async def kill_job(self, inp: KillJobInput) -> None:
        async def kill(node_dict: dict) -> None:
            conn = await self.pool.get(NodeEndpoint.from_dict(node_dict))
            await kill_phase(conn, str(inp.job_id))

        await asyncio.gather(*(kill(n) for n in inp.nodes))

    @activity.defn(name="sync_files")
    async def sync_files(self, inp: SyncFilesInput) -> None:
        async with heartbeating():
            try:
                await self._sync_files(inp)
            except UNREACHABLE_ERRORS as err:
                node = NodeEndpoint.from_dict(inp.node)
                raise self._unreachable(f"copying files of job {inp.job_id}", node, err) from None

    async def _sync_files(self, inp: SyncFilesInput) -> None:
        conn = await self.pool.get(NodeEndpoint.from_dict(inp.node))
        if inp.workdir:
            src = await self._source("workdir", inp.workdir)
            if not src.is_dir():
                raise ApplicationError(f"workdir: {inp.workdir!r} is not a directory", type="InvalidTask",
                                       non_retryable=True)
            await upload_dir(conn, src, f"styx_workdir/{inp.job_id}")
        for remote, source in inp.file_mounts.items():
            src = await self._source(f"file_mounts.{remote}", source)
            if src.is_dir():
                await upload_dir(conn, src, remote)
            else:
                await upload_file(conn, src, remote)

    async def _source(self, field: str, source: str) -> Path:
        """Where on this worker the files ``source`` names are: an upload, fetched from the
        database; or a tree this worker exported for a push. Never another path: the worker
        never reads a path a client named."""
        try:
            ref = UploadRef.parse(source)
        except InvalidUploadRef as err:
            raise ApplicationError(f"{field}: {err}", type="InvalidTask", non_retryable=True) from None
        if ref is not None:
            try:
                return await asyncio.to_thread(self.uploads.path, ref)
            except UploadUnusable as err:
                raise ApplicationError(f"{field}: {err}", type="InvalidTask", non_retryable=True) from None
        path = Path(source)
        resolved = path.resolve()
        if not path.is_absolute() or not any(resolved.is_relative_to(root.resolve()) for root in self.local_roots):
            raise ApplicationError(f"{field}: {source[:200]!r} is neither an upload nor a file of a pushed "
                                   "commit; the worker reads no other path", type="InvalidTask",
                                   non_retryable=True)
        if not resolved.exists():
            raise ApplicationError(f"{field}: {source!r} does not exist", type="InvalidTask", non_retryable=True)
        return resolved

"""Job execution on nodes over SSH: the same code for local nodes, AWS instances and SSH hosts.

``run_phase`` starts a job phase detached on the node (idempotently: a retried activity
re-attaches to the process an earlier attempt started) and copies its log to the Styx side,
heartbeating the offset, until the phase exits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx import joblogs
from styx.contracts.jobs import JobStatus, KillJobInput, RunPhaseInput, RunPhaseOutput, SyncFilesInput
from styx.activities.heartbeat import heartbeating
from styx.db import Database
from styx.secrets import unseal
from styx.ssh import (
    JobCancelled,
    NodeEndpoint,
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


class SshActivities:
    def __init__(self, home: Path, pool: SshPool, db: Database) -> None:
        self.home = home
        self.pool = pool
        self.db = db

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: RunPhaseInput) -> RunPhaseOutput:
        node = NodeEndpoint.from_dict(inp.node)
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
        if inp.record_end and not state.cancelled:
            # A one-node job ends with its run phase: say so now rather than a workflow task
            # later (the workflow records the same; the first terminal status wins). A phase
            # ended by a cancel is left to the workflow, which records CANCELLED.
            status = JobStatus.SUCCEEDED if state.exit_code == 0 else JobStatus.FAILED
            await asyncio.to_thread(self.db.clusters.upsert_job, inp.cluster, inp.job_id, status=status,
                                    exit_codes=[state.exit_code])
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
            await self._sync_files(inp)

    async def _sync_files(self, inp: SyncFilesInput) -> None:
        conn = await self.pool.get(NodeEndpoint.from_dict(inp.node))
        if inp.workdir:
            src = Path(inp.workdir).expanduser()
            if not src.is_dir():
                raise ApplicationError(f"workdir {inp.workdir!r} is not a directory on the worker",
                                       type="InvalidTask", non_retryable=True)
            await upload_dir(conn, src, f"styx_workdir/{inp.job_id}")
        for remote, local in inp.file_mounts.items():
            src = Path(local).expanduser()
            if src.is_dir():
                await upload_dir(conn, src, remote)
            elif src.is_file():
                await upload_file(conn, src, remote)
            else:
                raise ApplicationError(f"file_mounts[{remote!r}]: {local!r} does not exist on the worker",
                                       type="InvalidTask", non_retryable=True)

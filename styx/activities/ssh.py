"""Job execution on nodes over SSH: the same code for local nodes, AWS instances and SSH hosts.

``run_phase`` starts a job phase detached on the node (idempotently: a retried activity
re-attaches to the process an earlier attempt started) and copies its log to the Styx side,
heartbeating the offset, until the phase exits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx import joblogs
from styx.activities import types as t
from styx.activities.heartbeat import heartbeating
from styx.secrets import unseal
from styx.sshexec import (
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
    def __init__(self, home: Path, pool: SshPool) -> None:
        self.home = home
        self.pool = pool

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: t.RunPhaseInput) -> t.RunPhaseOutput:
        node = NodeEndpoint.from_dict(inp.node)
        job_id = str(inp.job_id)
        conn = await self.pool.get(node)
        try:
            env = {**inp.env, **unseal(self.home, inp.sealed_secrets)}
            await start_phase(conn, job_id, inp.phase, inp.script, env)
        except JobCancelled:
            raise ApplicationError(f"job {inp.job_id} was cancelled", type="JobCancelled",
                                   non_retryable=True) from None
        path = joblogs.phase_log(self.home, inp.cluster, inp.job_id, inp.phase, inp.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        sftp = await conn.start_sftp_client()
        try:
            return await self._copy_until_exit(conn, sftp, inp, node, path)
        finally:
            sftp.exit()

    async def _copy_until_exit(self, conn, sftp, inp: t.RunPhaseInput, node: NodeEndpoint,
                               path: Path) -> t.RunPhaseOutput:
        job_id = str(inp.job_id)
        # The local copy is the offset: what an earlier attempt copied is never copied again.
        with open(path, "ab") as out:
            offset = out.tell()
            delay = POLL_MIN
            while True:
                # State first: for a job that already ended, one call says so and sizes its log.
                state = await phase_state(conn, job_id, inp.phase)
                while offset < state.log_size:
                    chunk = await read_log(sftp, job_id, inp.phase, offset, LOG_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    out.flush()
                    offset += len(chunk)
                    activity.heartbeat(offset)
                    delay = POLL_MIN
                if not state.running:
                    if state.exit_code is None:
                        raise ApplicationError(
                            f"{inp.phase} of job {inp.job_id} on node {inp.rank} ({node.host}:{node.port}) "
                            "died without an exit code (node stopped or process killed)",
                            type="JobLost", non_retryable=True,
                        )
                    return t.RunPhaseOutput(exit_code=state.exit_code, log_bytes=offset)
                activity.heartbeat(offset)
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)

    @activity.defn(name="kill_job")
    async def kill_job(self, inp: t.KillJobInput) -> None:
        async def kill(node_dict: dict) -> None:
            conn = await self.pool.get(NodeEndpoint.from_dict(node_dict))
            await kill_phase(conn, str(inp.job_id))

        await asyncio.gather(*(kill(n) for n in inp.nodes))

    @activity.defn(name="sync_files")
    async def sync_files(self, inp: t.SyncFilesInput) -> None:
        async with heartbeating():
            await self._sync_files(inp)

    async def _sync_files(self, inp: t.SyncFilesInput) -> None:
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

"""Job execution on nodes over SSH: the same code for local nodes, AWS instances and SSH hosts.

``run_phase`` starts a job phase detached on the node (idempotently: a retried activity
re-attaches to the process an earlier attempt started) and copies its log into the database
(``db.joblogs``, rows of at most 256 KB) until the phase exits, resuming from what the
database holds, so a retry on another worker host neither loses nor repeats a byte.
``sync_files`` copies a job's workdir and file mounts to a node: uploads (``upload:<sha256>``,
fetched from the database through
``styx.activities.uploads``; a pushed commit's tree is one too), never a path on the worker;
a git workdir is cloned by the node itself. The workdir lands in ``~/styx_workdir/<job_id>`` and
``~/sky_workdir`` is pointed at it (see ``styx.ssh.nodefiles``); a mount to an absolute path
is copied under ``~/.styx/file_mounts`` and linked from the path (refused on local nodes).

A node that does not answer (refused, reset, timed out) makes either activity fail with the
non-retryable ``NodeUnreachable`` type carrying the worker's ``STYX_NODE_LOST_SECONDS``: the
job workflow retries it on its own clock and gives the node up after that long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncssh

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx.config import Settings
from styx.contracts.jobs import (
    JobErrors,
    JobSpec,
    JobStatus,
    KillJobInput,
    RunPhaseInput,
    RunPhaseOutput,
    SyncFilesInput,
)
from styx.contracts.uploads import InvalidUploadRef, UploadRef
from styx.activities.heartbeat import heartbeating
from styx.activities.uploads import UploadCache, UploadUnusable
from styx.db import Database, LogMoved
from styx.db.joblogs import MAX_CHUNK_BYTES
from styx.secrets import unseal
from styx.ssh import (
    CommandTimeout,
    FILE_MOUNTS_ROOT,
    WORKDIR_ROOT,
    GitCloneFailed,
    GitMissing,
    JobCancelled,
    MountRefused,
    NodeEndpoint,
    NodeUnreachable,
    PhaseStartFailed,
    SshPool,
    git_clone,
    kill_phase,
    link_absolute_mount,
    phase_state,
    point_sky_workdir,
    read_log,
    start_phase,
    upload_dir,
    upload_file,
)

#: Read from a node and stored in one database row at most (bounds the worker's memory too).
LOG_CHUNK = MAX_CHUNK_BYTES
#: How often a trickle of output is stored (and so how far behind ``logs --follow`` may be).
STORE_EVERY = 0.5
#: Why a local node refuses a mount to an absolute path.
LOCAL_ABSOLUTE_MOUNT = ("local nodes keep a job's files under the node's home (their SFTP is confined "
                        "there); mount under ~ instead (e.g. ~/checkpoint)")
POLL_MIN, POLL_MAX = 0.01, 0.5
#: After a cancel, the last copy of a phase's log: at most this many bytes, in this long.
DRAIN_MAX_BYTES, DRAIN_SECONDS = 64 * LOG_CHUNK, 20.0

#: What a node that does not answer looks like (as opposed to one that answers "no").
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    NodeUnreachable, CommandTimeout, ConnectionError, asyncssh.ConnectionLost, asyncssh.SFTPConnectionLost,
)


def _invalid(message: str) -> ApplicationError:
    """A task the node cannot honour: retrying does not help."""
    return ApplicationError(message, type="InvalidTask", non_retryable=True)


class SshActivities:
    """``uploads`` is where ``sync_files`` gets uploads: the only files it copies;
    ``node_lost_seconds`` how long the job workflow lets a node stay unreachable."""

    def __init__(self, home: Path, pool: SshPool, db: Database, uploads: UploadCache | None = None,
                 node_lost_seconds: int = Settings.node_lost_seconds) -> None:
        self.home = home
        self.pool = pool
        self.db = db
        self.uploads = uploads or UploadCache(home / "uploads", db, Settings.max_unpacked_bytes)
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

    async def _spec(self, spec_id: str) -> JobSpec:
        spec = await asyncio.to_thread(self.db.jobspecs.get, spec_id)
        if spec is None:
            raise ApplicationError(f"the job's task (spec {spec_id}) is no longer stored",
                                   type="SpecMissing", non_retryable=True)
        return spec

    async def _run_phase(self, inp: RunPhaseInput, node: NodeEndpoint) -> RunPhaseOutput:
        job_id = str(inp.job_id)
        if inp.spec_id is not None:  # a job run inline: its body is loaded here, not in the workflow
            spec = await self._spec(inp.spec_id)
            inp = dataclasses.replace(inp, script=spec.task.get(inp.phase) or ("true" if inp.phase == "run" else ""),
                                      env={**inp.env, **spec.env}, sealed_secrets=spec.sealed_secrets)
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
        except PhaseStartFailed as err:
            if not err.abandoned:
                raise  # a start may still be under way: try again
            raise ApplicationError(
                f"{inp.phase} of job {inp.job_id} on node {inp.rank} ({node.host}:{node.port}) never started: "
                "the node died while starting it", type=JobErrors.JOB_LOST, non_retryable=True) from None
        store = self.db.joblogs
        key = (inp.cluster, inp.job_id, inp.phase, inp.rank)
        # What the database holds is the offset, on whichever worker this attempt runs: what
        # an earlier attempt stored is never copied again, and what it did not store is.
        offset = await asyncio.to_thread(store.size, *key)
        pending = bytearray()  # read from the node, not yet stored: at most LOG_CHUNK bytes
        last_store = time.monotonic()

        async def store_pending() -> None:
            nonlocal offset, last_store
            try:
                offset = await asyncio.to_thread(store.append, *key, offset, bytes(pending))
            except LogMoved as moved:
                # Another attempt of this phase stored these bytes (or more) first; the node's
                # log only grows, so continue after what it stored.
                offset = moved.size
            pending.clear()
            last_store = time.monotonic()
            activity.heartbeat(offset)

        sftp: asyncssh.SFTPClient | None = None  # opened on the first output: `true` needs none

        async def drain() -> None:
            """Store what the node's log holds now (bounded): the job's output up to its
            cancel — all of it when it had ended by itself as the cancel came — stays the
            user's."""
            if pending:
                await store_pending()
            await self._store_rest(conn, inp.cluster, inp.job_id, inp.phase, inp.rank)

        try:
            delay = POLL_MIN
            while True:
                # State first: for a job that already ended, one call says so and sizes its log.
                state = await phase_state(conn, job_id, inp.phase)
                while offset + len(pending) < state.log_size:
                    sftp = sftp or await conn.start_sftp_client()
                    chunk = await read_log(sftp, job_id, inp.phase, offset + len(pending),
                                           LOG_CHUNK - len(pending))
                    if not chunk:
                        break
                    pending += chunk
                    delay = POLL_MIN
                    if len(pending) >= LOG_CHUNK:
                        await store_pending()
                # A trickle of output is stored every STORE_EVERY seconds, not on every poll:
                # fewer, larger rows; the phase's end stores the rest at once.
                if pending and (not state.running or time.monotonic() - last_store >= STORE_EVERY):
                    await store_pending()
                if not state.running:
                    break
                activity.heartbeat(offset)
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
        except asyncio.CancelledError:
            # The job is being cancelled (or this worker stops): one last, bounded copy, then
            # go. What it stores is never stored twice (the database's size is the offset), so
            # a retry elsewhere goes on from there.
            try:
                await asyncio.wait_for(drain(), DRAIN_SECONDS)
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - best effort, the cancel wins
                pass
            raise
        finally:
            if sftp is not None:
                sftp.exit()
        if state.exit_code is None:
            raise ApplicationError(
                f"{inp.phase} of job {inp.job_id} on node {inp.rank} ({node.host}:{node.port}) "
                "died without an exit code (node stopped or process killed)",
                type="JobLost", non_retryable=True,
            )
        recorded = inp.record_end and not state.cancelled and state.exit_code == 0
        if recorded:
            # A one-node job ends with its run phase: say so now rather than a workflow task
            # later (the first terminal status wins; a job run inline then writes nothing more).
            # A failure is left to the workflow, which records it with its message; so is a
            # phase ended by a cancel (CANCELLED).
            await asyncio.to_thread(self.db.clusters.upsert_job, inp.cluster, inp.job_id,
                                    status=JobStatus.SUCCEEDED, exit_codes=[state.exit_code])
        return RunPhaseOutput(exit_code=state.exit_code, log_bytes=offset, recorded_end=recorded)

    @activity.defn(name="kill_job")
    async def kill_job(self, inp: KillJobInput) -> None:
        async def kill(node_dict: dict, rank: int | None) -> None:
            conn = await self.pool.get(NodeEndpoint.from_dict(node_dict))
            await kill_phase(conn, str(inp.job_id))
            if rank is None:
                return
            # What the job printed between its run activity's last copy and its death: the
            # log stays whole (bounded, best effort: the kill is what must not fail).
            for phase in ("setup", "run"):
                try:
                    await asyncio.wait_for(self._store_rest(conn, inp.cluster, inp.job_id, phase, rank), DRAIN_SECONDS)
                except Exception as err:  # noqa: BLE001
                    activity.logger.warning("job %s rank %s: the end of its %s log was not stored: %s",
                                            inp.job_id, rank, phase, err)

        ranks = inp.ranks if inp.ranks is not None and len(inp.ranks) == len(inp.nodes) else [None] * len(inp.nodes)
        await asyncio.gather(*(kill(n, r) for n, r in zip(inp.nodes, ranks)))

    async def _store_rest(self, conn: asyncssh.SSHClientConnection, cluster: str, job_id: int, phase: str,
                          rank: int) -> None:
        """Store what a phase's log on the node holds past the database's copy (at most
        ``DRAIN_MAX_BYTES``); the database's size is the offset, so nothing is stored twice."""
        store, key = self.db.joblogs, (cluster, job_id, phase, rank)
        state = await phase_state(conn, str(job_id), phase)
        offset = await asyncio.to_thread(store.size, *key)
        if offset >= state.log_size:
            return
        async with conn.start_sftp_client() as sftp:
            budget = DRAIN_MAX_BYTES
            while offset < state.log_size and budget > 0:
                chunk = await read_log(sftp, str(job_id), phase, offset, LOG_CHUNK)
                if not chunk:
                    return
                try:
                    offset = await asyncio.to_thread(store.append, *key, offset, chunk)
                except LogMoved as moved:
                    offset = moved.size
                budget -= len(chunk)

    @activity.defn(name="sync_files")
    async def sync_files(self, inp: SyncFilesInput) -> None:
        async with heartbeating():
            try:
                await self._sync_files(inp)
            except UNREACHABLE_ERRORS as err:
                node = NodeEndpoint.from_dict(inp.node)
                raise self._unreachable(f"copying files of job {inp.job_id}", node, err) from None

    async def _sync_files(self, inp: SyncFilesInput) -> None:
        if inp.spec_id is not None:  # a job run inline: its body is loaded here, not in the workflow
            task = (await self._spec(inp.spec_id)).task
            inp = dataclasses.replace(inp, workdir=task.get("workdir"), file_mounts={
                k: v for k, v in (task.get("file_mounts") or {}).items() if isinstance(v, str)})
        node = NodeEndpoint.from_dict(inp.node)
        conn = await self.pool.get(node)
        if inp.workdir:
            # Each job its own copy (jobs of a cluster run at once); ~/sky_workdir names the last.
            target = f"{WORKDIR_ROOT}/{inp.job_id}"
            if isinstance(inp.workdir, dict):
                await self._clone(conn, node, inp.workdir, target)
            else:
                src = await self._source("workdir", inp.workdir)
                if not src.is_dir():
                    raise _invalid(f"workdir: {inp.workdir!r} is not a directory")
                await upload_dir(conn, src, target)
            await point_sky_workdir(conn, target)
        local = None
        for remote, source in inp.file_mounts.items():
            src = await self._source(f"file_mounts.{remote}", source)
            absolute = remote.startswith("/")
            if absolute:
                if local is None:
                    row = await asyncio.to_thread(self.db.clusters.get, inp.cluster)
                    local = row is not None and row.provider == "local"
                if local:  # its SFTP is confined to the node's home: refuse, never misplace
                    raise _invalid(f"file_mounts.{remote}: {LOCAL_ABSOLUTE_MOUNT}")
            # An absolute destination: copied into the home, and linked from the path (as SkyPilot).
            target = f"{FILE_MOUNTS_ROOT}/{remote.lstrip('/')}" if absolute else remote
            if src.is_dir():
                await upload_dir(conn, src, target)
            else:
                await upload_file(conn, src, target)
            if absolute:
                try:
                    await link_absolute_mount(conn, remote, target)
                except MountRefused as err:
                    raise _invalid(f"file_mounts.{remote}: on node {node.rank} ({node.host}): {err}") from None

    @staticmethod
    async def _clone(conn: asyncssh.SSHClientConnection, node: NodeEndpoint, workdir: dict, target: str) -> None:
        url, ref = workdir.get("url"), workdir.get("ref")
        if not isinstance(url, str) or not url or url.startswith("-") or (ref is not None and (
                not isinstance(ref, str) or ref.startswith("-"))):
            raise _invalid(f"workdir: not a git repository {{url, ref}}: {workdir!r}")
        try:
            await git_clone(conn, url, ref, target)
        except GitMissing:
            raise _invalid(f"workdir.url: node {node.rank} ({node.host}) has no git to clone {url}; "
                           "install git on the nodes (in the image) or send a local workdir") from None
        except GitCloneFailed as err:
            raise _invalid(f"workdir: {err}") from None

    async def _source(self, field: str, source: str) -> Path:
        """Where on this worker the files ``source`` names are: an upload, fetched from the
        database (cached in ``STYX_HOME/uploads``). Never another path: the worker never reads
        a path a client named, and keeps nothing another worker host would need."""
        try:
            ref = UploadRef.parse(source)
        except InvalidUploadRef as err:
            raise ApplicationError(f"{field}: {err}", type="InvalidTask", non_retryable=True) from None
        if ref is None:
            raise ApplicationError(f"{field}: {source[:200]!r} is not an upload (upload:<sha256>); the worker "
                                   "reads no path", type="InvalidTask", non_retryable=True)
        try:
            return await asyncio.to_thread(self.uploads.path, ref)
        except UploadUnusable as err:
            raise ApplicationError(f"{field}: {err}", type="InvalidTask", non_retryable=True) from None

"""Activities of PushWorkflow: plan (record, read ``.styx.yaml``, export the tree), queue,
wait, tear down, record.

Built once in a process as ``GitActivities(settings)``. ``push_plan`` and ``push_submit``
(``repo_activities()``) read the repositories in ``STYX_HOME/git``, so the git server, which
keeps them, runs them on its own task queue (``styx.workers.gitqueue``); the others
(``all()``) run on any worker. The commit's tree is exported to ``STYX_HOME/git-runs/<sha>``
on the git server's host (where its paths are checked) and stored as an upload, in the
database, which any worker syncs to the nodes as it does a client's files.
Every submission carries a key derived from the push (a Temporal update id, or a managed
job's idempotency key), so a retried ``push_submit`` never queues a job twice. Jobs run as
the pusher: on a named cluster only if the pusher may use it (``styx.services.access``;
otherwise the job fails as if the cluster did not exist); a ``managed`` job is a managed job
of the pusher's, submitted through ``styx.services.managed`` as ``styx jobs launch`` submits
one (its checks, the pusher's limits: a refusal fails the job naming the field or the limit),
and ``push_wait_managed`` follows it to its end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from styx.activities.heartbeat import heartbeating
from styx.archives import pack_tree
from styx.config import Settings
from styx.contracts.clusters import CLUSTER_GONE, ClusterDescription, cluster_workflow_id
from styx.contracts.jobs import JobStatus
from styx.contracts.managed import ManagedJobStatus
from styx.contracts.payloads import PayloadTooLarge
from styx.contracts.pushes import (
    DownClusterInput,
    ExportInput,
    PushInput,
    PushJobPlan,
    PushJobRef,
    PushPlan,
    PushRecord,
    PushRunStatus,
    SubmitPushJobInput,
    WaitJobInput,
    WaitJobResult,
    WaitManagedInput,
)
from styx.contracts.uploads import UPLOAD_CHUNK_BYTES, UPLOAD_SCHEME
from styx.db import Database, UploadQuotaFull
from styx.gitserver.config import GitServerConfig
from styx.gitserver.names import InvalidName, RepoName, is_sha
from styx.gitserver.storage import RepoStore
from styx.gitserver.triggers import CONFIG_FILE, ConfigError, load_config, select_jobs, skips_ci
from styx.services import clusters as service
from styx.services import managed as managed_service
from styx.services import policy, quotas
from styx.services.access import ClusterAccess, resolve_cluster_access
from styx.services.launch import InvalidRequest, check_for_provider, load_task, submit_input
from styx.task import Task

def managed_push_key(submission_key: str) -> str:
    """The managed job's idempotency key for one submission of a push (``push/<owner>/<repo>/
    <sha>/<index>``, longer than a key may be): a digest of it."""
    return "push:" + hashlib.sha256(submission_key.encode()).hexdigest()[:40]


class GitActivities:
    def __init__(self, settings: Settings, db: Database | None = None, client: Client | None = None) -> None:
        self.settings = settings
        self.config = GitServerConfig.from_settings(settings)
        self.db = db or Database(settings.db_url)
        self.store = RepoStore(self.config.repo_root, git=self.config.git,
                               max_push_bytes=self.config.max_push_bytes,
                               git_home=self.config.state_dir / "home")
        self._client = client
        self._lock = asyncio.Lock()

    def all(self) -> list[Any]:
        """What any worker runs (with ``repo_activities()`` too, for push runs started
        before the git server had a queue of its own: on a single host they still work)."""
        return [*self.repo_activities(), self.push_wait_job, self.push_wait_managed, self.push_down_cluster,
                self.push_record]

    def repo_activities(self) -> list[Any]:
        """The activities that read the repositories: the git server's task queue."""
        return [self.push_plan, self.push_submit]

    async def _temporal(self) -> Client:
        from styx.temporal import connect

        async with self._lock:
            if self._client is None:
                self._client = await connect(self.settings, wait_seconds=10)
            return self._client

    def _name(self, owner: str, repo: str) -> RepoName:
        try:
            return RepoName(owner, repo)
        except InvalidName as err:
            raise ApplicationError(str(err), type="InvalidPush", non_retryable=True) from None

    # ------------------------------------------------------------------ plan

    @activity.defn(name="push_plan")
    async def push_plan(self, inp: PushInput) -> PushPlan:
        """Record the run as PENDING, read ``.styx.yaml``, pick the jobs, export the tree.
        Heartbeats throughout: a git server killed meanwhile is noticed in seconds (the
        workflow's heartbeat timeout), and another one plans the run again."""
        async with heartbeating():
            return await self._push_plan(inp)

    async def _push_plan(self, inp: PushInput) -> PushPlan:
        wid = activity.info().workflow_id
        await asyncio.to_thread(self.db.repos.upsert_push_run, inp.repo_id, inp.sha, ref=inp.ref, pusher=inp.pusher,
                                workflow_id=wid, status=PushRunStatus.PENDING)
        plan = await asyncio.to_thread(self._plan, inp)
        if plan.jobs:
            plan.workdir = await asyncio.to_thread(self._tree_upload, inp)
        return plan

    def _plan(self, inp: PushInput) -> PushPlan:
        name = self._name(inp.owner, inp.repo)
        if not is_sha(inp.sha):
            raise ApplicationError(f"not a commit id: {inp.sha!r}", type="InvalidPush", non_retryable=True)
        try:
            message = self.store.commit_message(name, inp.sha)
        except KeyError:
            raise ApplicationError(f"commit {inp.sha} is not in {name}", type="InvalidPush",
                                   non_retryable=True) from None
        if skips_ci(message):
            return PushPlan(skipped="skipped: [skip ci] in the commit message")
        text = self.store.read_file(name, inp.sha, CONFIG_FILE)
        if text is None:
            return PushPlan(skipped=f"no {CONFIG_FILE} in this commit")
        try:
            specs = load_config(text)
        except ConfigError as err:
            return PushPlan(error=str(err), field=err.field)
        chosen = select_jobs(specs, inp.ref, lambda: self.store.changed_paths(name, inp.before, inp.sha))
        if not chosen:
            return PushPlan(skipped=f"no job in {CONFIG_FILE} matches a push to {inp.ref}")
        # Secrets stay out of the workflow's history: push_submit reads them from the commit again.
        return PushPlan(jobs=[PushJobPlan(s.name, s.task.to_dict(include_secrets=False), s.cluster, s.managed)
                              for s in chosen])

    # ------------------------------------------------------------------ export

    def _export(self, inp: ExportInput) -> str:
        name = self._name(inp.owner, inp.repo)
        if not is_sha(inp.sha):
            raise ApplicationError(f"not a commit id: {inp.sha!r}", type="InvalidPush", non_retryable=True)
        dest = self.config.runs_root / inp.sha
        if dest.is_dir():  # a sha names its content: an earlier attempt's export is this one
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store.export_tree(name, inp.sha, dest)
        except tarfile.FilterError as err:  # a symlink or path that would leave the tree
            raise ApplicationError(f"the commit cannot be used as a workdir: {err}", type="InvalidPush",
                                   non_retryable=True) from None
        except FileExistsError:
            pass
        except OSError:
            if not dest.is_dir():
                raise
        return str(dest)

    def _tree_upload(self, push: PushInput) -> str:
        """The commit's tree as an upload (``upload:<sha256>``), stored in the database as the
        pusher's: any worker host syncs it to the nodes. Packed deterministically, so a
        retried or repeated plan names the same upload."""
        tree = Path(self._export(ExportInput(push.owner, push.repo, push.sha)))
        limit = self.settings.max_upload_bytes
        self.config.runs_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.config.runs_root) as packed:
            pack_tree(tree, packed)
            size = packed.tell()
            if size > limit:
                raise ApplicationError(f"the commit's files pack to {size} bytes; a push's workdir may be at most "
                                       f"{limit} (STYX_MAX_UPLOAD_BYTES)", type="InvalidPush", non_retryable=True)
            packed.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: packed.read(UPLOAD_CHUNK_BYTES), b""):
                digest.update(block)
            sha256 = digest.hexdigest()

            def chunks() -> Iterator[bytes]:
                packed.seek(0)
                yield from iter(lambda: packed.read(UPLOAD_CHUNK_BYTES), b"")

            try:
                self.db.uploads.store(sha256, size, chunks(), owner=push.pusher or "admin",
                                      quota=self.settings.upload_quota_bytes)
            except UploadQuotaFull as err:
                raise ApplicationError(f"the commit's files cannot be stored as the workdir: {err}",
                                       type="InvalidPush", non_retryable=True) from None
        return f"{UPLOAD_SCHEME}{sha256}"

    # ------------------------------------------------------------------ submit

    @activity.defn(name="push_submit")
    async def push_submit(self, inp: SubmitPushJobInput) -> PushJobRef:
        """Queue one job of the run (idempotent: a retry returns the first submission's job).
        Heartbeats, as ``push_plan`` does."""
        async with heartbeating():
            return await self._push_submit(inp)

    async def _push_submit(self, inp: SubmitPushJobInput) -> PushJobRef:
        job = inp.job
        spec = await asyncio.to_thread(self._spec, inp.push, job.name)
        data = spec.task.to_dict(include_secrets=True)
        # The job's files are paths of the commit, never one a pusher named: relative paths
        # that resolve (symlinks followed) inside the tree exported here, named as members of
        # the tree's upload, which is what the worker syncs.
        tree = inp.workdir if inp.workdir.startswith(UPLOAD_SCHEME) else ""
        if not tree:  # a run planned before trees were uploads
            tree = await asyncio.to_thread(self._tree_upload, inp.push)
        tree_sha = tree.removeprefix(UPLOAD_SCHEME)
        root = Path(await asyncio.to_thread(self._export, ExportInput(inp.push.owner, inp.push.repo,
                                                                      inp.push.sha))).resolve()
        if not isinstance(data.get("workdir"), dict):  # a git workdir ({url, ref}) is cloned by the nodes
            data["workdir"] = _member(tree, root, _in_commit(root, data.get("workdir"), f"jobs.{job.name}.workdir",
                                                            directory=True))
        for dst, source in (data.get("file_mounts") or {}).items():
            field = f"jobs.{job.name}.file_mounts.{dst}"
            if not isinstance(source, str):
                raise ApplicationError(f"{field}: storage mounts are not supported yet", type="InvalidTask",
                                       non_retryable=True)
            data["file_mounts"][dst] = _member(tree, root, _in_commit(root, source, field, directory=False))
        data.setdefault("name", job.name)
        try:
            task = load_task(Task.from_dict(data).to_dict(include_secrets=True),
                             may_use_upload=lambda sha256: sha256 == tree_sha)
        except InvalidRequest as err:
            raise ApplicationError(str(err), type="InvalidTask", non_retryable=True) from None
        if job.managed:
            return await self._submit_managed(inp, task, tree_sha)
        client = await self._temporal()
        # The run is the pusher's: the job is recorded as theirs, never the repo owner's. On a
        # named cluster it runs as `styx exec` does (no setup).
        submit = submit_input(task, inp.push.pusher, self.settings.home, run_setup=False)
        cluster = job.cluster or ""
        row, access = await asyncio.to_thread(self._access, inp.push.pusher, cluster)
        # A cluster the pusher may not use is, to them, one that does not exist.
        if row is None or row.status in CLUSTER_GONE or access < ClusterAccess.USE:
            raise ApplicationError(
                f"cluster {cluster!r} does not exist (or was taken down); launch it first "
                f"(`styx launch -c {cluster} ...`) or use `managed: true`",
                type="ClusterNotFound", non_retryable=True)
        pusher = await asyncio.to_thread(self.db.users.get, inp.push.pusher)
        try:
            policy.check_local_jobs(self.settings, row.provider, bool(pusher and pusher.is_admin))
        except policy.NotAllowed as err:
            raise ApplicationError(f"{inp.push.pusher}: {err}", type="Forbidden", non_retryable=True) from None
        try:  # what the nodes cannot honour fails the run before anything starts (warnings: none shown)
            check_for_provider(task, row.provider)
        except InvalidRequest as err:
            raise ApplicationError(_field(job.name, err), type="InvalidTask", non_retryable=True) from None
        try:
            result = await service.submit_job(client, self.settings.task_queue, cluster, submit,
                                              update_id=inp.key, specs=self.db.jobspecs)
        except PayloadTooLarge as err:
            raise ApplicationError(f"jobs.{job.name}.{err}", type="InvalidTask", non_retryable=True) from None
        except service.ClusterRefused as err:
            raise ApplicationError(f"cluster refused the job: {err.message}", type="Rejected",
                                   non_retryable=True) from None
        except service.ClusterNotRunning:
            raise ApplicationError(f"cluster {cluster!r} is not running", type="ClusterNotFound",
                                   non_retryable=True) from None
        return PushJobRef(job.name, cluster, result.job_id, result.workflow_id, job.managed)

    async def _submit_managed(self, inp: SubmitPushJobInput, task: Task, tree_sha: str) -> PushJobRef:
        """``managed: true``: a managed job of the pusher's (``styx.services.managed``, as
        ``styx jobs launch`` submits one): its own cluster, recovered on preemption, taken
        down at its end. The idempotency key is the submission's, so a retried
        ``push_submit`` finds the first managed job and starts no second one."""
        job, pusher = inp.job, inp.push.pusher
        user = await asyncio.to_thread(self.db.users.get, pusher)
        if user is None or user.disabled:
            raise ApplicationError(f"user {pusher!r} no longer exists or is disabled", type="Rejected",
                                   non_retryable=True)
        key = managed_push_key(inp.key)
        first = await asyncio.to_thread(self.db.managed.by_key, pusher, key)
        try:
            prepared = await asyncio.to_thread(
                managed_service.prepare, self.settings, self.db, user, [task.to_dict(include_secrets=True)], None,
                lambda sha256: sha256 == tree_sha, check_limits=first is None)
        except InvalidRequest as err:
            raise ApplicationError(_field(job.name, err), type="InvalidTask", non_retryable=True) from None
        except policy.NotAllowed as err:
            raise ApplicationError(f"{pusher}: {err}", type="Forbidden", non_retryable=True) from None
        except quotas.LimitExceeded as err:
            raise ApplicationError(f"managed job refused: {err}", type="Rejected", non_retryable=True) from None
        client = await self._temporal()
        try:
            row = await managed_service.submit(client, self.db, self.settings, user, prepared, job.name, key)
        except managed_service.ManagedIdTaken as err:
            raise ApplicationError(str(err), type="Rejected", non_retryable=True) from None
        assert row.id is not None
        return PushJobRef(job.name, "", 0, row.workflow_id, True, managed_id=row.id)

    def _access(self, pusher: str, cluster: str) -> tuple[Any, ClusterAccess]:
        user = self.db.users.get(pusher) if pusher else None
        row, access, _ = resolve_cluster_access(self.db, user, cluster)
        return row, access

    def _spec(self, push: PushInput, name: str) -> Any:
        """The job ``name`` of the commit's ``.styx.yaml``, read again (with its secrets)."""
        text = self.store.read_file(self._name(push.owner, push.repo), push.sha, CONFIG_FILE)
        try:
            specs = load_config(text or b"")
        except ConfigError as err:
            raise ApplicationError(str(err), type="InvalidTask", non_retryable=True) from None
        for spec in specs:
            if spec.name == name:
                return spec
        raise ApplicationError(f"no job {name!r} in {CONFIG_FILE} at {push.sha}", type="InvalidTask",
                               non_retryable=True)

    # ------------------------------------------------------------------ wait, down

    @activity.defn(name="push_wait_job")
    async def push_wait_job(self, inp: WaitJobInput) -> WaitJobResult:
        """Poll the read model until the job is finished (heartbeating meanwhile)."""
        delay = 0.2
        while True:
            job = await asyncio.to_thread(self.db.clusters.get_job, inp.cluster, inp.job_id)
            if job is not None and JobStatus(job.status).is_terminal:
                return WaitJobResult(job.status.value, job.message)
            activity.heartbeat(job.status.value if job else "unknown")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    @activity.defn(name="push_wait_managed")
    async def push_wait_managed(self, inp: WaitManagedInput) -> WaitJobResult:
        """Poll the read model until the managed job has ended (heartbeating meanwhile): its
        status and message (why it failed) are the push job's."""
        delay = 0.5
        while True:
            job = await asyncio.to_thread(self.db.managed.get, inp.managed_id)
            if job is None:
                return WaitJobResult(ManagedJobStatus.FAILED, f"managed job {inp.managed_id} is not in the database")
            if ManagedJobStatus(job.status).is_terminal:
                return WaitJobResult(job.status, job.message)
            activity.heartbeat(job.status)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    @activity.defn(name="push_down_cluster")
    async def push_down_cluster(self, inp: DownClusterInput) -> None:
        """Take down a ``push-…`` cluster: only runs started before ``managed: true`` became a
        managed job (their histories replay through it) still call it."""
        client = await self._temporal()
        down = asyncio.ensure_future(service.update_cluster(
            client, cluster_workflow_id(inp.cluster), "down", result_type=ClusterDescription))
        try:
            while not down.done():
                activity.heartbeat()
                await asyncio.wait({down}, timeout=5)
            await down
        except (service.ClusterNotRunning, service.ClusterRefused):
            pass  # already down or failed: nothing left to take down
        finally:
            down.cancel()

    # ------------------------------------------------------------------ record

    @activity.defn(name="push_record")
    async def push_record(self, rec: PushRecord) -> None:
        fields: dict[str, Any] = dict(ref=rec.ref, pusher=rec.pusher, workflow_id=rec.workflow_id,
                                      status=PushRunStatus(rec.status), message=rec.message)
        if rec.jobs is not None:
            fields["jobs"] = json.dumps([asdict(j) for j in rec.jobs])
        await asyncio.to_thread(self.db.repos.upsert_push_run, rec.repo_id, rec.sha, **fields)


def _field(job: str, err: InvalidRequest) -> str:
    """``err`` (naming ``task.<field>``) as the push names it: ``jobs.<job>.<field>: ...``."""
    return f"jobs.{job}.{err}".replace(".task.", ".").replace(f"jobs.{job}.task:", f"jobs.{job}:")


def _member(tree: str, root: Path, path: Path) -> str:
    """``path`` (inside the exported ``root``) as a member of the tree's upload."""
    relative = path.relative_to(root).as_posix()
    return tree if relative == "." else f"{tree}/{relative}"


def _in_commit(root: Path, relative: str | None, field: str, *, directory: bool) -> Path:
    """``relative`` (a path of the commit; None for the whole tree) in the exported ``root``;
    a non-retryable ``InvalidTask`` naming ``field`` if it is absolute, leaves the commit
    (``..``, a symlink out) or does not exist."""
    what = "a directory" if directory else "a file or directory"
    if relative is None or relative == "":
        return root
    path = Path(relative)
    resolved = (root / path).resolve()
    if path.is_absolute() or relative.startswith("~") or not resolved.is_relative_to(root):
        raise ApplicationError(f"{field}: {relative!r} is outside the pushed commit; a pushed job may only "
                               "use files of its commit", type="InvalidTask", non_retryable=True)
    if not (resolved.is_dir() if directory else resolved.exists()):
        raise ApplicationError(f"{field}: {relative!r} is not {what} of the commit", type="InvalidTask",
                               non_retryable=True)
    return resolved


def remove_export(config: GitServerConfig, sha: str) -> None:
    """Forget an exported tree (for cleanup tools)."""
    if is_sha(sha):
        shutil.rmtree(config.runs_root / sha, ignore_errors=True)

"""Repositories: create, list, delete, collaborators, branches, and the runs pushes started.

Access is decided by :func:`styx.gitserver.access.access_level`, the same function the git
transports ask: a repository you cannot read answers 404, as if it did not exist; one you
can read but not change answers 403.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from styx.api.deps import CurrentUser, StateDep
from styx.contracts.jobs import JOB_TERMINAL
from styx.contracts.managed import ManagedJobStatus
from styx.db import AlreadyExists, PushRun, Repo, User, UserNotFound
from styx.gitserver.access import AccessLevel, access_level, resolve_access
from styx.gitserver.config import GitServerConfig
from styx.gitserver.names import InvalidName, InvalidRef, RepoName, check_branch_name, is_sha
from styx.contracts.rest_repos import (
    BranchCreate,
    BranchInfo,
    CollaboratorInfo,
    CollaboratorSet,
    PushJobInfo,
    PushRunInfo,
    RepoCreate,
    RepoInfo,
    RepoUpdate,
)
from styx.gitserver.storage import RefConflict, RepoMissing, RepoStore

router = APIRouter(prefix="/api/v1/repos", tags=["repos"])


@dataclass
class GitContext:
    config: GitServerConfig
    store: RepoStore


def get_git(request: Request, state: StateDep) -> GitContext:
    """The repository store, built once per app from its settings."""
    ctx = getattr(request.app.state, "styx_git", None)
    if ctx is None:
        config = GitServerConfig.from_settings(state.settings)
        ctx = GitContext(config, RepoStore(config.repo_root, git=config.git, max_push_bytes=config.max_push_bytes,
                                           git_home=config.state_dir / "home"))
        request.app.state.styx_git = ctx
    return ctx


GitDep = Annotated[GitContext, Depends(get_git)]


def _name(owner: str, name: str) -> RepoName:
    try:
        return RepoName(owner, name)
    except InvalidName as err:
        raise HTTPException(422, str(err)) from None


async def _repo(state: StateDep, user: User, owner: str, name: str,
                needed: AccessLevel = AccessLevel.READ) -> tuple[RepoName, Repo, AccessLevel]:
    repo_name = _name(owner, name)
    repo, level = await asyncio.to_thread(resolve_access, state.db, user, repo_name)
    if repo is None or level < AccessLevel.READ:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"repository {repo_name} not found")
    if level < needed:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"{user.name} has {level.label} access to {repo_name}; this needs {needed.label}")
    return repo_name, repo, level


def _info(git: GitContext, repo: Repo, level: AccessLevel) -> RepoInfo:
    urls = git.config.clone_urls(repo.owner, repo.name)
    return RepoInfo(owner=repo.owner, name=repo.name, full_name=f"{repo.owner}/{repo.name}", private=repo.private,
                    default_branch=repo.default_branch, description=repo.description, created_at=repo.created_at,
                    clone_http=urls["http"], clone_ssh=urls["ssh"], permission=level.label)


# ---------------------------------------------------------------------------- repositories


@router.post("", status_code=201, response_model=RepoInfo, summary="Create a repository")
async def create_repo(req: RepoCreate, state: StateDep, git: GitDep, user: CurrentUser) -> RepoInfo:
    owner, name = req.owner, req.name
    if "/" in name:
        given_owner, _, name = name.partition("/")
        if owner and owner != given_owner:
            raise HTTPException(422, f"owner {owner!r} and name {req.name!r} disagree")
        owner = given_owner
    owner = owner or user.name
    repo_name = _name(owner, name)
    try:
        check_branch_name(req.default_branch)
    except InvalidRef as err:
        raise HTTPException(422, f"default_branch: {err}") from None
    if owner != user.name and not user.is_admin:
        raise HTTPException(403, f"you can create repositories under {user.name}/ only")
    try:
        repo = await asyncio.to_thread(state.db.repos.create, owner, repo_name.name, private=req.private,
                                       default_branch=req.default_branch, description=req.description)
    except UserNotFound as err:
        raise HTTPException(404, str(err)) from None
    except AlreadyExists as err:
        raise HTTPException(409, str(err)) from None
    try:
        await asyncio.to_thread(git.store.create, repo_name, req.default_branch)
    except BaseException as err:
        assert repo.id is not None
        await asyncio.to_thread(state.db.repos.delete, repo.id)
        if isinstance(err, FileExistsError):
            raise HTTPException(409, f"{repo_name} already exists on disk (a leftover?); remove "
                                     f"{git.store.path(repo_name)} or pick another name") from None
        raise
    return _info(git, repo, AccessLevel.ADMIN)


@router.get("", response_model=list[RepoInfo], summary="Repositories you can see")
async def list_repos(state: StateDep, git: GitDep, user: CurrentUser,
                     owner: str | None = Query(None, description="only this owner's")) -> list[RepoInfo]:
    repos = await asyncio.to_thread(state.db.repos.list, owner)
    levels = await asyncio.to_thread(state.db.repos.collaborator_levels, user.name)
    out = []
    for repo in repos:
        collab = None
        if repo.id in levels:
            from styx.db import RepoCollaborator

            collab = RepoCollaborator(repo_id=repo.id, user_name=user.name, level=levels[repo.id])
        level = access_level(user, repo, collab)
        if level >= AccessLevel.READ:
            out.append(_info(git, repo, level))
    return out


@router.get("/{owner}/{name}", response_model=RepoInfo, summary="One repository")
async def get_repo(owner: str, name: str, state: StateDep, git: GitDep, user: CurrentUser) -> RepoInfo:
    _, repo, level = await _repo(state, user, owner, name)
    return _info(git, repo, level)


@router.patch("/{owner}/{name}", response_model=RepoInfo, summary="Change visibility, default branch, description")
async def update_repo(owner: str, name: str, req: RepoUpdate, state: StateDep, git: GitDep,
                      user: CurrentUser) -> RepoInfo:
    repo_name, repo, level = await _repo(state, user, owner, name, AccessLevel.ADMIN)
    fields = req.model_dump(exclude_none=True)
    if "default_branch" in fields:
        try:
            check_branch_name(fields["default_branch"])
        except InvalidRef as err:
            raise HTTPException(422, f"default_branch: {err}") from None
        branches = await asyncio.to_thread(git.store.branches, repo_name)
        if branches and fields["default_branch"] not in branches:
            raise HTTPException(422, f"default_branch: {repo_name} has no branch {fields['default_branch']!r}")
        await asyncio.to_thread(git.store.set_head, repo_name, fields["default_branch"])
    assert repo.id is not None
    updated = await asyncio.to_thread(state.db.repos.update, repo.id, **fields)
    assert updated is not None
    return _info(git, updated, level)


@router.delete("/{owner}/{name}", status_code=204, summary="Delete a repository (and its runs' records)")
async def delete_repo(owner: str, name: str, state: StateDep, git: GitDep, user: CurrentUser) -> None:
    repo_name, repo, _ = await _repo(state, user, owner, name, AccessLevel.ADMIN)
    assert repo.id is not None
    await asyncio.to_thread(state.db.repos.delete, repo.id)
    await asyncio.to_thread(git.store.delete, repo_name)


# ---------------------------------------------------------------------------- collaborators


@router.get("/{owner}/{name}/collaborators", response_model=list[CollaboratorInfo], summary="Collaborators")
async def list_collaborators(owner: str, name: str, state: StateDep, user: CurrentUser) -> list[CollaboratorInfo]:
    _, repo, _ = await _repo(state, user, owner, name)
    assert repo.id is not None
    return [CollaboratorInfo(user=c.user_name, level=c.level.value)
            for c in await asyncio.to_thread(state.db.repos.list_collaborators, repo.id)]


@router.put("/{owner}/{name}/collaborators/{collaborator}", response_model=CollaboratorInfo,
            summary="Add a collaborator or change their level")
async def set_collaborator(owner: str, name: str, collaborator: str, req: CollaboratorSet, state: StateDep,
                           user: CurrentUser) -> CollaboratorInfo:
    _, repo, _ = await _repo(state, user, owner, name, AccessLevel.ADMIN)
    assert repo.id is not None
    if collaborator == repo.owner:
        raise HTTPException(422, f"{collaborator} owns {owner}/{name} already")
    try:
        row = await asyncio.to_thread(state.db.repos.set_collaborator, repo.id, collaborator, req.level)
    except UserNotFound as err:
        raise HTTPException(404, str(err)) from None
    return CollaboratorInfo(user=row.user_name, level=row.level.value)


@router.delete("/{owner}/{name}/collaborators/{collaborator}", status_code=204, summary="Remove a collaborator")
async def remove_collaborator(owner: str, name: str, collaborator: str, state: StateDep, user: CurrentUser) -> None:
    _, repo, _ = await _repo(state, user, owner, name, AccessLevel.ADMIN)
    assert repo.id is not None
    if not await asyncio.to_thread(state.db.repos.remove_collaborator, repo.id, collaborator):
        raise HTTPException(404, f"{collaborator} is not a collaborator on {owner}/{name}")


# ---------------------------------------------------------------------------- branches


@router.get("/{owner}/{name}/branches", response_model=list[BranchInfo], summary="Branches")
async def list_branches(owner: str, name: str, state: StateDep, git: GitDep, user: CurrentUser) -> list[BranchInfo]:
    repo_name, repo, _ = await _repo(state, user, owner, name)
    try:
        branches = await asyncio.to_thread(git.store.branches, repo_name)
    except RepoMissing as err:
        raise HTTPException(500, str(err)) from None
    return [BranchInfo(name=b, sha=sha, default=b == repo.default_branch) for b, sha in sorted(branches.items())]


@router.post("/{owner}/{name}/branches", status_code=201, response_model=BranchInfo, summary="Create a branch")
async def create_branch(owner: str, name: str, req: BranchCreate, state: StateDep, git: GitDep,
                        user: CurrentUser) -> BranchInfo:
    repo_name, repo, _ = await _repo(state, user, owner, name, AccessLevel.WRITE)
    try:
        check_branch_name(req.name)
    except InvalidRef as err:
        raise HTTPException(422, f"name: {err}") from None
    rev = req.from_ or repo.default_branch
    sha = await asyncio.to_thread(git.store.resolve, repo_name, rev)
    if sha is None:
        empty = not await asyncio.to_thread(git.store.branches, repo_name)
        raise HTTPException(422, f"{repo_name} is empty: push a commit first" if empty and req.from_ is None
                            else f"from: no branch, tag or commit {rev!r} in {repo_name}")
    try:
        await asyncio.to_thread(git.store.create_branch, repo_name, req.name, sha)
    except RefConflict:
        raise HTTPException(409, f"branch {req.name!r} already exists in {repo_name}") from None
    return BranchInfo(name=req.name, sha=sha, default=req.name == repo.default_branch)


@router.delete("/{owner}/{name}/branches/{branch:path}", status_code=204, summary="Delete a branch")
async def delete_branch(owner: str, name: str, branch: str, state: StateDep, git: GitDep, user: CurrentUser) -> None:
    repo_name, repo, _ = await _repo(state, user, owner, name, AccessLevel.WRITE)
    try:
        check_branch_name(branch)
    except InvalidRef as err:
        raise HTTPException(422, str(err)) from None
    if branch == repo.default_branch:
        raise HTTPException(409, f"{branch!r} is the default branch of {repo_name}: make another branch the "
                                 f"default first (styx repo update --default-branch ...)")
    sha = await asyncio.to_thread(git.store.ref_sha, repo_name, f"refs/heads/{branch}")
    if sha is None:
        raise HTTPException(404, f"{repo_name} has no branch {branch!r}")
    try:
        await asyncio.to_thread(git.store.delete_branch, repo_name, branch, sha)
    except RefConflict as err:
        raise HTTPException(409, str(err)) from None


# ---------------------------------------------------------------------------- push runs


def _run_info(state: StateDep, repo: Repo, run: PushRun) -> PushRunInfo:
    jobs = []
    for raw in json.loads(run.jobs or "[]"):
        job = PushJobInfo(**{k: v for k, v in raw.items() if k in PushJobInfo.model_fields})
        if job.managed_id and not ManagedJobStatus(job.status).is_terminal:
            managed = state.db.managed.get(job.managed_id)
            if managed is not None:
                job.status = managed.status
        elif job.job_id and job.status not in JOB_TERMINAL:
            live = state.db.clusters.get_job(job.cluster, job.job_id)
            if live is not None:
                job.status = live.status.value
        job.workflow_url = state.settings.workflow_url(job.workflow_id) if job.workflow_id else None
        jobs.append(job)
    return PushRunInfo(repo=f"{repo.owner}/{repo.name}", sha=run.sha, ref=run.ref, pusher=run.pusher,
                       status=run.status.value, message=run.message, workflow_id=run.workflow_id,
                       workflow_url=state.settings.workflow_url(run.workflow_id) if run.workflow_id else None,
                       jobs=jobs, created_at=run.created_at, updated_at=run.updated_at)


@router.get("/{owner}/{name}/runs", response_model=list[PushRunInfo], summary="Runs started by pushes, newest first")
async def list_runs(owner: str, name: str, state: StateDep, user: CurrentUser,
                    limit: int = Query(50, ge=1, le=500)) -> list[PushRunInfo]:
    _, repo, _ = await _repo(state, user, owner, name)
    assert repo.id is not None
    runs = await asyncio.to_thread(state.db.repos.list_push_runs, repo.id, limit)
    return await asyncio.to_thread(lambda: [_run_info(state, repo, r) for r in runs])


@router.get("/{owner}/{name}/commits/{rev}/status", response_model=PushRunInfo,
            summary="The run of one commit (a sha, a unique prefix, or a branch)")
async def commit_status(owner: str, name: str, rev: str, state: StateDep, git: GitDep,
                        user: CurrentUser) -> PushRunInfo:
    repo_name, repo, _ = await _repo(state, user, owner, name)
    assert repo.id is not None
    runs: list[PushRun] = []
    if is_sha(rev):
        run = await asyncio.to_thread(state.db.repos.get_push_run, repo.id, rev)
        runs = [run] if run else []
    elif 7 <= len(rev) < 40 and all(c in "0123456789abcdef" for c in rev):
        runs = await asyncio.to_thread(state.db.repos.find_push_runs, repo.id, rev)
    if not runs and not is_sha(rev):
        sha = await asyncio.to_thread(git.store.resolve, repo_name, rev)
        if sha is not None:
            run = await asyncio.to_thread(state.db.repos.get_push_run, repo.id, sha)
            runs = [run] if run else []
    if len(runs) > 1:
        raise HTTPException(422, f"{rev!r} is ambiguous: give more of the commit id")
    if not runs:
        raise HTTPException(404, f"no run for {rev!r} in {repo_name} (no .styx.yaml at that commit, "
                                 "or it was never pushed)")
    return await asyncio.to_thread(_run_info, state, repo, runs[0])

"""Pages: the repositories the viewer can read (``/repos``), and one repository — its clone
URLs, branches, and the recent pushes with the runs they started and each commit's status
(``/repos/{owner}/{name}``). Everything comes from the REST routes' functions, so who may
read a repository is ``styx.gitserver.access`` as for git itself.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from styx.api.dashboard.clusters import not_found
from styx.api.dashboard.columns import RUN_JOB_COLUMNS
from styx.api.dashboard.render import page
from styx.api.dashboard.session import ViewerDep
from styx.api.deps import StateDep
from styx.api.routes import repos as api

router = APIRouter(include_in_schema=False)

#: Pushes shown on a repository's page.
RUNS_SHOWN = 25


@router.get("/repos")
async def repos_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    git = api.get_git(request, state)
    repos = await api.list_repos(state, git, viewer.user, owner=None)
    return page(request, viewer, "repos.html", repos=repos)


@router.get("/repos/{owner}/{name}")
async def repo_page(owner: str, name: str, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    git = api.get_git(request, state)
    try:
        repo = await api.get_repo(owner, name, state, git, viewer.user)
    except HTTPException as err:
        return not_found(request, viewer, str(err.detail))
    problem = None
    try:
        branches = await api.list_branches(owner, name, state, git, viewer.user)
    except HTTPException as err:  # its directory is not on this host (see the README's several hosts)
        branches, problem = [], str(err.detail)
    runs = await api.list_runs(owner, name, state, viewer.user, limit=RUNS_SHOWN)
    return page(request, viewer, "repo.html", repo=repo, branches=branches, runs=runs, problem=problem,
                run_of={run.sha: run for run in runs}, job_columns=RUN_JOB_COLUMNS)

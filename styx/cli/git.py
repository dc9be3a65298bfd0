"""`styx user / key / repo / branch / gitserver`: users, SSH keys, repositories, push runs.

Every command but `gitserver` talks to the API through the SDK. The commands hang on ``app``,
which ``styx.cli.main`` adds to the root command.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from types import EllipsisType
from typing import Optional

import typer

from styx.cli.console import Table, api, console, esc, fail, settings_or_exit

app = typer.Typer()

user_app = typer.Typer(help="Users and their API tokens (creating users needs an admin token).",
                       no_args_is_help=True)
key_app = typer.Typer(help="SSH public keys, for `git clone ssh://...`.", no_args_is_help=True)
repo_app = typer.Typer(help="Git repositories served by `styx gitserver`, and the runs pushes start.",
                       no_args_is_help=True)
collab_app = typer.Typer(help="Who else may read or push. Example: `styx repo collab add alice/ml bob --write`",
                         no_args_is_help=True)
branch_app = typer.Typer(help="Branches of a repository.", no_args_is_help=True)
app.add_typer(user_app, name="user", rich_help_panel="Git")
app.add_typer(key_app, name="key", rich_help_panel="Git")
app.add_typer(repo_app, name="repo", rich_help_panel="Git")
app.add_typer(branch_app, name="branch", rich_help_panel="Git")
repo_app.add_typer(collab_app, name="collab")


def _age(then: datetime) -> str:
    seconds = (datetime.now(timezone.utc) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


# ------------------------------------------------------------------------------ users


@user_app.command("create")
def user_create(name: str = typer.Argument(..., help="the new user's name"),
                admin: bool = typer.Option(False, "--admin", help="make them a Styx admin")) -> None:
    """Create a user and print their API token (shown only this once).

    Example:  `styx user create alice`
    """
    with api() as client:
        created = client.create_user(name, admin=admin)
    console.print(f"created user [bold]{esc(created.name)}[/bold]{' (admin)' if created.is_admin else ''}")
    console.print("their API token (shown once; `git clone http://<user>:<token>@...` or STYX_TOKEN):")
    print(created.token)


@user_app.command("list")
def user_list() -> None:
    """List users.

    Example:  `styx user list`
    """
    with api() as client:
        users = client.users()
    table = Table("NAME", "ADMIN", "CREATED", "DISABLED")
    for u in users:
        table.add_row(esc(u.name), "yes" if u.is_admin else "", _age(u.created_at), "yes" if u.disabled else "")
    console.print(table)


@user_app.command("disable")
def user_disable(name: str = typer.Argument(..., help="the user")) -> None:
    """Disable a user (admin): their API tokens and SSH keys are refused at once, over the
    API and git; nothing of theirs is deleted. `styx user enable` undoes it.

    Example:  `styx user disable mallory`
    """
    with api() as client:
        client.disable_user(name)
    console.print(f"disabled user {esc(name)}: their tokens and SSH keys are refused")


@user_app.command("enable")
def user_enable(name: str = typer.Argument(..., help="the user")) -> None:
    """Enable a disabled user again (admin).

    Example:  `styx user enable mallory`
    """
    with api() as client:
        client.enable_user(name)
    console.print(f"enabled user {esc(name)}")


def _limit_value(option: str, raw: str | None) -> int | None | EllipsisType:
    """``--clusters 5`` -> 5, ``none`` -> None (clear), not given -> ... (keep)."""
    if raw is None:
        return ...
    if raw.strip().lower() == "none":
        return None
    if not raw.strip().isdigit():
        raise fail(f"{option}: expected a whole number, or none to clear it, got {raw!r}")
    return int(raw)


def _one_limit(what: str, own: int | None, default: int | None, name: str) -> str:
    if own is not None:
        return f"{what} {own} (set for {name})"
    env = f"STYX_DEFAULT_MAX_{what.upper()}"
    return f"{what} {'no limit' if default is None else default} (the default, {env})"


@user_app.command("limits")
def user_limits(
    name: Optional[str] = typer.Argument(None, help="the user (default: you)"),
    clusters: Optional[str] = typer.Option(None, "--clusters", help="live clusters they may hold; none: the default"),
    nodes: Optional[str] = typer.Option(None, "--nodes", help="nodes over their live clusters; none: the default"),
) -> None:
    """Show a user's limits and what they hold now; with --clusters/--nodes, set them (admin).

    A launch that would take a user over a limit is refused, naming it. `none` clears the
    user's own limit, so the default applies again. Admins are not limited.

    Examples:  `styx user limits alice --clusters 3 --nodes 16`    `styx user limits alice`
    """
    max_clusters, max_nodes = _limit_value("--clusters", clusters), _limit_value("--nodes", nodes)
    with api() as client:
        if max_clusters is ... and max_nodes is ...:
            limits = client.user_limits(name)
        else:
            if name is None:
                raise fail("name the user whose limits to set: `styx user limits <name> --clusters N`")
            limits = client.set_user_limits(name, max_clusters=max_clusters, max_nodes=max_nodes)

    def of(used: int, most: int | None, what: str) -> str:
        return f"{used} {what}" if most is None else f"{used} of {most} {what}"

    if limits.is_admin:
        console.print(f"{limits.user} is an admin: not limited (holds {limits.clusters} clusters, "
                      f"{limits.nodes} nodes)")
        return
    console.print(f"{limits.user} holds {of(limits.clusters, limits.effective_max_clusters, 'clusters')} and "
                  f"{of(limits.nodes, limits.effective_max_nodes, 'nodes')}")
    console.print("limits: " + _one_limit("clusters", limits.max_clusters, limits.default_max_clusters, limits.user)
                  + "; " + _one_limit("nodes", limits.max_nodes, limits.default_max_nodes, limits.user))


# ------------------------------------------------------------------------------ keys


@key_app.command("add")
def key_add(public_key: str = typer.Argument(..., help="a .pub file, e.g. ~/.ssh/id_ed25519.pub"),
            user: Optional[str] = typer.Option(None, "--user", help="for another user (admin)"),
            title: Optional[str] = typer.Option(None, "--title")) -> None:
    """Register an SSH public key, for `git clone ssh://git@<host>:7722/<owner>/<repo>.git`.

    Example:  `styx key add ~/.ssh/id_ed25519.pub`
    """
    with api() as client:
        key = client.add_key(public_key, user=user, title=title)
    console.print(f"added key {key.id} {esc(key.fingerprint)} for {esc(key.user)}")


@key_app.command("list")
def key_list(user: Optional[str] = typer.Option(None, "--user")) -> None:
    """List SSH keys.

    Example:  `styx key list`
    """
    with api() as client:
        keys = client.keys(user)
    table = Table("ID", "FINGERPRINT", "TITLE", "ADDED")
    for k in keys:
        table.add_row(str(k.id), esc(k.fingerprint), esc(k.title or ""), _age(k.created_at))
    console.print(table)


@key_app.command("remove")
def key_remove(key_id: int = typer.Argument(...), user: Optional[str] = typer.Option(None, "--user")) -> None:
    """Remove an SSH key by its id (see `styx key list`).

    Example:  `styx key remove 3`
    """
    with api() as client:
        client.delete_key(key_id, user)
    console.print(f"removed key {key_id}")


# ------------------------------------------------------------------------------ repos


@repo_app.command("create")
def repo_create(name: str = typer.Argument(..., help="owner/name, or name (yours)"),
                private: bool = typer.Option(False, "--private", help="only collaborators can read it"),
                default_branch: str = typer.Option("main", "--default-branch"),
                description: Optional[str] = typer.Option(None, "--description")) -> None:
    """Create a repository and print its clone URLs.

    Example:  `styx repo create alice/ml --private`
    """
    with api() as client:
        repo = client.create_repo(name, private=private, default_branch=default_branch, description=description)
    console.print(f"created {'private' if repo.private else 'public'} repository [bold]{esc(repo.full_name)}[/bold]")
    console.print(f"  git clone {repo.clone_http}\n  git clone {repo.clone_ssh}", highlight=False, markup=False)


@repo_app.command("list")
def repo_list(owner: Optional[str] = typer.Argument(None, help="only this owner's")) -> None:
    """Repositories you can see.

    Example:  `styx repo list alice`
    """
    with api() as client:
        repos = client.repos(owner)
    table = Table("REPOSITORY", "VISIBILITY", "DEFAULT", "YOUR ACCESS", "CLONE")
    for r in repos:
        table.add_row(esc(r.full_name), "private" if r.private else "public", esc(r.default_branch), esc(r.permission),
                      esc(r.clone_http))
    console.print(table)


@repo_app.command("show")
def repo_show(name: str = typer.Argument(..., help="owner/name")) -> None:
    """One repository, with its branches.

    Example:  `styx repo show alice/ml`
    """
    with api() as client:
        repo = client.repo(name)
        branches = client.branches(name)
    console.print(f"[bold]{esc(repo.full_name)}[/bold] ({'private' if repo.private else 'public'}, "
                  f"your access: {esc(repo.permission)})")
    if repo.description:
        console.print(repo.description, markup=False)
    console.print(f"  {repo.clone_http}\n  {repo.clone_ssh}", highlight=False, markup=False)
    for b in branches:
        console.print(f"  {'*' if b.default else ' '} {b.name} {b.sha[:10]}", markup=False)


@repo_app.command("update")
def repo_update(name: str = typer.Argument(..., help="owner/name"),
                private: Optional[bool] = typer.Option(None, "--private/--public"),
                default_branch: Optional[str] = typer.Option(None, "--default-branch"),
                description: Optional[str] = typer.Option(None, "--description")) -> None:
    """Change visibility, default branch or description (needs admin access).

    Example:  `styx repo update alice/ml --private`
    """
    with api() as client:
        repo = client.update_repo(name, private=private, default_branch=default_branch, description=description)
    console.print(f"{repo.full_name}: {'private' if repo.private else 'public'}, default branch {repo.default_branch}",
                  markup=False)


@repo_app.command("delete")
def repo_delete(name: str = typer.Argument(..., help="owner/name"),
                yes: bool = typer.Option(False, "-y", "--yes", help="do not ask")) -> None:
    """Delete a repository, its history and its run records. There is no undo.

    Example:  `styx repo delete alice/ml -y`
    """
    if not yes and not typer.confirm(f"Delete {name} and all its history?", default=False):
        raise typer.Exit(1)
    with api() as client:
        client.delete_repo(name)
    console.print(f"deleted {name}", markup=False)


@repo_app.command("runs")
def repo_runs(name: str = typer.Argument(..., help="owner/name"),
              limit: int = typer.Option(20, "-n", "--limit")) -> None:
    """The runs pushes started, newest first, with their jobs.

    Example:  `styx repo runs alice/ml`
    """
    with api() as client:
        runs = client.runs(name, limit)
    table = Table("COMMIT", "REF", "PUSHER", "STATUS", "JOBS", "WHEN", "MESSAGE")
    for r in runs:
        jobs = ", ".join(f"{j.name}: managed job {j.managed_id} {j.status}" if j.managed_id else
                         f"{j.name}: {j.cluster}#{j.job_id} {j.status}" if j.job_id else f"{j.name}: {j.status}"
                         for j in r.jobs)
        colour = {"SUCCEEDED": "green", "FAILED": "red"}.get(r.status, "yellow")
        table.add_row(esc(r.sha[:10]), esc(r.ref.removeprefix("refs/heads/")), esc(r.pusher),
                      f"[{colour}]{esc(r.status)}[/{colour}]", esc(jobs), _age(r.created_at), esc(r.message or ""))
    console.print(table)


@repo_app.command("status")
def repo_status(name: str = typer.Argument(..., help="owner/name"),
                rev: str = typer.Argument(..., help="a commit id (or prefix) or a branch")) -> None:
    """The run of one commit; exits 0 if it succeeded (or was skipped), 1 if it failed, 2 if running.

    Example:  `styx repo status alice/ml main`
    """
    with api() as client:
        run = client.commit_status(name, rev)
    console.print(f"{run.sha[:10]} {run.ref}: {run.status}" + (f" — {run.message}" if run.message else ""),
                  markup=False, soft_wrap=True)
    for j in run.jobs:
        if j.managed_id:
            line = f"  {j.name}: managed job {j.managed_id} {j.status}" + (f" ({j.message})" if j.message else "")
        elif j.job_id:
            line = f"  {j.name}: cluster {j.cluster} job {j.job_id} {j.status}" + (f" ({j.message})" if j.message else "")
        else:  # refused before it was queued: there is no job, only the reason
            line = f"  {j.name}: not queued ({j.status})" + (f": {j.message}" if j.message else "")
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit({"SUCCEEDED": 0, "SKIPPED": 0, "FAILED": 1}.get(run.status, 2))


@collab_app.command("add")
def collab_add(name: str = typer.Argument(..., help="owner/name"), user: str = typer.Argument(...),
               read: bool = typer.Option(False, "--read"), write: bool = typer.Option(False, "--write"),
               admin: bool = typer.Option(False, "--admin")) -> None:
    """Give a user read, write (the default) or admin access.

    Example:  `styx repo collab add alice/ml bob --write`
    """
    if read + write + admin > 1:
        raise fail("give one of --read, --write, --admin")
    level = "admin" if admin else "read" if read else "write"
    with api() as client:
        c = client.set_collaborator(name, user, level)
    console.print(f"{c.user} has {c.level} access to {name}", markup=False)


@collab_app.command("list")
def collab_list(name: str = typer.Argument(..., help="owner/name")) -> None:
    """Who has access to a repository.

    Example:  `styx repo collab list alice/ml`
    """
    with api() as client:
        rows = client.collaborators(name)
    for c in rows:
        console.print(f"{c.user}\t{c.level}", markup=False)


@collab_app.command("remove")
def collab_remove(name: str = typer.Argument(..., help="owner/name"), user: str = typer.Argument(...)) -> None:
    """Take a user's access to a repository away.

    Example:  `styx repo collab remove alice/ml bob`
    """
    with api() as client:
        client.remove_collaborator(name, user)
    console.print(f"{user} removed from {name}", markup=False)


# ------------------------------------------------------------------------------ branches


@branch_app.command("list")
def branch_list(name: str = typer.Argument(..., help="owner/name")) -> None:
    """Branches of a repository, with their head commits.

    Example:  `styx branch list alice/ml`
    """
    with api() as client:
        branches = client.branches(name)
    for b in branches:
        console.print(f"{'*' if b.default else ' '} {b.name}\t{b.sha}", highlight=False, markup=False)


@branch_app.command("create")
def branch_create(name: str = typer.Argument(..., help="owner/name"), branch: str = typer.Argument(...),
                  from_: Optional[str] = typer.Option(None, "--from", help="branch, tag or commit (default: the default branch)")) -> None:
    """Example:  `styx branch create alice/ml feature --from main`"""
    with api() as client:
        b = client.create_branch(name, branch, from_)
    console.print(f"created {b.name} at {b.sha[:10]}", markup=False)


@branch_app.command("delete")
def branch_delete(name: str = typer.Argument(..., help="owner/name"), branch: str = typer.Argument(...)) -> None:
    """Delete a branch (not the default one).

    Example:  `styx branch delete alice/ml feature`
    """
    with api() as client:
        client.delete_branch(name, branch)
    console.print(f"deleted {branch}", markup=False)


# ------------------------------------------------------------------------------ server


@app.command(rich_help_panel="Git")
def gitserver() -> None:
    """Run the git server: smart HTTP on `STYX_GIT_HTTP_PORT` (7781) and SSH on `STYX_GIT_SSH_PORT` (7722).

    Example:  `styx gitserver`   then  `git clone http://127.0.0.1:7781/alice/ml.git`
    """
    from styx.gitserver.server import run_gitserver
    from styx.workers.gitqueue import serve_repo_activities

    try:
        run_gitserver(settings_or_exit(), companions=[serve_repo_activities])
    except (OSError, ValueError) as err:
        raise fail(str(err)) from None
    sys.exit(0)

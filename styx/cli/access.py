"""`styx token` (list, create, revoke API tokens) and `styx cluster` (share, unshare).

Every command talks to the API through the SDK. The sub-apps hang on ``app``, which
``styx.cli.main`` adds to the root command; `styx user disable/enable` are in ``git.py``
beside the other user commands.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from styx.cli.console import Table, console, esc
from styx.cli.git import api

app = typer.Typer()

token_app = typer.Typer(help="Your API tokens: list, create (optionally expiring), revoke. "
                             "Example: `styx token create --expires 30d --description CI`",
                        no_args_is_help=True)
cluster_app = typer.Typer(help="Who may use a cluster besides its owner. "
                               "Example: `styx cluster share dev bob`",
                          no_args_is_help=True)
app.add_typer(token_app, name="token", rich_help_panel="Access")
app.add_typer(cluster_app, name="cluster", rich_help_panel="Access")

UserOpt = typer.Option(None, "--user", help="another user's (admin)")


def _when(then: datetime | None, never: str = "-") -> str:
    """``3d ago`` / ``in 29d`` / ``never``."""
    if then is None:
        return never
    seconds = (then - datetime.now(timezone.utc)).total_seconds()
    size = abs(seconds)
    text = f"{int(size)}s"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if size >= length:
            text = f"{int(size // length)}{unit}"
            break
    return f"in {text}" if seconds > 0 else f"{text} ago"


# ------------------------------------------------------------------------------ tokens


@token_app.command("list")
def token_list(user: Optional[str] = UserOpt) -> None:
    """List API tokens: id, description, created, expires, last used (never the tokens).

    Example:  `styx token list`
    """
    with api() as client:
        tokens = client.tokens(user)
    table = Table("ID", "DESCRIPTION", "CREATED", "EXPIRES", "LAST USED")
    for t in tokens:
        expires = _when(t.expires_at, "never") + (" (expired)" if t.expired else "")
        table.add_row(esc(t.id), esc(t.description or ""), _when(t.created_at), expires, _when(t.last_used_at, "never"))
    console.print(table)


@token_app.command("create")
def token_create(
    expires: Optional[str] = typer.Option(None, "--expires", help="lifetime: 30d, 12h or 90m (default: never)"),
    description: Optional[str] = typer.Option(None, "--description", help="what it is for, e.g. CI"),
    user: Optional[str] = UserOpt,
) -> None:
    """Create an API token and print it (shown only this once).

    Example:  `styx token create --expires 30d --description laptop`
    """
    with api() as client:
        made = client.create_token(user, description=description, expires=expires)
    until = f", expires {made.expires_at:%Y-%m-%d %H:%M} UTC" if made.expires_at else ", never expires"
    console.print(f"created token [bold]{esc(made.id)}[/bold] for {esc(made.user)}{until}")
    console.print("the token (shown once; use it as STYX_TOKEN, or as the password for git over HTTP):")
    print(made.token)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="the token's id (see `styx token list`)"),
                 user: Optional[str] = UserOpt) -> None:
    """Revoke an API token: it is refused from the next request on (API and git).

    Example:  `styx token revoke 3f2a9c1b7d04`
    """
    with api() as client:
        client.revoke_token(token_id, user)
    console.print(f"revoked token {token_id}", markup=False)


# ------------------------------------------------------------------------------ sharing


def _shared(info_name: str, shared_with: list[str]) -> str:
    return (f"cluster {info_name} is shared with: {', '.join(shared_with)}" if shared_with
            else f"cluster {info_name} is shared with nobody")


@cluster_app.command("share")
def cluster_share(cluster: str = typer.Argument(..., help="your cluster"),
                  user: str = typer.Argument(..., help="the user who may use it")) -> None:
    """Let another user use your cluster: see it, run jobs (`styx exec`), read its jobs and
    logs, cancel their own jobs. Stopping, tearing down and sharing stay yours.

    Example:  `styx cluster share dev bob`
    """
    with api() as client:
        info = client.share(cluster, user)
    console.print(_shared(info.name, info.shared_with), markup=False)


@cluster_app.command("unshare")
def cluster_unshare(cluster: str = typer.Argument(..., help="your cluster"),
                    user: str = typer.Argument(..., help="the user who may no longer use it")) -> None:
    """Stop sharing a cluster with a user (their running jobs are left alone).

    Example:  `styx cluster unshare dev bob`
    """
    with api() as client:
        info = client.unshare(cluster, user)
    console.print(_shared(info.name, info.shared_with), markup=False)

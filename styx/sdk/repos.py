"""SDK methods for users (API tokens, disabling), SSH keys, repositories, branches and push runs.

Mixed into ``styx.Client`` / ``styx.AsyncClient`` (``ReposMixin`` / ``AsyncReposMixin``)::

    import styx

    with styx.Client() as client:
        client.create_repo("ml", private=True)            # yours: <you>/ml
        client.add_key("~/.ssh/id_ed25519.pub")
        made = client.create_token(expires="30d", description="CI")   # made.token: shown once
        client.revoke_token(made.id)
        client.set_user_limits("bob", max_clusters=3, max_nodes=None)   # admin; None: the default
        print(client.user_limits("bob").clusters)        # live clusters bob holds now
        print(client.repo("alice/ml").clone_ssh)
        run = client.wait_commit("alice/ml", "main")      # after `git push`
        print(run.status, [(j.cluster, j.job_id, j.status) for j in run.jobs])
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from types import EllipsisType
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from styx.contracts.pushes import PUSH_TERMINAL
from styx.contracts.rest_repos import (
    BranchInfo,
    CollaboratorInfo,
    KeyInfo,
    PushRunInfo,
    RepoInfo,
    TokenCreated,
    TokenInfo,
    UserCreated,
    UserInfo,
    UserLimits,
    parse_duration,
)
from styx.sdk.transport import Invalid, NotFound, Request, WaitTimeout


def _split(full_name: str) -> tuple[str, str]:
    owner, sep, name = full_name.strip("/").partition("/")
    if not sep or not owner or not name or "/" in name:
        raise Invalid(None, f"expected <owner>/<name>, got {full_name!r}")
    return owner, name.removesuffix(".git")


def _public_key_text(key: str | Path) -> str:
    text = str(key)
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return text.strip()
    path = Path(text).expanduser()
    if not path.is_file():
        raise Invalid(None, f"no such public key file: {path}")
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise Invalid(None, f"cannot read the public key file {path}: {err}") from None


def _seconds(expires: str | timedelta | int | None) -> int | None:
    """A token lifetime: ``"30d"``/``"12h"``/``"90m"``, a timedelta, or seconds."""
    if expires is None or isinstance(expires, int):
        return expires
    if isinstance(expires, timedelta):
        return int(expires.total_seconds())
    try:
        return parse_duration(expires)
    except ValueError as err:
        raise Invalid(None, f"expires: {err}") from None


class _RepoRoutes:
    @staticmethod
    def create_user(name: str, admin: bool) -> Request:
        return Request("POST", "/api/v1/users", {"name": name, "admin": admin})

    @staticmethod
    def users() -> Request:
        return Request("GET", "/api/v1/users")

    @staticmethod
    def me() -> Request:
        return Request("GET", "/api/v1/users/me")

    @staticmethod
    def add_key(user: str, public_key: str, title: str | None) -> Request:
        return Request("POST", f"/api/v1/users/{quote(user)}/keys", {"public_key": public_key, "title": title})

    @staticmethod
    def keys(user: str) -> Request:
        return Request("GET", f"/api/v1/users/{quote(user)}/keys")

    @staticmethod
    def delete_key(user: str, key_id: int) -> Request:
        return Request("DELETE", f"/api/v1/users/{quote(user)}/keys/{key_id}")

    @staticmethod
    def tokens(user: str) -> Request:
        return Request("GET", f"/api/v1/users/{quote(user)}/tokens")

    @staticmethod
    def create_token(user: str, description: str | None, expires: str | timedelta | int | None) -> Request:
        return Request("POST", f"/api/v1/users/{quote(user)}/tokens",
                       {"description": description, "expires_in_seconds": _seconds(expires)})

    @staticmethod
    def revoke_token(user: str, token_id: str) -> Request:
        return Request("DELETE", f"/api/v1/users/{quote(user)}/tokens/{quote(token_id)}")

    @staticmethod
    def set_disabled(user: str, disabled: bool) -> Request:
        return Request("POST", f"/api/v1/users/{quote(user)}/{'disable' if disabled else 'enable'}")

    @staticmethod
    def limits(user: str) -> Request:
        return Request("GET", f"/api/v1/users/{quote(user)}/limits")

    @staticmethod
    def set_limits(user: str, max_clusters: int | None | EllipsisType,
                   max_nodes: int | None | EllipsisType) -> Request:
        body = {k: v for k, v in (("max_clusters", max_clusters), ("max_nodes", max_nodes)) if v is not ...}
        return Request("PUT", f"/api/v1/users/{quote(user)}/limits", body)

    @staticmethod
    def create_repo(name: str, private: bool, default_branch: str, description: str | None) -> Request:
        return Request("POST", "/api/v1/repos", {"name": name, "private": private, "default_branch": default_branch,
                                                 "description": description})

    @staticmethod
    def repos(owner: str | None) -> Request:
        return Request("GET", "/api/v1/repos", params={"owner": owner} if owner else None)

    @staticmethod
    def repo(full: str, method: str = "GET", body: Any = None) -> Request:
        owner, name = _split(full)
        return Request(method, f"/api/v1/repos/{owner}/{name}", body)

    @staticmethod
    def collaborators(full: str) -> Request:
        owner, name = _split(full)
        return Request("GET", f"/api/v1/repos/{owner}/{name}/collaborators")

    @staticmethod
    def collaborator(full: str, user: str, level: str | None) -> Request:
        owner, name = _split(full)
        path = f"/api/v1/repos/{owner}/{name}/collaborators/{quote(user)}"
        return Request("PUT", path, {"level": level}) if level else Request("DELETE", path)

    @staticmethod
    def branches(full: str) -> Request:
        owner, name = _split(full)
        return Request("GET", f"/api/v1/repos/{owner}/{name}/branches")

    @staticmethod
    def create_branch(full: str, branch: str, from_: str | None) -> Request:
        owner, name = _split(full)
        return Request("POST", f"/api/v1/repos/{owner}/{name}/branches", {"name": branch, "from": from_})

    @staticmethod
    def delete_branch(full: str, branch: str) -> Request:
        owner, name = _split(full)
        return Request("DELETE", f"/api/v1/repos/{owner}/{name}/branches/{quote(branch, safe='/')}")

    @staticmethod
    def runs(full: str, limit: int) -> Request:
        owner, name = _split(full)
        return Request("GET", f"/api/v1/repos/{owner}/{name}/runs", params={"limit": limit})

    @staticmethod
    def commit_status(full: str, rev: str) -> Request:
        owner, name = _split(full)
        return Request("GET", f"/api/v1/repos/{owner}/{name}/commits/{quote(rev, safe='')}/status")


class ReposMixin:
    """Users, keys, repositories, branches and runs, for :class:`styx.sdk.client.Client`."""

    _send: Callable[[Request], Any]  # from the transport it is mixed with

    # users and keys
    def create_user(self, name: str, admin: bool = False) -> UserCreated:
        """Create a user (you must be an admin); the answer holds their token, shown once."""
        return UserCreated(**self._send(_RepoRoutes.create_user(name, admin)))

    def users(self) -> list[UserInfo]:
        return [UserInfo(**u) for u in self._send(_RepoRoutes.users())]

    def me(self) -> UserInfo:
        return UserInfo(**self._send(_RepoRoutes.me()))

    def add_key(self, public_key: str | Path, user: str | None = None, title: str | None = None) -> KeyInfo:
        """Register an SSH public key (a ``.pub`` path or the key line) for you or ``user``."""
        text = _public_key_text(public_key)  # a missing file is said before the API is asked anything
        user = user or self.me().name
        return KeyInfo(**self._send(_RepoRoutes.add_key(user, text, title)))

    def keys(self, user: str | None = None) -> list[KeyInfo]:
        return [KeyInfo(**k) for k in self._send(_RepoRoutes.keys(user or self.me().name))]

    def delete_key(self, key_id: int, user: str | None = None) -> None:
        self._send(_RepoRoutes.delete_key(user or self.me().name, key_id))

    # API tokens, disabling users
    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Your API tokens (an admin: ``user``'s): ids, descriptions, expiry, last use."""
        return [TokenInfo(**t) for t in self._send(_RepoRoutes.tokens(user or self.me().name))]

    def create_token(self, user: str | None = None, *, description: str | None = None,
                     expires: str | timedelta | int | None = None) -> TokenCreated:
        """A new API token for you (an admin: for ``user``); ``expires``: ``"30d"``, ``"12h"``,
        a timedelta or seconds (None: never). ``.token`` is shown only this once."""
        return TokenCreated(**self._send(_RepoRoutes.create_token(user or self.me().name, description, expires)))

    def revoke_token(self, token_id: str, user: str | None = None) -> None:
        """Revoke one of your tokens (an admin: one of ``user``'s); refused from then on."""
        self._send(_RepoRoutes.revoke_token(user or self.me().name, token_id))

    def disable_user(self, name: str) -> UserInfo:
        """(Admin) refuse ``name``'s tokens and SSH keys until :meth:`enable_user`."""
        return UserInfo(**self._send(_RepoRoutes.set_disabled(name, True)))

    def enable_user(self, name: str) -> UserInfo:
        return UserInfo(**self._send(_RepoRoutes.set_disabled(name, False)))

    # limits
    def user_limits(self, name: str | None = None) -> UserLimits:
        """Your limits (an admin: ``name``'s) and what you hold now: live clusters, nodes."""
        return UserLimits(**self._send(_RepoRoutes.limits(name or self.me().name)))

    def set_user_limits(self, name: str, *, max_clusters: int | None | EllipsisType = ...,
                        max_nodes: int | None | EllipsisType = ...) -> UserLimits:
        """(Admin) set how many live clusters, and nodes over them, ``name`` may hold.
        Leave a limit out to keep it; ``None`` clears it (the deployment's default applies)."""
        return UserLimits(**self._send(_RepoRoutes.set_limits(name, max_clusters, max_nodes)))

    # repositories
    def create_repo(self, name: str, private: bool = False, default_branch: str = "main",
                    description: str | None = None) -> RepoInfo:
        """``name`` is ``ml`` (yours) or ``owner/ml``."""
        return RepoInfo(**self._send(_RepoRoutes.create_repo(name, private, default_branch, description)))

    def repos(self, owner: str | None = None) -> list[RepoInfo]:
        return [RepoInfo(**r) for r in self._send(_RepoRoutes.repos(owner))]

    def repo(self, full_name: str) -> RepoInfo:
        return RepoInfo(**self._send(_RepoRoutes.repo(full_name)))

    def update_repo(self, full_name: str, *, private: bool | None = None, default_branch: str | None = None,
                    description: str | None = None) -> RepoInfo:
        body = {k: v for k, v in dict(private=private, default_branch=default_branch,
                                      description=description).items() if v is not None}
        return RepoInfo(**self._send(_RepoRoutes.repo(full_name, "PATCH", body)))

    def delete_repo(self, full_name: str) -> None:
        self._send(_RepoRoutes.repo(full_name, "DELETE"))

    def collaborators(self, full_name: str) -> list[CollaboratorInfo]:
        return [CollaboratorInfo(**c) for c in self._send(_RepoRoutes.collaborators(full_name))]

    def set_collaborator(self, full_name: str, user: str, level: str = "write") -> CollaboratorInfo:
        """Give ``user`` read, write or admin access."""
        return CollaboratorInfo(**self._send(_RepoRoutes.collaborator(full_name, user, level)))

    def remove_collaborator(self, full_name: str, user: str) -> None:
        self._send(_RepoRoutes.collaborator(full_name, user, None))

    # branches
    def branches(self, full_name: str) -> list[BranchInfo]:
        return [BranchInfo(**b) for b in self._send(_RepoRoutes.branches(full_name))]

    def create_branch(self, full_name: str, branch: str, from_: str | None = None) -> BranchInfo:
        return BranchInfo(**self._send(_RepoRoutes.create_branch(full_name, branch, from_)))

    def delete_branch(self, full_name: str, branch: str) -> None:
        self._send(_RepoRoutes.delete_branch(full_name, branch))

    # runs
    def runs(self, full_name: str, limit: int = 50) -> list[PushRunInfo]:
        return [PushRunInfo(**r) for r in self._send(_RepoRoutes.runs(full_name, limit))]

    def commit_status(self, full_name: str, rev: str) -> PushRunInfo:
        """The run a pushed commit started (``rev``: a sha, a unique prefix, or a branch)."""
        return PushRunInfo(**self._send(_RepoRoutes.commit_status(full_name, rev)))

    def wait_commit(self, full_name: str, rev: str, timeout: float | None = None, poll: float = 0.1) -> PushRunInfo:
        """Block until the commit's run has finished (SUCCEEDED, FAILED or SKIPPED)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                run = self.commit_status(full_name, rev)
                if run.status in PUSH_TERMINAL:
                    return run
            except NotFound:
                pass
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"the run of {rev} in {full_name} has not finished after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)


class AsyncReposMixin:
    """The asynchronous twin of :class:`ReposMixin`, for :class:`styx.sdk.client.AsyncClient`."""

    _send: Callable[[Request], Awaitable[Any]]  # from the transport it is mixed with

    async def create_user(self, name: str, admin: bool = False) -> UserCreated:
        return UserCreated(**await self._send(_RepoRoutes.create_user(name, admin)))

    async def users(self) -> list[UserInfo]:
        return [UserInfo(**u) for u in await self._send(_RepoRoutes.users())]

    async def me(self) -> UserInfo:
        return UserInfo(**await self._send(_RepoRoutes.me()))

    async def add_key(self, public_key: str | Path, user: str | None = None, title: str | None = None) -> KeyInfo:
        text = _public_key_text(public_key)
        user = user or (await self.me()).name
        return KeyInfo(**await self._send(_RepoRoutes.add_key(user, text, title)))

    async def keys(self, user: str | None = None) -> list[KeyInfo]:
        return [KeyInfo(**k) for k in await self._send(_RepoRoutes.keys(user or (await self.me()).name))]

    async def delete_key(self, key_id: int, user: str | None = None) -> None:
        await self._send(_RepoRoutes.delete_key(user or (await self.me()).name, key_id))

    async def tokens(self, user: str | None = None) -> list[TokenInfo]:
        return [TokenInfo(**t) for t in await self._send(_RepoRoutes.tokens(user or (await self.me()).name))]

    async def create_token(self, user: str | None = None, *, description: str | None = None,
                           expires: str | timedelta | int | None = None) -> TokenCreated:
        return TokenCreated(**await self._send(
            _RepoRoutes.create_token(user or (await self.me()).name, description, expires)))

    async def revoke_token(self, token_id: str, user: str | None = None) -> None:
        await self._send(_RepoRoutes.revoke_token(user or (await self.me()).name, token_id))

    async def disable_user(self, name: str) -> UserInfo:
        return UserInfo(**await self._send(_RepoRoutes.set_disabled(name, True)))

    async def enable_user(self, name: str) -> UserInfo:
        return UserInfo(**await self._send(_RepoRoutes.set_disabled(name, False)))

    async def user_limits(self, name: str | None = None) -> UserLimits:
        return UserLimits(**await self._send(_RepoRoutes.limits(name or (await self.me()).name)))

    async def set_user_limits(self, name: str, *, max_clusters: int | None | EllipsisType = ...,
                              max_nodes: int | None | EllipsisType = ...) -> UserLimits:
        return UserLimits(**await self._send(_RepoRoutes.set_limits(name, max_clusters, max_nodes)))

    async def create_repo(self, name: str, private: bool = False, default_branch: str = "main",
                          description: str | None = None) -> RepoInfo:
        return RepoInfo(**await self._send(_RepoRoutes.create_repo(name, private, default_branch, description)))

    async def repos(self, owner: str | None = None) -> list[RepoInfo]:
        return [RepoInfo(**r) for r in await self._send(_RepoRoutes.repos(owner))]

    async def repo(self, full_name: str) -> RepoInfo:
        return RepoInfo(**await self._send(_RepoRoutes.repo(full_name)))

    async def update_repo(self, full_name: str, *, private: bool | None = None, default_branch: str | None = None,
                          description: str | None = None) -> RepoInfo:
        body = {k: v for k, v in dict(private=private, default_branch=default_branch,
                                      description=description).items() if v is not None}
        return RepoInfo(**await self._send(_RepoRoutes.repo(full_name, "PATCH", body)))

    async def delete_repo(self, full_name: str) -> None:
        await self._send(_RepoRoutes.repo(full_name, "DELETE"))

    async def collaborators(self, full_name: str) -> list[CollaboratorInfo]:
        return [CollaboratorInfo(**c) for c in await self._send(_RepoRoutes.collaborators(full_name))]

    async def set_collaborator(self, full_name: str, user: str, level: str = "write") -> CollaboratorInfo:
        return CollaboratorInfo(**await self._send(_RepoRoutes.collaborator(full_name, user, level)))

    async def remove_collaborator(self, full_name: str, user: str) -> None:
        await self._send(_RepoRoutes.collaborator(full_name, user, None))

    async def branches(self, full_name: str) -> list[BranchInfo]:
        return [BranchInfo(**b) for b in await self._send(_RepoRoutes.branches(full_name))]

    async def create_branch(self, full_name: str, branch: str, from_: str | None = None) -> BranchInfo:
        return BranchInfo(**await self._send(_RepoRoutes.create_branch(full_name, branch, from_)))

    async def delete_branch(self, full_name: str, branch: str) -> None:
        await self._send(_RepoRoutes.delete_branch(full_name, branch))

    async def runs(self, full_name: str, limit: int = 50) -> list[PushRunInfo]:
        return [PushRunInfo(**r) for r in await self._send(_RepoRoutes.runs(full_name, limit))]

    async def commit_status(self, full_name: str, rev: str) -> PushRunInfo:
        return PushRunInfo(**await self._send(_RepoRoutes.commit_status(full_name, rev)))

    async def wait_commit(self, full_name: str, rev: str, timeout: float | None = None,
                          poll: float = 0.1) -> PushRunInfo:
        import asyncio  # here: a sync client never needs the event loop's modules

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                run = await self.commit_status(full_name, rev)
                if run.status in PUSH_TERMINAL:
                    return run
            except NotFound:
                pass
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"the run of {rev} in {full_name} has not finished after {timeout}s")
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 1.0)

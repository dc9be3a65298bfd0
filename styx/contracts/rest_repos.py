"""The REST shapes of users, keys, repositories, branches and push runs (API, SDK and CLI)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from styx.contracts.rest import RestModel


class UserCreate(RestModel):
    name: str = Field(description="1-64 letters, digits, '_', '.' or '-'")
    admin: bool = False


class UserInfo(RestModel):
    name: str
    is_admin: bool
    created_at: datetime
    #: A disabled user's tokens and SSH keys are refused.
    disabled: bool = False


class UserCreated(UserInfo):
    token: str = Field(description="the user's first API token: shown once, store it")


#: The largest per-user limit an admin may set (clusters or nodes).
MAX_USER_LIMIT = 100_000


class UserLimitsUpdate(RestModel):
    """Fields left out keep their value; null clears the user's own limit (the default applies)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt limit is an error, not a no-op

    max_clusters: int | None = Field(default=None, ge=0, le=MAX_USER_LIMIT,
                                     description="live clusters the user may hold; null: the default")
    max_nodes: int | None = Field(default=None, ge=0, le=MAX_USER_LIMIT,
                                  description="nodes over the user's live clusters; null: the default")


class UserLimits(RestModel):
    """A user's limits and what they hold now."""

    user: str
    is_admin: bool = Field(description="admins are not limited")
    max_clusters: int | None = Field(description="set on the user; null: the default applies")
    max_nodes: int | None = Field(description="set on the user; null: the default applies")
    default_max_clusters: int | None = Field(description="STYX_DEFAULT_MAX_CLUSTERS; null: no limit")
    default_max_nodes: int | None = Field(description="STYX_DEFAULT_MAX_NODES; null: no limit")
    effective_max_clusters: int | None = Field(description="what applies; null: no limit")
    effective_max_nodes: int | None = Field(description="what applies; null: no limit")
    clusters: int = Field(description="live clusters the user holds now")
    nodes: int = Field(description="nodes over those clusters")


#: The longest lifetime a new API token may be given.
MAX_TOKEN_SECONDS = 366 * 86400
_DURATION = re.compile(r"\s*(\d{1,6})\s*([dhm])\s*")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60}


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h`` or ``90m``; ValueError with a readable message otherwise.

    >>> parse_duration("30d"), parse_duration("12h")
    (2592000, 43200)
    """
    match = _DURATION.fullmatch(text or "")
    if match is None:
        raise ValueError(f"{text!r} is not a duration: write it like 30d, 12h or 90m")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


class TokenCreate(RestModel):
    description: str | None = Field(default=None, max_length=255)
    expires_in_seconds: int | None = Field(
        default=None, ge=60, le=MAX_TOKEN_SECONDS,
        description="lifetime of the token, 60 s to 366 days; none: it never expires")


class TokenInfo(RestModel):
    """An API token as its user may see it: never the secret."""

    id: str
    user: str
    description: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="to the minute")
    expired: bool = False


class TokenCreated(TokenInfo):
    token: str = Field(description="the API token: shown once, store it")


class KeyCreate(RestModel):
    public_key: str = Field(description="an OpenSSH public key line (ssh-ed25519 AAAA... comment)")
    title: str | None = Field(default=None, max_length=255)


class KeyInfo(RestModel):
    id: int
    user: str
    fingerprint: str
    title: str | None = None
    public_key: str
    created_at: datetime


class RepoCreate(RestModel):
    name: str = Field(description="the repository name, or owner/name")
    owner: str | None = Field(default=None, description="default: you (an admin may create for anyone)")
    private: bool = False
    default_branch: str = "main"
    description: str | None = Field(default=None, max_length=500)


class RepoUpdate(RestModel):
    private: bool | None = None
    default_branch: str | None = None
    description: str | None = Field(default=None, max_length=500)


class RepoInfo(RestModel):
    owner: str
    name: str
    full_name: str
    private: bool
    default_branch: str
    description: str | None = None
    created_at: datetime
    clone_http: str
    clone_ssh: str
    #: Your access: read, write or admin.
    permission: str


class CollaboratorSet(RestModel):
    level: Literal["read", "write", "admin"] = "write"


class CollaboratorInfo(RestModel):
    user: str
    level: str


class BranchCreate(RestModel):
    name: str
    from_: str | None = Field(default=None, alias="from", description="a branch, tag or commit (default: the default branch)")

    model_config = {"populate_by_name": True}


class BranchInfo(RestModel):
    name: str
    sha: str
    default: bool = False


class PushJobInfo(RestModel):
    """One job of a push run: a job on ``cluster`` (``job_id``), or for ``managed: true`` the
    managed job ``managed_id`` (``styx jobs logs <managed_id>``; ``cluster`` empty)."""

    name: str
    cluster: str
    job_id: int = 0
    managed: bool = False
    managed_id: int = 0
    status: str
    message: str | None = None
    workflow_id: str = ""
    workflow_url: str | None = None


class PushRunInfo(RestModel):
    repo: str
    sha: str
    ref: str
    pusher: str
    status: str
    message: str | None = None
    workflow_id: str
    workflow_url: str | None = None
    jobs: list[PushJobInfo] = []
    created_at: datetime
    updated_at: datetime

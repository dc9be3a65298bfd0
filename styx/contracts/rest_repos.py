"""The REST shapes of users, keys, repositories, branches and push runs (API, SDK and CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class UserCreate(BaseModel):
    name: str = Field(description="1-64 letters, digits, '_', '.' or '-'")
    admin: bool = False


class UserInfo(BaseModel):
    name: str
    is_admin: bool
    created_at: datetime


class UserCreated(UserInfo):
    token: str = Field(description="the user's first API token: shown once, store it")


class KeyCreate(BaseModel):
    public_key: str = Field(description="an OpenSSH public key line (ssh-ed25519 AAAA... comment)")
    title: str | None = Field(default=None, max_length=255)


class KeyInfo(BaseModel):
    id: int
    user: str
    fingerprint: str
    title: str | None = None
    public_key: str
    created_at: datetime


class RepoCreate(BaseModel):
    name: str = Field(description="the repository name, or owner/name")
    owner: str | None = Field(default=None, description="default: you (an admin may create for anyone)")
    private: bool = False
    default_branch: str = "main"
    description: str | None = Field(default=None, max_length=500)


class RepoUpdate(BaseModel):
    private: bool | None = None
    default_branch: str | None = None
    description: str | None = Field(default=None, max_length=500)


class RepoInfo(BaseModel):
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


class CollaboratorSet(BaseModel):
    level: Literal["read", "write", "admin"] = "write"


class CollaboratorInfo(BaseModel):
    user: str
    level: str


class BranchCreate(BaseModel):
    name: str
    from_: str | None = Field(default=None, alias="from", description="a branch, tag or commit (default: the default branch)")

    model_config = {"populate_by_name": True}


class BranchInfo(BaseModel):
    name: str
    sha: str
    default: bool = False


class PushJobInfo(BaseModel):
    name: str
    cluster: str
    job_id: int = 0
    managed: bool = False
    status: str
    message: str | None = None
    workflow_id: str = ""
    workflow_url: str | None = None


class PushRunInfo(BaseModel):
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

"""Who may do what to a repository: one function, asked by HTTP, SSH and the REST API alike.

>>> from styx.db import Repo, User
>>> repo = Repo(id=1, owner="alice", name="ml", private=True)
>>> access_level(User(name="alice"), repo).label, access_level(None, repo).label
('admin', 'none')
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from styx.gitserver.names import RepoName

if TYPE_CHECKING:
    from styx.db import Database, Repo, RepoCollaborator, User


class AccessLevel(enum.IntEnum):
    """Ordered: ``level >= AccessLevel.WRITE`` reads as it should."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> "AccessLevel":
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown access level {value!r}: use read, write or admin") from None


def access_level(user: "User | None", repo: "Repo | None",
                 collaborator: "RepoCollaborator | None" = None) -> AccessLevel:
    """The access ``user`` (None: anonymous) has to ``repo`` (None: it does not exist).

    Styx admins and the owner: admin. A collaborator: their level, and at least read
    when the repository is public. Anyone, anonymous included: read on a public repository.
    """
    if repo is None:
        return AccessLevel.NONE
    public = AccessLevel.NONE if repo.private else AccessLevel.READ
    if user is None:
        return public
    if user.is_admin or user.name == repo.owner:
        return AccessLevel.ADMIN
    if collaborator is not None and collaborator.user_name == user.name and collaborator.repo_id == repo.id:
        return max(AccessLevel.parse(str(collaborator.level)), public)
    return public


def resolve_access(db: "Database", user: "User | None", name: RepoName) -> tuple["Repo | None", AccessLevel]:
    """Look the repository and the user's collaboration up, then ask :func:`access_level`."""
    repo = db.repos.get(name.owner, name.name)
    if repo is None:
        return None, AccessLevel.NONE
    collaborator = None
    if user is not None and repo.id is not None and not user.is_admin and user.name != repo.owner:
        collaborator = db.repos.get_collaborator(repo.id, user.name)
    return repo, access_level(user, repo, collaborator)

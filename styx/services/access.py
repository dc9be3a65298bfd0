"""Who may do what to a cluster and its jobs: one function, asked by every cluster route of
the API and by the git push trigger alike (as ``styx.gitserver.access`` is for repositories).

- ``OWN``: admins (on every cluster), and the cluster's owner — the user who launched it.
  A cluster from before owners were recorded (``owner`` NULL) is the admins'.
- ``USE``: the users it is shared with: see it, queue jobs, read its jobs and logs, cancel
  their own jobs.
- ``NONE``: everyone else; to them the cluster does not exist (the API answers 404).

A disabled user has no access to anything. ``visible_clusters`` is the listing rule built on
it, ``visible`` the same filter over any rows; the REST listing and the dashboard's apply it
in SQL (``ClusterStore.page`` and ``numbered_page``: owned by or shared with the user).

>>> from styx.db import Cluster, User
>>> dev = Cluster(name="dev", owner="alice")
>>> [cluster_access(User(name=n), dev, ["bob"]).label for n in ("alice", "bob", "carol")]
['own', 'use', 'none']
>>> cluster_access(User(name="root", is_admin=True), dev).label
'own'
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from styx.contracts.clusters import ClusterStatus

if TYPE_CHECKING:
    from styx.db import Cluster, Database, Job, User



class _Listed(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def owner(self) -> str | None: ...


C = TypeVar("C", bound=_Listed)


class ClusterAccess(enum.IntEnum):
    """Ordered: ``access >= ClusterAccess.USE`` reads as it should."""

    NONE = 0
    USE = 1
    OWN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def cluster_access(user: "User | None", cluster: "Cluster | None",
                   shares: Collection[str] = ()) -> ClusterAccess:
    """The access ``user`` has to ``cluster`` (None: it does not exist), given the names of
    the users it is shared with. Only its ``owner`` is read."""
    if user is None or cluster is None or user.disabled:
        return ClusterAccess.NONE
    if user.is_admin or (cluster.owner is not None and cluster.owner == user.name):
        return ClusterAccess.OWN
    if user.name in shares:
        return ClusterAccess.USE
    return ClusterAccess.NONE


def visible(user: "User", clusters: Iterable[C], shares: Mapping[str, Collection[str]]) -> list[C]:
    """Those of ``clusters`` (rows, or anything with a ``name`` and an ``owner``) that ``user``
    may see, given each one's shares."""
    return [c for c in clusters if cluster_access(user, c, shares.get(c.name, ())) > ClusterAccess.NONE]


def visible_clusters(db: "Database", user: "User", *, include_gone: bool = False,
                     ) -> tuple[list["Cluster"], dict[str, list[str]]]:
    """The clusters ``user`` may see (their own, those shared with them; admins: all), by
    name, with the shares of each; TERMINATED ones only with ``include_gone``."""
    rows = [c for c in db.clusters.list() if include_gone or c.status != ClusterStatus.TERMINATED]
    shares = db.clusters.shares_of([c.name for c in rows])
    return visible(user, rows, shares), shares


def may_cancel(user: "User", access: ClusterAccess, job: "Job") -> bool:
    """Whether ``user``, with ``access`` to the job's cluster, may cancel ``job``: the
    cluster's owners may cancel any job, its users only their own."""
    return access >= ClusterAccess.OWN or (access >= ClusterAccess.USE and job.user == user.name)


def owner_label(cluster: "Cluster") -> str:
    """Who owns ``cluster``, for messages."""
    return cluster.owner or "the admins"


def resolve_cluster_access(db: "Database", user: "User | None",
                           name: str) -> tuple["Cluster | None", ClusterAccess, list[str]]:
    """Look the cluster and its shares up, then ask :func:`cluster_access`; returns the row,
    the access and the shares (the row is returned even when the access is NONE: callers
    must not show it)."""
    cluster = db.clusters.get(name)
    if cluster is None:
        return None, ClusterAccess.NONE, []
    shares = db.clusters.shares(name)
    return cluster, cluster_access(user, cluster, shares), shares

"""How much a launch may take: nodes per cluster on each provider, and what one user may hold.

Asked by every front door that starts a cluster (the REST API's launch and the git push
trigger's managed clusters), before anything starts:

- ``check_provider_nodes(settings, spec)``: a cluster bigger than its provider allows is bad
  input (``InvalidRequest`` naming ``task.num_nodes``, a 422): local clusters at most what the
  machine can host now (``Settings.local_capacity``; the local provider refuses too, as the
  last line of defence), AWS clusters at most ``STYX_AWS_MAX_NODES``. An SSH pool's bound is
  its host count, which only the worker reads: the provider refuses a cluster the pool cannot
  hold, and the cluster goes FAILED with the pool's free and busy hosts in its message.
- ``check_user_limits(db, settings, user, spec)``: a non-admin may hold at most so many live
  clusters (status not in ``CLUSTER_GONE``) and so many nodes over them — their own limits
  (``styx user limits``, stored on the user) or the deployment's defaults
  (``STYX_DEFAULT_MAX_CLUSTERS`` / ``STYX_DEFAULT_MAX_NODES``). Over them is ``LimitExceeded``
  (a 403), naming the limit and the usage. Admins are not limited.

The usage is read from the database, so two launches racing each other may both pass; the
limits bound what a user holds, not to the last node under concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

from styx.config import Settings
from styx.contracts.clusters import ClusterSpec
from styx.db import Database, User
from styx.services.launch import InvalidRequest


class LimitExceeded(PermissionError):
    """The launch would take the user over one of their limits; the message says which."""


@dataclass(frozen=True)
class Limits:
    """What applies to a user (None: no limit) and what they hold now."""

    max_clusters: int | None
    max_nodes: int | None
    clusters: int
    nodes: int


def effective_limits(settings: Settings, user: User) -> tuple[int | None, int | None]:
    """``(max_clusters, max_nodes)`` that apply to ``user``: None for no limit (admins)."""
    if user.is_admin:
        return None, None
    clusters = user.max_clusters if user.max_clusters is not None else settings.default_max_clusters
    nodes = user.max_nodes if user.max_nodes is not None else settings.default_max_nodes
    return clusters, nodes


def limits_of(db: Database, settings: Settings, user: User) -> Limits:
    max_clusters, max_nodes = effective_limits(settings, user)
    clusters, nodes = db.clusters.usage(user.name)
    return Limits(max_clusters, max_nodes, clusters, nodes)


def check_provider_nodes(settings: Settings, spec: ClusterSpec) -> None:
    """``InvalidRequest`` (``task.num_nodes``) if ``spec`` asks for more nodes than its
    provider allows one cluster."""
    if spec.provider == "local":
        capacity = settings.local_capacity()
        if spec.num_nodes > capacity.nodes:
            raise InvalidRequest("task.num_nodes", capacity.refusal(spec.num_nodes))
    elif spec.provider == "aws" and spec.num_nodes > settings.aws_max_nodes:
        raise InvalidRequest("task.num_nodes", f"{spec.num_nodes} AWS nodes asked for; one cluster may have at most "
                             f"{settings.aws_max_nodes} (STYX_AWS_MAX_NODES={settings.aws_max_nodes})")


def check_user_limits(db: Database, settings: Settings, user: User, spec: ClusterSpec) -> None:
    """``LimitExceeded`` if launching ``spec`` as a new cluster would take ``user`` over their
    limits. Call it only for a cluster that does not exist yet (a launch onto a live cluster
    adds a job, not a cluster)."""
    limits = limits_of(db, settings, user)
    fix = "; `styx down` one, or ask an admin to raise `styx user limits`"
    if limits.max_clusters is not None and limits.clusters + 1 > limits.max_clusters:
        raise LimitExceeded(f"{user.name} has {limits.clusters} of {limits.max_clusters} clusters{fix}")
    if limits.max_nodes is not None and limits.nodes + spec.num_nodes > limits.max_nodes:
        raise LimitExceeded(f"{user.name} has {limits.nodes} of {limits.max_nodes} nodes and cluster {spec.name!r} "
                            f"asks for {spec.num_nodes} more{fix}")

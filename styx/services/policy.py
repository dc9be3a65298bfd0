"""Who may run jobs where, beyond owning the cluster: one rule every front door asks.

Local nodes run jobs as a per-cluster unprivileged user only when Styx runs as root
(``Settings.local_isolation``). Otherwise jobs run as Styx's own user and can read
``STYX_HOME`` — the admin's credentials among it — so only admins may run jobs on local
clusters, unless the admin opts in with ``STYX_LOCAL_ALLOW_NONADMIN=1`` (a single-user
install, or users who are trusted anyway). The REST API's launch and exec and the git push
trigger all ask ``check_local_jobs``.
"""

from __future__ import annotations

from styx.config import Settings

LOCAL_NOT_ISOLATED = (
    "jobs on local clusters run as Styx's own user here (Styx does not run as root), where they "
    "could read Styx's credentials; only an admin may run them, unless the admin sets "
    "STYX_LOCAL_ALLOW_NONADMIN=1 where Styx runs"
)


class NotAllowed(PermissionError):
    """The user may not do this; the message says why and who can change it."""


def check_local_jobs(settings: Settings, provider: str, is_admin: bool) -> None:
    """Raise ``NotAllowed`` if a non-admin may not run jobs on a cluster of ``provider``."""
    if provider == "local" and not is_admin and not settings.local_isolation \
            and not settings.local_allow_nonadmin:
        raise NotAllowed(LOCAL_NOT_ISOLATED)

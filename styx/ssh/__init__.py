"""Async SSH primitives shared by every provider: local nodes, AWS instances, plain hosts.

Everything here runs against the local provider's node servers *and* against a stock
OpenSSH ``sshd``, so only plain SSH is used: environment variables travel inside the
command (``export K='…';``), not in an SSH ``env`` request (sshd drops those not listed
in ``AcceptEnv``); remote paths are relative to the login home (``~/x`` is accepted and
rewritten to ``x``, because SFTP servers do not expand ``~``); the remote login shell is
assumed POSIX (``sh``/``bash``) and the host to have ``setsid``, ``nohup`` and ``ps``.

The package, by module (everything public is importable from ``styx.ssh`` itself):

- ``keys``: the client key made once on disk (``ensure_client_key``, ``public_key_line``).
- ``connection``: ``NodeEndpoint``, ``connect``, ``run`` a short command, ``env_prefix``,
  and the errors (``SshError``, ``NodeUnreachable``, ``CommandTimeout``,
  ``RemoteCommandFailed``).
- ``pool``: ``SshPool``, one cached connection per node.
- ``phases``: detached job phases on a node (``start_phase``, ``phase_state``,
  ``kill_phase``, ``read_log``; ``JobCancelled``, ``PhaseStartFailed``) and the node-side
  scripts behind them; its docstring maps a job's directory on the node.
- ``sftp``: files over SFTP (``upload_file``, ``upload_dir``).
- ``nodefiles``: ``~/sky_workdir`` (``point_sky_workdir``), git workdirs (``git_clone``)
  and mounts to absolute paths (``link_absolute_mount``).

Example::

    key = ensure_client_key(Path("~/.styx/id_ed25519").expanduser())
    pool = SshPool(key)
    conn = await pool.get(node)
    pid = await start_phase(conn, "j1", "run", "python train.py", {"STYX_NODE_RANK": "0"})
    state = await phase_state(conn, "j1", "run")
    chunk = await read_log(conn, "j1", "run", offset=0, max_bytes=1 << 20)
"""

from styx.ssh.connection import (
    CommandTimeout,
    NodeEndpoint,
    NodeUnreachable,
    RemoteCommandFailed,
    SshError,
    connect,
    env_prefix,
    run,
)
from styx.ssh.keys import ClientKeyMissing, ensure_client_key, public_key_line, read_client_key
from styx.ssh.nodefiles import (
    FILE_MOUNTS_ROOT,
    GitCloneFailed,
    GitMissing,
    MountRefused,
    git_clone,
    link_absolute_mount,
    point_sky_workdir,
)
from styx.ssh.phases import (
    CANCELLED_EXIT_CODE,
    WORKDIR_ROOT,
    JobCancelled,
    PhaseStartFailed,
    PhaseState,
    kill_phase,
    phase_state,
    read_log,
    start_phase,
)
from styx.ssh.pool import SshPool
from styx.ssh.sftp import upload_dir, upload_file

__all__ = [
    "CANCELLED_EXIT_CODE",
    "ClientKeyMissing",
    "FILE_MOUNTS_ROOT",
    "WORKDIR_ROOT",
    "CommandTimeout",
    "GitCloneFailed",
    "GitMissing",
    "MountRefused",
    "JobCancelled",
    "NodeEndpoint",
    "NodeUnreachable",
    "PhaseStartFailed",
    "PhaseState",
    "RemoteCommandFailed",
    "SshError",
    "SshPool",
    "connect",
    "ensure_client_key",
    "env_prefix",
    "git_clone",
    "kill_phase",
    "link_absolute_mount",
    "phase_state",
    "point_sky_workdir",
    "public_key_line",
    "read_client_key",
    "read_log",
    "run",
    "start_phase",
    "upload_dir",
    "upload_file",
]

"""Keep a local node's jobs off the control plane's TCP ports, with Landlock.

Jobs on local nodes run as unprivileged per-cluster users, but on the loopback network they
could still connect to what Styx serves there without authentication — the embedded Temporal
dev server (through which a job could start or update workflows), a loopback PostgreSQL, a
worker's metrics port. Landlock (a Linux security module, unprivileged sandboxing) restricts
TCP ``connect`` by *port* from its ABI 4 (Linux 6.7) on: a ruleset that handles
``LANDLOCK_ACCESS_NET_CONNECT_TCP`` refuses, with ``EACCES``, every connect to a port no rule
allows. Rules are allow-lists, so ``deny_tcp_connect`` allows every port (0..65535) except
the ones given.

The node server applies it to *itself* (``restrict_self``), at start, before it starts any
thread or child: a Landlock domain is inherited by every thread and child made after, across
``setuid`` and ``execve``, and can never be lifted — so every session's command, whatever
user it runs as and whatever it executes (setuid programs included), stays inside it, and no
``preexec_fn`` is needed in the forked children. The node server itself never connects
anywhere. Only ``connect`` is handled: binding and listening, UDP and Unix sockets are not
restricted by this. The rule is by port, not address: a job cannot reach these ports on any
host (IPv4 or IPv6).

ctypes only; the syscall numbers (444, 445, 446) are the same on every Linux architecture
(they come after the unified syscall table's renumbering).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterable

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_ACCESS_NET_CONNECT_TCP = 1 << 1
LANDLOCK_RULE_NET_PORT = 2
PR_SET_NO_NEW_PRIVS = 38
#: First Landlock ABI that restricts TCP ports.
NET_ABI = 4


class _RulesetAttr(ctypes.Structure):
    # The ABI 4 layout; the kernel accepts a shorter struct than its own (later fields 0).
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _NetPortAttr(ctypes.Structure):
    _pack_ = 1  # struct landlock_net_port_attr is __attribute__((packed))
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class NetGuardUnavailable(OSError):
    """Landlock cannot restrict TCP ports here (not Linux, Landlock off, ABI < 4)."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if platform.system() != "Linux":
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                           ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def build_ruleset(denied_ports: Iterable[int]) -> int:
    """A Landlock ruleset fd allowing TCP connect to every port but ``denied_ports``.

    About 65,000 ``landlock_add_rule`` calls (measured: ~0.2 s). Raises
    ``NetGuardUnavailable`` when the kernel cannot restrict ports."""
    denied = {int(p) for p in denied_ports}
    bad = [p for p in denied if not 0 < p < 65536]
    if bad:
        raise ValueError(f"ports to deny must be 1..65535, got {sorted(bad)}")
    version = abi_version()
    if version < NET_ABI:
        raise NetGuardUnavailable(
            errno.EOPNOTSUPP,
            f"Landlock ABI {version} cannot restrict TCP ports (needs {NET_ABI}, Linux 6.7+)"
            if version else "Landlock is not available (not Linux, too old, or not enabled)")
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    attr = _RulesetAttr(0, LANDLOCK_ACCESS_NET_CONNECT_TCP)
    fd = _check(libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)),
                "landlock_create_ruleset")
    try:
        rule = _NetPortAttr(LANDLOCK_ACCESS_NET_CONNECT_TCP, 0)
        ref = ctypes.byref(rule)
        add = libc.syscall
        nr, kind, flags = ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(LANDLOCK_RULE_NET_PORT), ctypes.c_uint32(0)
        for port in range(65536):  # port 0: connect(AF_UNSPEC)-style and "any port" callers
            if port in denied:
                continue
            rule.port = port
            _check(add(nr, ctypes.c_int(fd), kind, ref, flags), f"landlock_add_rule(port {port})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict_self(ruleset_fd: int) -> None:
    """Put the calling thread (and every thread and child it makes after) in the ruleset's
    Landlock domain, for good. Without CAP_SYS_ADMIN the kernel wants no_new_privs first,
    which is then set."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
    if result < 0 and ctypes.get_errno() == errno.EPERM:
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        result = libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
    _check(result, "landlock_restrict_self")


def deny_tcp_connect(ports: Iterable[int]) -> None:
    """Refuse (EACCES) TCP connects to ``ports`` from this process — which must have a single
    thread — and everything it starts from now on. Raises ``NetGuardUnavailable`` when the
    kernel cannot (the caller decides whether to go on)."""
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads != 1:
        raise RuntimeError(f"deny_tcp_connect must run before any thread starts ({threads} running)")
    fd = build_ruleset(ports)
    try:
        restrict_self(fd)
    finally:
        os.close(fd)

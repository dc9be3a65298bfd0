"""A local provider's node: one small SSH server process with its own home directory.

Run as::

    python -m styx.providers.local.nodeserver --home DIR --host 127.0.0.1 --port 0 \\
        --host-key FILE --ready-file FILE [--authorized-keys FILE] [--run-as USER] \\
        [--deny-port PORT ...]

It behaves like a freshly booted VM that the SSH client activities can reach: public-key
login against ``--authorized-keys`` and ``DIR/.ssh/authorized_keys`` (both re-read on every
connection), exec and shell requests run by ``bash`` with ``HOME=DIR``, ``cwd=DIR`` and a
clean environment (none of Styx's variables, no virtualenv on ``PATH``), and SFTP confined
to ``DIR`` (``~`` is the root). When it listens it writes ``{"pid", "host", "port"}`` to the
ready file (atomically); SIGTERM or SIGINT stop it cleanly, killing the commands its SSH
sessions are still running (detached jobs, started with ``setsid``, are not its business).

With ``--run-as USER`` (the server runs as root; Linux) the node is that user's, as a VM
would be its login user's: every session's command runs as USER (its uid and group, no
supplementary groups, ``PATH`` as sshd sets it), a terminal is handed to USER, and
everything the server itself does in the home — SFTP operations, reading
``~/.ssh/authorized_keys`` — runs in threads whose file-system uid and gid are USER's
(``setfsuid``), so files land owned by USER and a symlink USER planted reaches only what
USER may reach. The server's own files (host key, ready file) stay root's.

With ``--failsafe-file FILE`` the server watches the node's failsafe deadline (see
``failsafe``): once it passed with no push from Styx, the server kills the node's jobs,
writes ``failsafe_fired.json`` beside FILE and exits, as a VM that stopped itself.

With ``--deny-port PORT`` (repeatable; the provider passes the control plane's loopback ports
when jobs run as a job user) the server puts itself, before it starts anything, in a Landlock
domain that refuses TCP connects to those ports (``netguard``); every session's command
inherits it. Where Landlock cannot restrict ports (ABI < 4) it logs a warning and goes on.

How commands are run follows measurements of asyncssh 2.24 (see the SSH node notes):
children get raw ``os.pipe()`` descriptors that are handed to ``process.redirect`` with
``send_eof=False`` (so neither stream's tail is lost) and ``encoding=None`` (binary safe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ctypes
import fcntl
import functools
import grp
import json
import logging
import os
import posixpath
import pwd
import signal
import stat
import struct
import sys
import termios
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from styx.files import atomic_write
from styx.providers.local import failsafe, netguard, procs

log = logging.getLogger("styx.providers.local.nodeserver")

T = TypeVar("T")

#: ``PATH`` for a job user's sessions: what OpenSSH's sshd sets (the server's own PATH
#: may name directories only root can read, and Styx's virtualenv).
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Variables of the server's environment never handed to a session's command.
_PRIVATE_ENV = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")
#: Largest ``authorized_keys`` file read.
_MAX_KEYS_FILE = 1 << 20


# ---------------------------------------------------------------------------------------
# The job user, and threads that touch files as that user


@dataclass(frozen=True)
class RunAs:
    """The user a node's sessions run as (``--run-as``)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)


def _set_thread_fs_ids(uid: int, gid: int) -> None:
    """Give the calling thread (only: the kernel keeps these per thread, and glibc does not
    broadcast them) the file-system uid and gid of the job user. Raises if it did not take."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsgid(gid)
    libc.setfsuid(uid)
    # Called with an invalid id, each returns the current one without changing it.
    if libc.setfsuid(0xFFFFFFFF) != uid or libc.setfsgid(0xFFFFFFFF) != gid:
        raise PermissionError(f"setfsuid({uid})/setfsgid({gid}) did not take effect")


def _user_fs_executor(user: RunAs) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(4, thread_name_prefix=f"fs-{user.name}",
                              initializer=_set_thread_fs_ids, initargs=(user.uid, user.gid))


def _read_keys_file(path: Path) -> str:
    """A small regular file's text ('' if missing); never blocks on a FIFO or a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, _MAX_KEYS_FILE).decode(errors="replace")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Files


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Load the node's host key, generating an ed25519 key (and ``path.pub``) if missing."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    atomic_write(path.with_name(path.name + ".pub"), key.export_public_key(), 0o644)
    atomic_write(path, key.export_private_key(), 0o600)
    return key


# ---------------------------------------------------------------------------------------
# SSH server


class NodeSSHServer(asyncssh.SSHServer):
    """Public-key auth only, against ``--authorized-keys`` and the home's
    ``authorized_keys`` (read as the job user), both re-read per login."""

    def __init__(self, node: NodeServer) -> None:
        self._node = node
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    async def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        texts = []
        sources: list[tuple[Path, bool]] = [(self._node.home / ".ssh" / "authorized_keys", True)]
        if self._node.authorized_keys is not None:
            sources.insert(0, (self._node.authorized_keys, False))
        for path, in_home in sources:
            try:
                text = await (self._node.as_user(_read_keys_file, path) if in_home else
                              asyncio.to_thread(_read_keys_file, path))
                asyncssh.import_authorized_keys(text)  # one bad file must not spoil the other
                texts.append(text)
            except (OSError, ValueError) as exc:
                log.warning("ignoring %s (%s)", path, exc)
        if not texts:
            log.warning("no usable authorized keys: refusing logins")
        self._conn.set_authorized_keys(asyncssh.import_authorized_keys("\n".join(texts)))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


class _HomeSFTPServer(asyncssh.SFTPServer):
    """SFTP confined to the node's home, with ``~`` meaning that home.

    ``asyncssh.SFTPServer(chroot=…)`` maps absolute and ``..`` paths into the root; on top
    of it a leading ``~`` maps to the root (``~/x`` is a common way to name files in the
    home), and ``readlink`` of a relative link returns the link text unchanged (the stock
    chroot code resolved it against the server process's cwd).

    This confines the *SFTP API*, not the user: symlinks already in the home that point
    outside are followed — which is why, with a job user, every file operation runs with
    that user's file-system ids (``NodeSFTPServer``).
    """

    def __init__(self, chan: asyncssh.SSHServerChannel, home: Path) -> None:
        super().__init__(chan, chroot=os.fsencode(home))

    def map_path(self, path: bytes) -> bytes:
        if path == b"~" or path.startswith(b"~/"):
            path = b"/" + path[1:].lstrip(b"/")
        return super().map_path(path)

    def readlink(self, path: bytes) -> bytes:
        target = os.readlink(self.map_path(path))
        if not posixpath.isabs(target):
            return target
        return self.reverse_map_path(os.path.realpath(target))

    def listdir(self, path: bytes) -> list[asyncssh.SFTPName]:
        """The directory's entries with their attributes, read in one go (asyncssh's
        ``scandir`` uses this when it exists)."""
        local = self.map_path(path)
        names = [asyncssh.SFTPName(n, attrs=asyncssh.SFTPAttrs.from_local(os.lstat(posixpath.join(local, n))))
                 for n in (b".", b"..")]
        with os.scandir(local) as entries:
            for entry in entries:
                attrs = asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
                names.append(asyncssh.SFTPName(os.fsencode(entry.name), attrs=attrs))
        return names


#: asyncssh.SFTPServer members that touch no file (pure path mapping, formatting, the
#: channel): the only ones NodeSFTPServer leaves in the event loop's (root) thread.
#: Every other method — including any a newer asyncssh adds — runs in the user's threads.
SFTP_NO_FILE_ACCESS = frozenset({
    "__init__", "channel", "connection", "env", "logger", "convert_attrs", "_to_sftpname",
    "format_user", "format_group", "format_longname", "map_path", "reverse_map_path", "exit",
    "scandir",  # iterates listdir(), which is wrapped
})


def _runs_as_user(name: str) -> Callable[..., Any]:
    impl = getattr(_HomeSFTPServer, name)

    @functools.wraps(impl)
    def method(self: NodeSFTPServer, *args: Any) -> Any:
        if self._as_user is None:
            return impl(self, *args)
        return self._as_user(impl, self, *args)

    return method


class NodeSFTPServer(_HomeSFTPServer):
    """``_HomeSFTPServer`` whose file operations run through ``as_user`` (the node's job
    user's threads) when there is one; the wrappers are made for every method of
    asyncssh's SFTPServer not in ``SFTP_NO_FILE_ACCESS``."""

    def __init__(self, chan: asyncssh.SSHServerChannel, home: Path,
                 as_user: Callable[..., Any] | None = None) -> None:
        super().__init__(chan, home)
        self._as_user = as_user


for _name, _member in [*vars(asyncssh.SFTPServer).items(), ("listdir", _HomeSFTPServer.listdir)]:
    if _name not in SFTP_NO_FILE_ACCESS and callable(_member) and not _name.startswith("__"):
        setattr(NodeSFTPServer, _name, _runs_as_user(_name))


class NodeServer:
    """The SSH listener of one node and the commands its sessions run."""

    def __init__(self, home: Path, host_key: asyncssh.SSHKey, *, authorized_keys: Path | None = None,
                 run_as: RunAs | None = None) -> None:
        self.home = home.resolve()
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.run_as = run_as
        self._fs = _user_fs_executor(run_as) if run_as is not None else None
        self._listener: asyncssh.SSHAcceptor | None = None
        #: Process groups of running exec/shell children, killed on shutdown.
        self._children: set[int] = set()

    def as_user(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` in a thread with the job user's file-system ids (or, without
        a job user, in a plain thread)."""
        return asyncio.get_running_loop().run_in_executor(self._fs, functools.partial(fn, *args))

    async def listen(self, host: str, port: int, *, any_port_fallback: bool = False) -> int:
        """Start listening; returns the bound port.

        With ``any_port_fallback`` a taken ``port`` is replaced by a free one (so a
        restarted node keeps its previous port when it can).
        """
        kwargs: dict[str, Any] = dict(
            server_factory=lambda: NodeSSHServer(self),
            server_host_keys=[self.host_key],
            process_factory=self._handle_process,
            sftp_factory=lambda chan: NodeSFTPServer(
                chan, self.home, self.as_user if self.run_as is not None else None),
            encoding=None,
            line_editor=False,  # a pty session gets a real pty; the shell edits lines
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            config=None,
        )
        try:
            self._listener = await asyncssh.create_server(host=host, port=port, **kwargs)
        except OSError as exc:
            if not (any_port_fallback and port and exc.errno == errno.EADDRINUSE):
                raise
            log.info("port %d taken, listening on a free one", port)
            self._listener = await asyncssh.create_server(host=host, port=0, **kwargs)
        return self._listener.get_port()

    async def close(self) -> None:
        """Stop listening, kill the commands of open sessions, close the connections."""
        if self._listener is not None:
            self._listener.close()
        for pgid in list(self._children):
            _kill_group(pgid, signal.SIGTERM)
        if self._children:
            await asyncio.sleep(0.2)
            for pgid in list(self._children):
                _kill_group(pgid, signal.SIGKILL)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 2)
        if self._fs is not None:
            self._fs.shutdown(wait=False, cancel_futures=True)

    def _child_env(self, process: asyncssh.SSHServerProcess) -> dict[str, str]:
        """A fresh login's environment: the locale, ``PATH`` (sshd's for a job user; else
        the server's, without Styx's virtualenv), the user's names, then what the client
        sent. Nothing of Styx's own (``STYX_*``, ``VIRTUAL_ENV`` …)."""
        if self.run_as is not None:
            env = {k: v for k, v in os.environ.items() if k in ("LANG", "LANGUAGE", "TZ") or k.startswith("LC_")}
            env.update(PATH=STANDARD_PATH, USER=self.run_as.name, LOGNAME=self.run_as.name, SHELL="/bin/bash")
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("STYX_") and k not in _PRIVATE_ENV}
            env["PATH"] = _path_without_venv(env.get("PATH", "")) or STANDARD_PATH
        for key, value in process.env.items():
            k = key.decode(errors="surrogateescape") if isinstance(key, bytes) else str(key)
            v = (
                value.decode(errors="surrogateescape")
                if isinstance(value, bytes)
                else str(value)
            )
            env[k] = v
        env["HOME"] = str(self.home)
        env["PWD"] = str(self.home)
        term = process.get_terminal_type()
        if term:
            env["TERM"] = term
        return env

    async def _handle_process(self, process: asyncssh.SSHServerProcess) -> None:
        """Run one exec or shell request to completion; never raises."""
        try:
            if process.get_terminal_type():
                rc = await self._run_with_pty(process)
            else:
                rc = await self._run_with_pipes(process)
        except Exception:  # noqa: BLE001 - an escaping error would drop the connection
            log.exception("session failed")
            rc = 255
        with contextlib.suppress(Exception):
            if rc < 0:
                try:
                    name = signal.Signals(-rc).name.removeprefix("SIG")
                except ValueError:
                    name = "KILL"
                process.exit_with_signal(name)
            else:
                process.exit(rc)
        with contextlib.suppress(Exception):
            # Lets asyncssh finish its own cleanup tasks for the redirected pipes.
            await asyncio.wait_for(process.wait_closed(), 5)

    def _argv(self, process: asyncssh.SSHServerProcess) -> list[str]:
        command = process.command
        if command is None:
            # A shell request: like sshd, run the shell; without a terminal it reads the
            # commands from stdin.
            return ["bash", "-i"] if process.get_terminal_type() else ["bash", "-s"]
        if isinstance(command, bytes):
            command = command.decode(errors="surrogateescape")
        return ["bash", "-c", command]

    def _credentials(self) -> dict[str, Any]:
        """subprocess arguments that make a child the job user (nothing without one)."""
        if self.run_as is None:
            return {}
        return {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}

    async def _run_with_pipes(self, process: asyncssh.SSHServerProcess) -> int:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec(
                *self._argv(process),
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                cwd=self.home,
                env=self._child_env(process),
                start_new_session=True,
                **self._credentials(),
            )
        except BaseException:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        return await self._serve_child(process, child, in_w, out_r, err_r, tty=None)

    async def _run_with_pty(self, process: asyncssh.SSHServerProcess) -> int:
        master, slave = os.openpty()
        _set_winsize(slave, *process.get_terminal_size())
        if self.run_as is not None:
            # As sshd does: the terminal is the user's (group tty, mode 0620).
            try:
                tty_gid = grp.getgrnam("tty").gr_gid
            except KeyError:
                tty_gid = self.run_as.gid
            os.fchown(slave, self.run_as.uid, tty_gid)
            os.fchmod(slave, 0o620)

        def make_controlling_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            child = await asyncio.create_subprocess_exec(
                *self._argv(process),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.home,
                env=self._child_env(process),
                start_new_session=True,
                preexec_fn=make_controlling_tty,
                **self._credentials(),
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        os.close(slave)
        return await self._serve_child(process, child, os.dup(master), master, None, tty=master)

    async def _serve_child(
        self,
        process: asyncssh.SSHServerProcess,
        child: asyncio.subprocess.Process,
        stdin_fd: int,
        stdout_fd: int,
        stderr_fd: int | None,
        tty: int | None,
    ) -> int:
        """Connect a started child to the channel; returns its returncode."""
        self._children.add(child.pid)
        process.set_redirect_pid(-child.pid)
        pump = asyncio.create_task(_pump_stdin(process, stdin_fd, child.pid, tty))
        try:
            # Output goes through asyncssh's redirect (raw fds, send_eof=False: measured
            # safe). Stdin does not: see _pump_stdin.
            if stderr_fd is None:
                await process.redirect(
                    stdout=os.fdopen(stdout_fd, "rb", buffering=0), send_eof=False
                )
            else:
                await process.redirect(
                    stdout=os.fdopen(stdout_fd, "rb", buffering=0),
                    stderr=os.fdopen(stderr_fd, "rb", buffering=0),
                    send_eof=False,
                )
            await process.stdout.drain()
            if stderr_fd is not None:
                await process.stderr.drain()
            return await child.wait()
        finally:
            self._children.discard(child.pid)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump


class _PipeSink(asyncio.Protocol):
    """Flow control for a write pipe: writers await ``writable`` between chunks."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()


async def _pump_stdin(
    process: asyncssh.SSHServerProcess, fd: int, pgid: int, tty: int | None
) -> None:
    """Copy the channel's stdin to the child's stdin pipe (or pty), then close it.

    asyncssh's own ``redirect(stdin=pipe)`` lost the tail of stdin in ~1 of 150 runs
    (256 KB piped to ``cat``): when the pipe drains, asyncio's write-pipe transport resumes
    the protocol, asyncssh synchronously writes more and then EOF, and the transport
    closes the pipe with that data still buffered. Here each chunk is written only after
    the pipe has room, from this task, so EOF always follows the last byte.
    Signals, breaks and window changes arrive on the stdin stream as exceptions.
    """
    loop = asyncio.get_running_loop()
    sink = _PipeSink()
    transport, _ = await loop.connect_write_pipe(lambda: sink, os.fdopen(fd, "wb", buffering=0))
    try:
        while True:
            try:
                data = await process.stdin.read(1 << 16)
            except asyncssh.SignalReceived as exc:
                sig = getattr(signal, f"SIG{exc.signal}", None)
                if sig is not None:
                    _kill_group(pgid, sig)
                continue
            except asyncssh.BreakReceived:
                _kill_group(pgid, signal.SIGINT)
                continue
            except asyncssh.TerminalSizeChanged as exc:
                if tty is not None:
                    _set_winsize(tty, *exc.term_size)
                    _kill_group(pgid, signal.SIGWINCH)
                continue
            except (asyncssh.Error, OSError):
                break
            if not data:
                break
            if sink.closed:
                continue  # the child closed its stdin: drop the rest, as sshd does
            transport.write(data)
            await sink.writable.wait()
    finally:
        transport.close()


def _set_winsize(fd: int, width: int, height: int, pixwidth: int, pixheight: int) -> None:
    if width and height:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))


def _path_without_venv(path: str) -> str:
    """``path`` without the directories of the virtualenv this server runs from (a job's
    ``pip install`` must not land in Styx's environment)."""
    if sys.prefix == sys.base_prefix:
        return path
    venv = os.path.realpath(sys.prefix)
    kept = [d for d in path.split(os.pathsep)
            if d and os.path.realpath(d) != venv and not os.path.realpath(d).startswith(venv + os.sep)]
    return os.pathsep.join(kept)


async def _kill_node_jobs(home: Path, run_as: RunAs | None) -> None:
    """What stopping a VM does to its processes: every job under this node's home (with a
    job user, every process of that user), TERM then KILL."""
    def leftovers() -> list[int]:
        if run_as is not None:
            return procs.processes_of_user(run_as.uid)
        return procs.processes_of([str(home)], procs.job_groups([str(home)]))

    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
        for pid in leftovers():
            procs.kill(pid, sig)
        for _ in range(int(wait * 10)):
            if not leftovers():
                return
            await asyncio.sleep(0.1)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ---------------------------------------------------------------------------------------
# Entry point


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m styx.providers.local.nodeserver", description=__doc__.split("\n")[0])
    p.add_argument("--home", type=Path, required=True, help="the node's home directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    p.add_argument(
        "--port-fallback",
        action="store_true",
        help="if --port is taken, listen on any free port instead of failing",
    )
    p.add_argument("--host-key", type=Path, required=True, help="private host key file")
    p.add_argument("--ready-file", type=Path, required=True, help="JSON written when listening")
    p.add_argument("--authorized-keys", type=Path, help="keys let in besides ~/.ssh/authorized_keys")
    p.add_argument("--run-as", metavar="USER", help="run sessions as USER (the server runs as root)")
    p.add_argument("--deny-port", type=int, action="append", default=[], metavar="PORT",
                   help="refuse TCP connects to PORT from sessions (Landlock; repeatable)")
    p.add_argument("--failsafe-file", type=Path, metavar="FILE",
                   help="the node's failsafe deadline (JSON); when it passed, kill the jobs and exit")
    p.add_argument("--failsafe-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often the failsafe deadline is looked at")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Listen until SIGTERM/SIGINT, then shut down."""
    args.home.mkdir(parents=True, exist_ok=True)
    run_as = None
    if args.run_as:
        if os.geteuid() != 0 or not hasattr(ctypes.CDLL(None), "setfsuid"):
            raise SystemExit("--run-as needs the server to run as root, on Linux")
        run_as = RunAs.lookup(args.run_as)
        os.setgroups([])  # root needs no groups; the user's file threads must have none
    server = NodeServer(args.home, load_or_create_host_key(args.host_key),
                        authorized_keys=args.authorized_keys, run_as=run_as)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await server.listen(args.host, args.port, any_port_fallback=args.port_fallback)
    atomic_write(args.ready_file, json.dumps({"pid": os.getpid(), "host": args.host, "port": port}), 0o600)
    log.info("listening on %s:%d, home %s", args.host, port, server.home)
    watcher = None
    if args.failsafe_file is not None:
        async def fire(action: str) -> None:
            await _kill_node_jobs(server.home, run_as)
            stop.set()

        watcher = asyncio.create_task(failsafe.watch(args.failsafe_file, args.failsafe_interval, fire))
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        with contextlib.suppress(OSError, ValueError):
            ready = json.loads(args.ready_file.read_text())
            if ready.get("pid") == os.getpid():
                args.ready_file.unlink()
        await server.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # A client that sends stdin to a command which does not read it makes asyncio log a
    # warning per write to the closed pipe; sshd drops that data silently too.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if args.deny_port:
        # Before asyncio.run: no thread or child exists yet, so all of them inherit it.
        try:
            netguard.deny_tcp_connect(args.deny_port)
        except netguard.NetGuardUnavailable as exc:
            log.warning("jobs can connect to the control plane's ports %s: %s",
                        sorted(set(args.deny_port)), exc)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

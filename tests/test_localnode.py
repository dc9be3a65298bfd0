"""The local provider's nodes: real SSH server processes on loopback, real SSH clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from styx import ssh
from styx.providers.local.provider import LocalProvider
from styx.ssh import NodeEndpoint, SshPool
from tests.fixtures.processes import pid_alive
from tests.fixtures.stack import wait_for_async


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> asyncssh.SSHKey:
    return ssh.ensure_client_key(tmp_path_factory.mktemp("keys") / "id_ed25519")


@pytest_asyncio.fixture
async def provider(
    tmp_path: Path, client_key: asyncssh.SSHKey
) -> AsyncIterator[LocalProvider]:
    prov = LocalProvider(tmp_path / "local", ssh.public_key_line(client_key))
    try:
        yield prov
    finally:
        for cluster in prov.list_clusters():
            await prov.terminate(cluster, None)
        assert _node_servers(prov.root) == []


# -- helpers ----------------------------------------------------------------------------


def _node_servers(root: Path) -> list[int]:
    """Live styx.providers.local.nodeserver processes whose home is under ``root``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"styx.providers.local.nodeserver" in argv and any(a.startswith(os.fsencode(root)) for a in argv):
            if pid_alive(int(entry)):
                out.append(int(entry))
    return out


def _processes_with_home(home: str) -> list[int]:
    mark = b"HOME=" + os.fsencode(home)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def _sleeps(home: str) -> int:
    """How many ``sleep`` processes run with ``home`` as their HOME."""
    count = 0
    for pid in _processes_with_home(home):
        try:
            count += Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        except OSError:
            continue
    return count


async def _connect(node: NodeEndpoint, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await ssh.connect(node, key)


# -- provisioning -----------------------------------------------------------------------


async def test_provision_twice_still_runs_two_node_processes(provider: LocalProvider):
    first = await provider.provision("c", 2, {})
    again = await provider.provision("c", 2, {})
    concurrent = await asyncio.gather(provider.provision("c", 2, {}), provider.provision("c", 2, {}))

    assert [n["rank"] for n in first.nodes] == [0, 1] and first.region is None
    assert again == first and concurrent[0] == first and concurrent[1] == first
    assert len(_node_servers(provider.root)) == 2
    described = await provider.describe_nodes("c", None)
    assert [d["alive"] for d in described] == [True, True]
    assert sorted(d["pid"] for d in described) == sorted(_node_servers(provider.root))


async def test_a_fresh_provider_after_a_worker_crash_reuses_running_nodes(
    provider: LocalProvider, client_key: asyncssh.SSHKey
):
    nodes = (await provider.provision("c", 2, {})).endpoints()
    pids = sorted(_node_servers(provider.root))
    # A new worker process knows nothing in memory: it finds the nodes on disk.
    reborn = LocalProvider(provider.root, ssh.public_key_line(client_key))
    assert (await reborn.provision("c", 2, {})).endpoints() == nodes
    assert sorted(_node_servers(provider.root)) == pids


async def test_each_node_has_its_own_loopback_ip_seen_by_jobs(
    provider: LocalProvider, pool: SshPool
):
    nodes = (await provider.provision("c", 2, {})).endpoints()
    ips = [n.ip for n in nodes]
    assert len(set(ips)) == 2 and all(ip.startswith("127.") for ip in ips)
    for node in nodes:
        conn = await pool.get(node)
        status, out, _ = await ssh.run(conn, 'echo "$SSH_HOST_SEEN"; pwd; echo "$HOME"',
                                           env={"SSH_HOST_SEEN": node.ip})
        assert status == 0
        home = Path(provider.root, "c", f"node-{node.rank}", "home")
        assert out.decode().split() == [node.ip, str(home), str(home)]


async def test_a_killed_node_server_is_restarted_by_provision(
    provider: LocalProvider, pool: SshPool
):
    nodes = (await provider.provision("c", 2, {})).endpoints()
    conn = await pool.get(nodes[1])
    await ssh.run(conn, "echo kept > file.txt")
    victim = (await provider.describe_nodes("c", None))[1]["pid"]
    os.kill(victim, signal.SIGKILL)

    async def node_1_down() -> bool:
        return [d["alive"] for d in await provider.describe_nodes("c", None)] == [True, False]

    await wait_for_async(node_1_down, 10, "node 1 to be seen down")

    again = (await provider.provision("c", 2, {})).endpoints()
    assert again[0] == nodes[0]
    assert again[1].ip == nodes[1].ip and again[1].host_key == nodes[1].host_key
    conn = await pool.get(again[1])
    assert (await ssh.run(conn, "cat file.txt"))[1] == b"kept\n"
    assert len(_node_servers(provider.root)) == 2


async def test_stop_kills_jobs_and_servers_and_start_brings_back_the_homes(
    provider: LocalProvider, pool: SshPool, client_key: asyncssh.SSHKey
):
    nodes = (await provider.provision("c", 2, {})).endpoints()
    homes = [str(provider.root / "c" / f"node-{n.rank}" / "home") for n in nodes]
    for node in nodes:
        conn = await pool.get(node)
        await ssh.run(conn, "mkdir -p data && echo precious > data/f")
        await ssh.start_phase(conn, "j1", "run", "sleep 1000 & sleep 1000")
    # A command still running in an SSH session dies with the node too.
    session = await _connect(nodes[0], client_key)
    hanging = asyncio.create_task(ssh.run(session, "sleep 1000"))
    # Each job's two sleeps, and the session's on node 0.
    await wait_for_async(lambda: [_sleeps(h) for h in homes] == [3, 2], 10, "every sleep to run")
    assert all(len(_processes_with_home(h)) >= 3 for h in homes)

    await provider.stop("c", None)
    await provider.stop("c", None)  # twice is fine

    assert _node_servers(provider.root) == []
    assert all(_processes_with_home(h) == [] for h in homes)
    # The node's session ends either way: signalled, or cut with no exit status.
    (outcome,) = await asyncio.gather(asyncio.wait_for(hanging, 5), return_exceptions=True)
    assert isinstance(outcome, ssh.NodeUnreachable) or outcome[0] < 0
    assert [d["alive"] for d in await provider.describe_nodes("c", None)] == [False, False]

    restarted = (await provider.start("c", None)).endpoints()
    assert [n.ip for n in restarted] == [n.ip for n in nodes]
    assert [n.host_key for n in restarted] == [n.host_key for n in nodes]
    for node in restarted:
        conn = await pool.get(node)
        assert (await ssh.run(conn, "cat data/f"))[1] == b"precious\n"
        state = await ssh.phase_state(conn, "j1", "run")
        assert state.started and state.lost and not state.running and state.exit_code is None
    assert len(_node_servers(provider.root)) == 2


async def test_terminate_leaves_no_process_and_no_directory(
    provider: LocalProvider, pool: SshPool
):
    nodes = (await provider.provision("c", 2, {})).endpoints()
    conn = await pool.get(nodes[0])
    await ssh.start_phase(conn, "j", "run", "sleep 1000")
    home = str(provider.root / "c" / "node-0" / "home")

    await provider.terminate("c", None)
    await provider.terminate("c", None)

    assert _node_servers(provider.root) == []
    assert _processes_with_home(home) == []
    assert not (provider.root / "c").exists()
    assert await provider.describe_nodes("c", None) == []
    with pytest.raises(LookupError):
        await provider.start("c", None)


# -- the node server itself -------------------------------------------------------------


async def test_node_server_writes_ready_file_and_exits_cleanly_on_sigterm(
    tmp_path: Path, client_key: asyncssh.SSHKey
):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text(ssh.public_key_line(client_key) + "\n")
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "styx.providers.local.nodeserver", "--home", str(home), "--host", "127.0.5.9",
         "--port", "0", "--host-key", str(tmp_path / "hk"), "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        await wait_for_async(ready.exists, 20, "the node server's ready file")
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid and info["host"] == "127.0.5.9" and info["port"] > 0
        node = NodeEndpoint(
            host="127.0.5.9", port=info["port"], user="anyone", ip="127.0.5.9", rank=0,
            host_key=(tmp_path / "hk.pub").read_text(),
        )  # fmt: skip
        conn = await ssh.connect(node, client_key)
        assert (await ssh.run(conn, "echo $HOME"))[1] == f"{home}\n".encode()
        conn.close()

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_wrong_client_key_or_host_key_is_refused(provider: LocalProvider, client_key):
    node = (await provider.provision("c", 1, {})).endpoints()[0]
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh.connect(node, stranger)
    impostor = NodeEndpoint(**{**node.to_dict(), "host_key": stranger.export_public_key().decode()})
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ssh.connect(impostor, client_key)


async def test_stdout_and_stderr_tails_both_arrive_every_time(provider, pool):
    conn = await pool.get((await provider.provision("c", 1, {})).endpoints()[0])
    cmd = "head -c 200000 /dev/zero | tr '\\0' o; echo OUT-END; " \
          "head -c 150000 /dev/zero | tr '\\0' e >&2; echo ERR-END >&2; exit 3"
    for _ in range(20):
        status, out, err = await ssh.run(conn, cmd)
        assert status == 3
        assert len(out) == 200000 + 8 and out.endswith(b"OUT-END\n")
        assert len(err) == 150000 + 8 and err.endswith(b"ERR-END\n")


async def test_stdin_reaches_the_command_whole_every_time(provider, pool):
    # asyncssh's own stdin redirect lost the tail about once in 150 runs of this.
    conn = await pool.get((await provider.provision("c", 1, {})).endpoints()[0])
    data = bytes(range(256)) * 1000
    for _ in range(150):
        status, out, _ = await ssh.run(conn, "cat", input=data)
        assert status == 0 and out == data


async def test_big_output_does_not_break_the_connection(provider, pool):
    conn = await pool.get((await provider.provision("c", 1, {})).endpoints()[0])
    status, out, _ = await ssh.run(conn, "head -c 50000000 /dev/zero")
    assert status == 0 and len(out) == 50_000_000
    # Stdin sent to a command that never reads it is dropped, as sshd does.
    assert (await ssh.run(conn, "true", input=b"x" * 5_000_000))[0] == 0
    assert (await ssh.run(conn, "wc -c", input=b"y" * 3_000_000))[1].strip() == b"3000000"
    assert (await ssh.run(conn, "echo still-here"))[1] == b"still-here\n"


async def test_client_env_request_is_merged_and_shell_requests_work(provider, pool):
    conn = await pool.get((await provider.provision("c", 1, {})).endpoints()[0])
    result = await conn.run('echo "$VIA_ENV_REQUEST" "$PATH"', env={"VIA_ENV_REQUEST": "yes"})
    assert result.stdout.split()[0] == "yes"
    assert result.stdout.split()[1] == os.environ["PATH"]

    shell = await conn.create_process(None)  # `ssh node` with no command, no tty
    shell.stdin.write("echo from-shell $HOME\nexit 4\n")
    shell.stdin.write_eof()
    done = await asyncio.wait_for(shell.wait(), 10)
    assert done.exit_status == 4 and done.stdout.startswith("from-shell /")

    tty = await asyncio.wait_for(conn.run("tty", term_type="xterm"), 10)
    assert tty.exit_status == 0 and tty.stdout.startswith("/dev/")


async def test_sftp_is_confined_to_the_node_home(provider, pool, tmp_path):
    nodes = (await provider.provision("c", 1, {})).endpoints()
    conn = await pool.get(nodes[0])
    home = provider.root / "c" / "node-0" / "home"
    await ssh.run(conn, "mkdir -p d && echo hi > d/t && ln -s t d/rel")
    async with conn.start_sftp_client() as sftp:
        for path in ("/etc/passwd", "../../etc/passwd", "~/../../../etc/passwd"):
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(path)
        assert await sftp.realpath("~") == "/"
        assert await sftp.realpath("..") == "/"
        async with sftp.open("~/d/t") as f:
            assert await f.read() == "hi\n"
        await sftp.mkdir("/made-here")
        assert (home / "made-here").is_dir()
        assert await sftp.readlink("d/rel") == "t"
        await sftp.get("d", str(tmp_path / "copy"), recurse=True)
        assert os.readlink(tmp_path / "copy" / "rel") == "t"
        assert (tmp_path / "copy" / "rel").read_text() == "hi\n"

"""The SSH-pool provider against real SSH servers on loopback.

The "machines" of the pool are local node servers (``LocalProvider``: asyncssh servers on
127.x addresses, each with its own home) started once for the module; one test also runs
against a stock OpenSSH ``sshd`` when it is installed. Every test has its own STYX_HOME,
so reservations and known hosts start empty.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import pytest_asyncio
import yaml

from styx import ssh
from styx.providers.local.provider import LocalProvider
from styx.providers.ssh.errors import (
    HostUnreachable,
    PoolConfigError,
    PoolExhausted,
    ReservationConflict,
    ReservationNotFound,
)
from styx.providers.ssh.provider import SshPoolProvider
from styx.ssh import NodeEndpoint, SshPool
from tests.fixtures.processes import pid_alive

REPO = Path(__file__).resolve().parent.parent
USER = getpass.getuser()


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    ssh.ensure_client_key(path)
    return path


@pytest.fixture(scope="module")
def client_key(key_path: Path) -> asyncssh.SSHKey:
    return ssh.ensure_client_key(key_path)


class Machines:
    """Three loopback SSH servers standing in for the user's machines."""

    def __init__(self, local: LocalProvider, nodes: list[NodeEndpoint], homes: list[Path]):
        self.local = local
        self.nodes = nodes
        self.homes = homes

    def entry(self, rank: int, *, pin: bool = True) -> dict[str, Any]:
        node = self.nodes[rank]
        entry: dict[str, Any] = {"host": node.host, "port": node.port}
        if pin:
            entry["host_key"] = node.host_key
        return entry

    def home_of(self, endpoint: NodeEndpoint) -> Path:
        for node, home in zip(self.nodes, self.homes):
            if (node.host, node.port) == (endpoint.host, endpoint.port):
                return home
        raise KeyError(endpoint)


@pytest_asyncio.fixture(scope="module")
async def machines(
    tmp_path_factory: pytest.TempPathFactory, client_key: asyncssh.SSHKey
) -> AsyncIterator[Machines]:
    local = LocalProvider(tmp_path_factory.mktemp("machines"), ssh.public_key_line(client_key))
    try:
        nodes = (await local.provision("lab", 3, {})).endpoints()
        homes = [Path(d["home"]) for d in await local.describe_nodes("lab", None)]
        yield Machines(local, nodes, homes)
    finally:
        await local.terminate("lab", None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "styx"
    path.mkdir()
    return path


@pytest_asyncio.fixture
async def providers(
    home: Path, client_key: asyncssh.SSHKey
) -> AsyncIterator[list[SshPoolProvider]]:
    """Providers made by a test (``providers[0]`` is ready); whatever is still reserved at
    the end is terminated, so no job a test started outlives it."""
    made = [SshPoolProvider(home, client_key, connect_timeout=3, kill_grace=1)]
    try:
        yield made
    finally:
        for prov in made:
            if prov.reservations_file.exists():
                for cluster in json.loads(prov.reservations_file.read_text())["clusters"]:
                    await prov.terminate(cluster, None)


async def launch(provider: SshPoolProvider, cluster: str, num_nodes: int, pool: str) -> list[NodeEndpoint]:
    """What the cluster workflow does: plan for the pool, provision its one attempt."""
    (attempt,) = await provider.plan({}, num_nodes, pool)
    return (await provider.provision(cluster, num_nodes, attempt)).endpoints()


def write_pools(home: Path, pools: dict[str, Any]) -> None:
    (home / "ssh_pools.yaml").write_text(yaml.safe_dump(pools, sort_keys=False))


def lab(machines: Machines, *, pin: bool = True, extra: list[Any] | None = None) -> dict[str, Any]:
    hosts = [machines.entry(r, pin=pin) for r in range(3)]
    return {"lab": {"user": USER, "hosts": hosts + (extra or [])}}


def reserved(home: Path) -> dict[str, list[str]]:
    path = home / "ssh_reservations.json"
    if not path.exists():
        return {}
    clusters = json.loads(path.read_text())["clusters"]
    return {name: [h["id"] for h in res["hosts"]] for name, res in clusters.items()}


def bare(key: str | None) -> str:
    """A public key line without its comment."""
    assert key is not None
    return " ".join(key.split()[:2])


def closed_port() -> socket.socket:
    """A socket bound to 127.0.0.1 but not listening: connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- the life of a cluster ----------------------------------------------------------------


async def test_launch_runs_on_the_reserved_hosts_and_terminate_cleans_and_releases(
    machines: Machines, home: Path, providers: list[SshPoolProvider], pool: SshPool
):
    provider = providers[0]
    # Host 0 pinned by the pool file; hosts 1 and 2 trusted on first use.
    pools = lab(machines, pin=False)
    pools["lab"]["hosts"][0] = machines.entry(0)
    write_pools(home, pools)

    nodes = await launch(provider, "train", 2, "lab")

    assert [(n.host, n.port, n.rank) for n in nodes] == [
        (m.host, m.port, r) for r, m in enumerate(machines.nodes[:2])
    ]
    assert all(n.ip == n.host and n.user == USER for n in nodes)
    assert [n.host_key for n in nodes] == [bare(m.host_key) for m in machines.nodes[:2]]
    known = (home / "ssh_known_hosts").read_text()
    assert f"[{nodes[1].host}]:{nodes[1].port} {nodes[1].host_key}" in known
    assert nodes[0].host not in known  # pinned by the pool file, nothing learned
    assert reserved(home) == {"train": [f"{n.host}:{n.port}" for n in nodes]}

    pids = []
    for node in nodes:
        conn = await pool.get(node)  # pinned to the learned key
        status, out, _ = await ssh.run(conn, 'echo "$MSG from $HOME"', env={"MSG": "hi"})
        assert status == 0 and out.decode().strip() == f"hi from {machines.home_of(node)}"
        await ssh.run(conn, "mkdir -p ~/styx_workdir/1 && echo x > ~/styx_workdir/1/f")
        pids.append(await ssh.start_phase(conn, "1", "run", "sleep 60"))
        assert (machines.home_of(node) / ".styx" / "jobs" / "1").is_dir()
    assert all(pid_alive(p) for p in pids)

    await provider.terminate("train", None)

    for node, pid in zip(nodes, pids):
        assert not pid_alive(pid)
        assert not (machines.home_of(node) / ".styx" / "jobs").exists()
        assert not (machines.home_of(node) / "styx_workdir").exists()
        assert not (machines.home_of(node) / ".styx" / "pool_owner").exists()
    assert reserved(home) == {}
    await provider.terminate("train", None)  # again: nothing to do
    await provider.terminate("never-existed", None)
    with pytest.raises(ReservationNotFound):
        await provider.start("train", None)


async def test_stop_kills_the_jobs_but_keeps_the_hosts_and_start_returns_them(
    machines: Machines, home: Path, providers: list[SshPoolProvider], pool: SshPool
):
    provider = providers[0]
    write_pools(home, lab(machines))
    nodes = await launch(provider, "dev", 1, "lab")
    conn = await pool.get(nodes[0])
    await ssh.run(conn, "echo kept > ~/data.txt")
    pid = await ssh.start_phase(conn, "1", "run", "sleep 60")

    await provider.stop("dev", None)
    await provider.stop("dev", None)

    assert not pid_alive(pid)
    state = await ssh.phase_state(conn, "1", "run")
    assert state.exit_code == 143 and state.cancelled
    assert reserved(home) == {"dev": [f"{nodes[0].host}:{nodes[0].port}"]}
    assert (await provider.start("dev", None)).endpoints() == nodes
    assert (await ssh.run(conn, "cat ~/data.txt"))[1] == b"kept\n"
    # A stopped cluster still holds its host.
    with pytest.raises(PoolExhausted):
        await launch(provider, "other", 3, "lab")


# -- reservations -------------------------------------------------------------------------


async def test_two_clusters_never_share_a_host_and_a_third_is_told_who_is_busy(
    machines: Machines, home: Path, providers: list[SshPoolProvider]
):
    provider = providers[0]
    write_pools(home, lab(machines))
    a = await launch(provider, "alpha", 2, "lab")
    b = await launch(provider, "beta", 1, "lab")
    assert not {(n.host, n.port) for n in a} & {(n.host, n.port) for n in b}

    with pytest.raises(PoolExhausted) as err:
        await launch(provider, "gamma", 1, "lab")
    message = str(err.value)
    assert "0 free host(s) of 3" in message and "needs 1" in message
    assert "'alpha'" in message and "'beta'" in message
    assert err.value.busy == {f"{n.host}:{n.port}": c for c, ns in (("alpha", a), ("beta", b))
                              for n in ns}
    assert "gamma" not in reserved(home)

    listed = provider.list_pools()["lab"]
    assert listed["free"] == 0 and [h["cluster"] for h in listed["hosts"]] == [
        "alpha", "alpha", "beta"
    ]
    await provider.terminate("alpha", None)
    gamma = await launch(provider, "gamma", 2, "lab")
    assert {(n.host, n.port) for n in gamma} == {(n.host, n.port) for n in a}


async def test_provision_twice_returns_the_same_hosts_even_from_another_worker(
    machines: Machines, home: Path, providers: list[SshPoolProvider], client_key: asyncssh.SSHKey
):
    write_pools(home, lab(machines, pin=False))
    first = await launch(providers[0], "c", 2, "lab")
    other_worker = SshPoolProvider(home, client_key)
    again, concurrent = await asyncio.gather(
        launch(other_worker, "c", 2, "lab"), launch(providers[0], "c", 2, "lab")
    )
    assert again == first and concurrent == first
    assert len(reserved(home)["c"]) == 2

    with pytest.raises(ReservationConflict, match="already holds 2 host"):
        await launch(providers[0], "c", 3, "lab")
    assert len(reserved(home)["c"]) == 2


async def test_concurrent_provisions_from_threads_never_double_book(
    machines: Machines, home: Path, client_key: asyncssh.SSHKey, providers: list[SshPoolProvider]
):
    write_pools(home, lab(machines))
    results: dict[str, Any] = {}
    start = threading.Barrier(5)

    def worker(cluster: str) -> None:
        provider = SshPoolProvider(home, client_key)  # its own lock file descriptors
        start.wait()
        try:
            results[cluster] = asyncio.run(launch(provider, cluster, 1, "lab"))
        except PoolExhausted as exc:
            results[cluster] = exc

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    won = {c: r[0] for c, r in results.items() if isinstance(r, list)}
    assert len(results) == 5 and len(won) == 3
    assert len({(n.host, n.port) for n in won.values()}) == 3
    assert sorted(reserved(home)) == sorted(won)


_PROVISION_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
import asyncssh
from styx.providers.ssh.errors import PoolExhausted
from styx.providers.ssh.provider import SshPoolProvider

home, key, clusters = Path(sys.argv[1]), asyncssh.read_private_key(sys.argv[2]), sys.argv[3:]

async def main():
    provider = SshPoolProvider(home, key)
    out = {}
    async def one(cluster):
        try:
            out[cluster] = (await provider.provision(cluster, 1, {"pool": "lab"})).nodes
        except PoolExhausted as exc:
            out[cluster] = str(exc)
    await asyncio.gather(*(one(c) for c in clusters))
    print(json.dumps(out))

asyncio.run(main())
"""


async def test_concurrent_provisions_from_two_worker_processes_never_double_book(
    machines: Machines, home: Path, key_path: Path, providers: list[SshPoolProvider]
):
    write_pools(home, lab(machines))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PROVISION_SCRIPT, str(home), str(key_path), *clusters,
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for clusters in (("p1", "p2"), ("q1", "q2"))
    ]
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 30)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    results: dict[str, Any] = {}
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()
        results.update(json.loads(out))

    won = {c: r[0] for c, r in results.items() if isinstance(r, list)}
    lost = [r for r in results.values() if isinstance(r, str)]
    assert len(won) == 3 and len(lost) == 1 and "0 free host(s) of 3" in lost[0]
    assert len({(n["host"], n["port"]) for n in won.values()}) == 3
    assert sorted(reserved(home)) == sorted(won)


# -- failures -----------------------------------------------------------------------------


async def test_a_host_that_does_not_answer_fails_provision_and_leaves_no_reservation(
    machines: Machines, home: Path, providers: list[SshPoolProvider]
):
    provider = providers[0]
    dead = closed_port()
    try:
        port = dead.getsockname()[1]
        write_pools(home, {"flaky": {"user": USER, "hosts": [
            machines.entry(0), {"host": "127.0.0.1", "port": port},
        ]}})
        with pytest.raises(HostUnreachable) as err:
            await launch(provider, "c", 2, "flaky")
    finally:
        dead.close()
    assert f"127.0.0.1:{port}" in str(err.value) and "did not answer" in str(err.value)
    assert (err.value.host, err.value.port) == ("127.0.0.1", port)
    assert reserved(home) == {}
    # The good host went back to the pool.
    assert len(await launch(provider, "d", 1, "flaky")) == 1


async def test_a_changed_host_key_fails_the_check(
    machines: Machines, home: Path, providers: list[SshPoolProvider]
):
    provider = providers[0]
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    write_pools(home, {"lab": {"user": USER, "hosts": [{**machines.entry(0), "host_key": wrong}]}})
    with pytest.raises(HostUnreachable, match="host key that does not match the pool's host_key"):
        await launch(provider, "c", 1, "lab")

    # Trusted on first use, then the machine comes back with another key.
    write_pools(home, {"lab": {"user": USER, "hosts": [machines.entry(1, pin=False)]}})
    node = machines.nodes[1]
    (home / "ssh_known_hosts").write_text(f"[{node.host}]:{node.port} {wrong.split()[0]} "
                                          f"{wrong.split()[1]}\n")
    with pytest.raises(HostUnreachable, match="ssh_known_hosts") as err:
        await launch(provider, "c", 1, "lab")
    assert f"{node.host}:{node.port}" in str(err.value)
    assert reserved(home) == {}


async def test_a_host_whose_home_is_styx_home_is_refused(
    machines: Machines, client_key: asyncssh.SSHKey
):
    # STYX_HOME = ~/.styx of the machine itself: terminate would delete Styx's job logs.
    home = machines.homes[2] / ".styx"
    home.mkdir(parents=True, exist_ok=True)
    provider = SshPoolProvider(home, client_key)
    try:
        write_pools(home, {"me": {"user": USER, "hosts": [machines.entry(2)]}})
        with pytest.raises(HostUnreachable, match="this Styx server's STYX_HOME"):
            await launch(provider, "c", 1, "me")
        assert reserved(home) == {}
    finally:
        shutil.rmtree(home)


async def test_jobs_left_by_a_previous_owner_are_killed_before_the_host_is_reused(
    machines: Machines, home: Path, providers: list[SshPoolProvider], pool: SshPool
):
    provider = providers[0]
    write_pools(home, {"one": {"user": USER, "hosts": [machines.entry(0)]}})
    (node,) = await launch(provider, "old", 1, "one")
    conn = await pool.get(node)
    old_job = await ssh.start_phase(conn, "1", "run", "sleep 60")
    # terminate could not reach the host: its reservation went without the clean-up.
    table = json.loads((home / "ssh_reservations.json").read_text())
    del table["clusters"]["old"]
    (home / "ssh_reservations.json").write_text(json.dumps(table))

    (again,) = await launch(provider, "new", 1, "one")

    assert again == node and not pid_alive(old_job)
    state = await ssh.phase_state(conn, "1", "run")
    assert not state.started  # job 1 of the new cluster will not re-attach to the old one


async def test_identity_file_logs_in_once_and_authorizes_styx_key(
    machines: Machines, home: Path, key_path: Path
):
    # Styx's own key is new: only the user's identity file is authorized on the machine.
    styx_key = ssh.ensure_client_key(home / "ssh" / "id_ed25519")
    provider = SshPoolProvider(home, styx_key)
    write_pools(home, {"lab": {
        "user": USER, "identity_file": str(key_path), "hosts": [machines.entry(1)],
    }})
    try:
        (node,) = await launch(provider, "c", 1, "lab")
        conn = await ssh.connect(node, styx_key)  # what the job activities do
        try:
            assert (await ssh.run(conn, "echo ok"))[1] == b"ok\n"
        finally:
            conn.close()
        authorized = (machines.homes[1] / ".ssh" / "authorized_keys").read_text().splitlines()
        assert authorized.count(ssh.public_key_line(styx_key)) == 1
        await provider.start("c", None)  # no second copy
        authorized = (machines.homes[1] / ".ssh" / "authorized_keys").read_text().splitlines()
        assert authorized.count(ssh.public_key_line(styx_key)) == 1
    finally:
        await provider.terminate("c", None)

    write_pools(home, {"lab": {"user": USER, "identity_file": str(home / "missing"),
                               "hosts": [machines.entry(1)]}})
    with pytest.raises(PoolConfigError, match="lab.identity_file"):
        await launch(provider, "c", 1, "lab")
    assert reserved(home) == {}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"lab": {"hosts": ["10.0.0.5", {"host": "10.0.0.6", "port": "22x"}]}},
         "lab.hosts[1].port must be an integer"),
        ({"lab": {"hosts": [{"host": "a", "port": 70000}]}}, "lab.hosts[0].port must be between"),
        ({"lab": {"user": "u"}}, "lab.hosts is missing"),
        ({"lab": {"hosts": []}}, "lab.hosts must be a non-empty list"),
        ({"lab": {"hosts": [{"hostname": "a"}]}}, "lab.hosts[0].hostname is not a known field"),
        ({"lab": {"hosts": [{"port": 22}]}}, "lab.hosts[0].host is missing"),
        ({"lab": {"hosts": ["a", "a"]}}, "lab.hosts[1] is a:22 again"),
        ({"lab": {"hosts": ["a"], "port": True}}, "lab.port must be an integer"),
        ({"lab": {"hosts": ["a"], "jump_host": {"host": "b", "port": "x"}}},
         "lab.jump_host.port must be an integer"),
        ({"lab": {"hosts": [{"host": "a", "host_key": "not a key"}]}},
         "lab.hosts[0].host_key is not an OpenSSH public key"),
        ({"lab": ["a", "b"]}, "lab must be a mapping"),
        ("lab: [unclosed\n", "not valid YAML at line"),
    ],
)
async def test_a_bad_pool_file_names_the_file_and_the_field(
    home: Path, providers: list[SshPoolProvider], document: Any, expected: str
):
    provider = providers[0]
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    (home / "ssh_pools.yaml").write_text(text)
    with pytest.raises(PoolConfigError) as err:
        await launch(provider, "c", 1, "lab")
    assert "ssh_pools.yaml: " in str(err.value) and expected in str(err.value)
    assert await provider.check(None) == (False, str(err.value))
    assert reserved(home) == {}


async def test_unknown_pool_lists_the_known_ones_and_check_summarises(
    home: Path, providers: list[SshPoolProvider]
):
    provider = providers[0]
    ok, reason = await provider.check(None)
    assert ok is False and "does not exist" in reason
    assert provider.list_pools() == {}
    with pytest.raises(PoolConfigError, match="ssh_pools.yaml does not exist"):
        await launch(provider, "c", 1, "lab")

    write_pools(home, {"lab": {"user": "u", "hosts": ["10.0.0.5", {"host": "10.0.0.6", "port": 2222}],
                               "jump_host": {"host": "bastion"}},
                       "gpu": {"hosts": ["10.1.0.1"]}})
    with pytest.raises(PoolConfigError, match=r"no SSH pool 'nope' .*known pools: gpu, lab"):
        await launch(provider, "c", 1, "nope")
    assert await provider.check(None) == (True, "2 SSH pool(s): lab (2 hosts), gpu (1 host)")
    listed = provider.list_pools()
    assert listed["lab"]["hosts"][1] == {"host": "10.0.0.6", "port": 2222, "user": "u", "cluster": None}
    assert listed["lab"]["jump_host"] == {"host": "bastion", "port": 22, "user": "u", "host_key": None}
    assert listed["gpu"]["hosts"][0]["user"] == USER and listed["gpu"]["free"] == 1


# -- a stock OpenSSH server ---------------------------------------------------------------

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture
def sshd(tmp_path: Path, client_key: asyncssh.SSHKey) -> Iterator[tuple[int, Path]]:
    """An OpenSSH sshd on a loopback port; logins get HOME=<tmp>/home (``SetEnv``), so
    nothing on the real account's home is touched. Yields (port, home)."""
    if not SSHD.exists():
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server)")
    privsep = Path("/run/sshd")  # sshd refuses to start without its privilege-separation dir
    made_privsep = False
    if not privsep.exists():
        if os.geteuid() != 0:
            pytest.skip("sshd needs /run/sshd, which only root can create")
        privsep.mkdir(mode=0o755)
        made_privsep = True
    d = tmp_path / "sshd"
    home = d / "home"
    home.mkdir(parents=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    (d / "host_key").write_bytes(host_key.export_private_key())
    os.chmod(d / "host_key", 0o600)
    (d / "authorized_keys").write_text(ssh.public_key_line(client_key) + "\n")
    proc = None
    try:
        for _ in range(3):  # the free port may be taken in between: try another
            port = _free_port()
            (d / "sshd_config").write_text("\n".join([
                f"Port {port}", "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host_key'}", f"AuthorizedKeysFile {d / 'authorized_keys'}",
                f"PidFile {d / 'sshd.pid'}", "UsePAM no", "StrictModes no",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", f"SetEnv HOME={home}", "LogLevel ERROR", "",
            ]))
            log = open(d / "sshd.log", "ab")
            proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
            log.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None and not _answers_ssh(port):
                time.sleep(0.05)
            if proc.poll() is None and _answers_ssh(port):
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            pytest.fail(f"sshd did not start:\n{(d / 'sshd.log').read_text()}")
        yield port, home
    finally:
        if proc is not None:
            # The whole session: sshd and any session child it still has.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Jobs run under setsid, in their own groups: make sure none outlives the test.
        for pid_file in (home / ".styx" / "jobs").glob("*/*.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if made_privsep:
            privsep.rmdir()


async def test_a_pool_of_one_openssh_host_runs_a_job_and_is_cleaned_up(
    sshd: tuple[int, Path], home: Path, providers: list[SshPoolProvider], pool: SshPool
):
    port, node_home = sshd
    provider = providers[0]
    write_pools(home, {"real": {"user": USER, "hosts": [{"host": "127.0.0.1", "port": port}]}})

    (node,) = await launch(provider, "ossh", 1, "real")
    assert (node.host, node.port, node.rank) == ("127.0.0.1", port, 0)
    assert f"[127.0.0.1]:{port} {node.host_key}" in (home / "ssh_known_hosts").read_text()

    conn = await pool.get(node)
    assert (await ssh.run(conn, 'echo "$HOME"'))[1].decode().strip() == str(node_home)
    pid = await ssh.start_phase(conn, "1", "run", "sleep 60")
    assert pid_alive(pid) and (node_home / ".styx" / "jobs" / "1").is_dir()

    await provider.stop("ossh", None)
    assert not pid_alive(pid) and reserved(home) == {"ossh": [f"127.0.0.1:{port}"]}
    assert (await provider.start("ossh", None)).endpoints() == [node]

    await provider.terminate("ossh", None)
    assert not (node_home / ".styx" / "jobs").exists()
    assert reserved(home) == {}


async def test_hosts_behind_an_openssh_jump_host_are_checked_and_cleaned_through_it(
    sshd: tuple[int, Path], machines: Machines, home: Path, providers: list[SshPoolProvider],
    pool: SshPool,
):
    port, _ = sshd
    provider = providers[0]
    write_pools(home, {"behind": {
        "user": USER, "hosts": [machines.entry(2)],
        "jump_host": {"host": "127.0.0.1", "port": port},
    }})
    (node,) = await launch(provider, "j", 1, "behind")
    assert (node.host, node.port) == (machines.nodes[2].host, machines.nodes[2].port)
    assert f"[127.0.0.1]:{port} " in (home / "ssh_known_hosts").read_text()  # the bastion's key
    assert reserved(home) == {"j": [f"{node.host}:{node.port} via 127.0.0.1:{port}"]}

    conn = await pool.get(node)  # loopback: also reachable directly, for the test's job
    pid = await ssh.start_phase(conn, "1", "run", "sleep 60")
    await provider.terminate("j", None)
    assert not pid_alive(pid) and not (machines.homes[2] / ".styx" / "jobs").exists()
    assert reserved(home) == {}

    # The jump host really is in the path: with it gone, the (directly reachable) host fails.
    dead = closed_port()
    try:
        write_pools(home, {"behind": {
            "user": USER, "hosts": [machines.entry(2)],
            "jump_host": {"host": "127.0.0.1", "port": dead.getsockname()[1]},
        }})
        with pytest.raises(HostUnreachable, match=f"via jump host 127.0.0.1:{dead.getsockname()[1]}"):
            await launch(provider, "j", 1, "behind")
    finally:
        dead.close()
    assert reserved(home) == {}

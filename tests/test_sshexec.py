"""SSH primitives against real local node servers: commands, detached phases, logs, files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from styx import ssh
from styx.providers.local.provider import LocalProvider
from styx.ssh import NodeEndpoint, SshPool
from styx.ssh.phases import _job_dir
from tests.fixtures.stack import wait_for_async


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> asyncssh.SSHKey:
    return ssh.ensure_client_key(tmp_path_factory.mktemp("keys") / "id_ed25519")


@pytest_asyncio.fixture(scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, client_key: asyncssh.SSHKey
) -> AsyncIterator[tuple[LocalProvider, list[NodeEndpoint]]]:
    """Two nodes shared by the module (tests use distinct job ids)."""
    prov = LocalProvider(tmp_path_factory.mktemp("local"), ssh.public_key_line(client_key))
    try:
        yield prov, (await prov.provision("x", 2, {})).endpoints()
    finally:
        await prov.terminate("x", None)


@pytest_asyncio.fixture
async def conn(cluster, pool: SshPool) -> asyncssh.SSHClientConnection:
    return await pool.get(cluster[1][0])


def _home(cluster, rank: int = 0) -> Path:
    return cluster[0].root / "x" / f"node-{rank}" / "home"


async def _wait_ended(conn, job: str, phase: str = "run", timeout: float = 20) -> ssh.PhaseState:
    async def ended() -> ssh.PhaseState | None:
        state = await ssh.phase_state(conn, job, phase)
        return None if state.running else state

    return await wait_for_async(ended, timeout, f"{job}/{phase} to end")


def _group_alive(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _group_commands(pgid: int) -> list[str]:
    """The command names (``comm``) of the live members of process group ``pgid``."""
    out = []
    for pid in _group_alive(pgid):
        try:
            out.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return out


# -- keys, connections ------------------------------------------------------------------


def test_client_key_is_created_once_with_private_mode(tmp_path: Path):
    path = tmp_path / "k" / "id_ed25519"
    key = ssh.ensure_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "k" / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    again = ssh.ensure_client_key(path)
    assert again.export_public_key() == key.export_public_key()


def test_node_endpoint_round_trips_through_json():
    node = NodeEndpoint(host="127.0.0.2", port=22, user="u", ip="10.0.0.1", rank=3, host_key=None)
    assert NodeEndpoint.from_dict(node.to_dict()) == node


async def test_pool_reuses_live_connections_and_replaces_dead_ones(cluster, pool):
    node = cluster[1][0]
    first = await pool.get(node)
    assert await pool.get(node) is first
    first.abort()
    await wait_for_async(first.is_closed, 5, "the aborted connection to close")
    second = await pool.get(node)
    assert second is not first
    assert (await ssh.run(second, "echo ok"))[1] == b"ok\n"


async def test_unreachable_node_raises_node_unreachable(client_key):
    nowhere = NodeEndpoint(host="127.0.0.1", port=1, user="u", ip="127.0.0.1", rank=0)
    with pytest.raises(ssh.NodeUnreachable):
        await SshPool(client_key, retry_delay=0.01).get(nowhere)


# -- short commands ---------------------------------------------------------------------


async def test_run_reports_exit_status_and_signals(conn):
    assert await ssh.run(conn, "echo out; echo err >&2; exit 7") == (7, b"out\n", b"err\n")
    assert (await ssh.run(conn, "kill -TERM $$"))[0] == -signal.SIGTERM
    with pytest.raises(ssh.CommandTimeout):
        await ssh.run(conn, "sleep 5", timeout=0.2)


async def test_binary_output_is_intact(conn):
    status, out, _ = await ssh.run(conn, "printf '%b' " + "".join(
        f"\\\\{i:03o}" for i in range(256)))
    assert status == 0 and out == bytes(range(256))
    status, out, _ = await ssh.run(conn, "cat", input=bytes(range(256)) * 1000)
    assert out == bytes(range(256)) * 1000


async def test_env_with_quotes_spaces_and_dollars_arrives_verbatim(conn):
    env = {
        "PLAIN": "x",
        "QUOTES": "it's \"quoted\"",
        "DOLLAR": "$HOME `whoami` $(id) \\n",
        "SPACES": "  a  b  ",
        "NEWLINE": "line1\nline2",
        "UNICODE": "ünï ☃",
        "EMPTY": "",
    }
    script = "; ".join(f'printf "%s\\0" "${k}"' for k in env)
    status, out, _ = await ssh.run(conn, script, env=env)
    assert status == 0
    assert out.split(b"\0")[:-1] == [v.encode() for v in env.values()]
    with pytest.raises(ValueError):
        ssh.env_prefix({"BAD-NAME": "x"})


async def test_server_death_mid_command_is_node_unreachable(tmp_path, client_key):
    prov = LocalProvider(tmp_path / "local", ssh.public_key_line(client_key))
    try:
        node = (await prov.provision("victim", 1, {})).endpoints()[0]
        conn = await ssh.connect(node, client_key)
        task = asyncio.create_task(ssh.run(conn, "touch started; sleep 30"))
        started = tmp_path / "local" / "victim" / "node-0" / "home" / "started"
        await wait_for_async(started.exists, 10, "the command to start")
        os.kill((await prov.describe_nodes("victim", None))[0]["pid"], signal.SIGKILL)
        with pytest.raises(ssh.NodeUnreachable):
            await asyncio.wait_for(task, 10)
    finally:
        await prov.terminate("victim", None)


# -- detached phases --------------------------------------------------------------------


async def test_start_phase_twice_runs_one_process(cluster, pool, client_key):
    node = cluster[1][0]
    conn = await pool.get(node)
    script = "echo started-once; sleep 0.5"
    first = await ssh.start_phase(conn, "twice", "run", script)
    assert await ssh.start_phase(conn, "twice", "run", script) == first
    # Concurrent retries from separate connections all get the same pid.
    conns = [await ssh.connect(node, client_key) for _ in range(4)]
    try:
        pids = await asyncio.gather(
            *(ssh.start_phase(c, "race", "run", script) for c in conns)
        )
    finally:
        for c in conns:
            c.close()
    assert len(set(pids)) == 1

    for job in ("twice", "race"):
        state = await _wait_ended(conn, job)
        assert state.exit_code == 0 and not state.lost
        log = await ssh.read_log(conn, job, "run", 0, 1 << 20)
        assert log.count(b"started-once") == 1


async def test_a_start_cut_off_by_the_nodes_death_is_abandoned_once_its_lock_is_old(conn):
    """The node died between locking the phase and writing its pid: the lock stays, no
    process ever runs. Young, it may be a start under way (retry); a minute old, abandoned
    (the run activity then fails the job as lost instead of retrying it for ever)."""
    await ssh.run(conn, "mkdir -p .styx/jobs/cut/run.lock")
    with pytest.raises(ssh.PhaseStartFailed) as young:
        await ssh.start_phase(conn, "cut", "run", "echo never")
    assert not young.value.abandoned
    await ssh.run(conn, "touch -d '2 minutes ago' .styx/jobs/cut/run.lock")
    with pytest.raises(ssh.PhaseStartFailed) as old:
        await ssh.start_phase(conn, "cut", "run", "echo never")
    assert old.value.abandoned and "no pid" in str(old.value)


async def test_phase_runs_in_workdir_with_env_and_records_exit_code(cluster, conn):
    await ssh.run(conn, "mkdir -p styx_workdir/wd && echo data > styx_workdir/wd/input")
    script = 'pwd; cat input; echo "$STYX_NODE_RANK|$ODD"; exit 5'
    pid = await ssh.start_phase(conn, "wd", "setup", script,
                                    {"STYX_NODE_RANK": "0", "ODD": "a 'b' $c"})
    assert pid > 0
    state = await _wait_ended(conn, "wd", "setup")
    assert state.exit_code == 5 and state.started and not state.cancelled
    log = await ssh.read_log(conn, "wd", "setup", 0, 4096)
    assert log == f"{_home(cluster)}/styx_workdir/wd\ndata\n0|a 'b' $c\n".encode()
    assert state.log_size == len(log)
    # Without a workdir the phase runs in the home.
    await ssh.start_phase(conn, "nowd", "run", "pwd")
    await _wait_ended(conn, "nowd")
    assert await ssh.read_log(conn, "nowd", "run", 0, 4096) == f"{_home(cluster)}\n".encode()


async def test_phase_survives_a_dropped_client_and_can_be_reattached(cluster, pool):
    node = cluster[1][1]
    conn = await pool.get(node)
    script = "for i in $(seq 1 40); do echo line $i; sleep 0.05; done"
    pid = await ssh.start_phase(conn, "drop", "run", script)

    async def some_lines() -> bytes:
        log = await ssh.read_log(conn, "drop", "run", 0, 1 << 20)
        return log if log.endswith(b"\n") else b""

    first = await wait_for_async(some_lines, 10, "the first log lines")
    assert first.startswith(b"line 1\n")
    conn.abort()  # the worker died: no goodbye
    pool.discard(node)

    again = await pool.get(node)
    assert await ssh.start_phase(again, "drop", "run", script) == pid  # re-attach
    state = await ssh.phase_state(again, "drop", "run")
    assert state.running and state.pid == pid and state.log_size >= len(first)
    state = await _wait_ended(again, "drop")
    rest = await ssh.read_log(again, "drop", "run", len(first), 1 << 20)
    assert state.exit_code == 0
    assert first + rest == b"".join(f"line {i}\n".encode() for i in range(1, 41))


async def test_phase_outlives_a_client_process_killed_with_sigkill(cluster, pool, tmp_path, client_key):
    node = cluster[1][1]
    key_file = tmp_path / "key"
    client_key.write_private_key(str(key_file))
    client = (
        "import asyncio, json, sys, asyncssh\n"
        "from styx import ssh\n"
        "async def main():\n"
        "    node = ssh.NodeEndpoint.from_dict(json.loads(sys.argv[1]))\n"
        "    conn = await ssh.connect(node, asyncssh.read_private_key(sys.argv[2]))\n"
        "    pid = await ssh.start_phase(conn, 'k9', 'run', "
        "'for i in $(seq 1 20); do echo tick $i; sleep 0.05; done')\n"
        "    print(pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", client, json.dumps(node.to_dict()), str(key_file),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        pid = int(await asyncio.wait_for(proc.stdout.readline(), 20))
    finally:
        proc.kill()
        await proc.wait()

    conn = await pool.get(node)
    assert await ssh.start_phase(conn, "k9", "run", "echo must-not-run") == pid
    state = await _wait_ended(conn, "k9")
    assert state.exit_code == 0
    log = await ssh.read_log(conn, "k9", "run", 0, 1 << 20)
    assert log == b"".join(f"tick {i}\n".encode() for i in range(1, 21))


async def test_kill_phase_kills_children_and_records_the_end(cluster, conn):
    script = "sleep 1000 & echo $! > child.pid; sleep 1000"
    pid = await ssh.start_phase(conn, "victim", "run", script)
    await wait_for_async(lambda: _group_commands(pid).count("sleep") == 2, 10, "both sleeps to run")
    assert len(_group_alive(pid)) >= 3  # wrapper, script, two sleeps

    assert await ssh.kill_phase(conn, "victim", "run", grace=2) == ["run"]
    assert _group_alive(pid) == []
    state = await ssh.phase_state(conn, "victim", "run")
    assert not state.running and state.exit_code == 143 and state.cancelled and not state.lost

    assert await ssh.kill_phase(conn, "victim", "run") == []  # twice is fine
    assert await ssh.kill_phase(conn, "victim") == []  # and for the whole job
    assert await ssh.kill_phase(conn, "never-started") == []


async def test_kill_on_an_ended_job_keeps_its_exit_code_and_blocks_later_phases(conn):
    await ssh.start_phase(conn, "ended", "setup", "exit 3")
    await _wait_ended(conn, "ended", "setup")
    assert await ssh.kill_phase(conn, "ended") == []
    assert (await ssh.phase_state(conn, "ended", "setup")).exit_code == 3
    with pytest.raises(ssh.JobCancelled):
        await ssh.start_phase(conn, "ended", "run", "echo must-not-run")
    state = await ssh.phase_state(conn, "ended", "run")
    assert not state.started and state.cancelled


async def test_stubborn_job_is_killed_after_the_grace_period(conn):
    pid = await ssh.start_phase(conn, "stubborn", "run", "trap '' TERM; sleep 1000")
    # Once the sleep runs, the trap is set: the TERM below is ignored.
    await wait_for_async(lambda: "sleep" in _group_commands(pid), 10, "the job to run")
    assert await ssh.kill_phase(conn, "stubborn", grace=0.3) == ["run"]
    assert _group_alive(pid) == []


async def test_a_phase_killed_from_outside_is_lost(conn):
    pid = await ssh.start_phase(conn, "outside", "run", "sleep 1000")
    await wait_for_async(lambda: "sleep" in _group_commands(pid), 10, "the job to run")
    os.killpg(pid, signal.SIGKILL)
    state = await _wait_ended(conn, "outside", timeout=5)
    assert state.lost and state.exit_code is None and state.started
    never = await ssh.phase_state(conn, "outside", "setup")
    assert not never.started and not never.running and not never.lost


async def test_50mb_log_arrives_whole_in_chunks_without_being_held_at_once(conn):
    await ssh.start_phase(conn, "big", "run", "head -c 50000000 /dev/urandom")
    state = await _wait_ended(conn, "big")
    assert state.exit_code == 0 and state.log_size == 50_000_000
    _, out, _ = await ssh.run(conn, "sha256sum .styx/jobs/big/run.log")
    expected = out.split()[0].decode()

    chunk = 4 << 20
    digest = hashlib.sha256()
    offset = 0
    tracemalloc.start()
    try:
        async with conn.start_sftp_client() as sftp:
            while data := await ssh.read_log(sftp, "big", "run", offset, chunk):
                digest.update(data)
                offset += len(data)
                del data
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert offset == 50_000_000 and digest.hexdigest() == expected
    print(f"read_log: 50 MB in {chunk >> 20} MB chunks, traced peak {peak / 1e6:.1f} MB")
    assert peak < 5 * chunk, f"peak {peak} bytes while reading in {chunk}-byte chunks"
    assert await ssh.read_log(conn, "big", "run", offset, chunk) == b""
    assert await ssh.read_log(conn, "no-such-job", "run", 0, chunk) == b""


def test_bad_job_ids_and_phases_are_refused():
    for bad in ("../x", "a b", "", "x;rm", "-x"):
        with pytest.raises(ValueError):
            _job_dir(bad)


# -- files ------------------------------------------------------------------------------


async def test_upload_dir_replaces_content_keeps_modes_and_accepts_tilde(cluster, conn, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "pkg" / "data.bin").write_bytes(bytes(range(256)))
    (src / "link").symlink_to("run.sh")

    await ssh.run(conn, "mkdir -p styx_workdir/up && echo stale > styx_workdir/up/old")
    await ssh.upload_dir(conn, src, "~/styx_workdir/up")
    dest = _home(cluster) / "styx_workdir" / "up"
    assert sorted(p.name for p in dest.iterdir()) == ["link", "pkg", "run.sh"]  # no nesting
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert (dest / "pkg" / "data.bin").read_bytes() == bytes(range(256))
    assert os.readlink(dest / "link") == "run.sh"
    assert (await ssh.run(conn, "styx_workdir/up/run.sh"))[1] == b"hi\n"

    (src / "run.sh").unlink()
    await ssh.upload_dir(conn, src, "~/styx_workdir/up")  # again: replaced, not merged
    assert sorted(p.name for p in dest.iterdir()) == ["link", "pkg"]
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]

    one = tmp_path / "one.txt"
    one.write_text("v1")
    await ssh.upload_file(conn, one, "~/deep/er/one.txt")
    one.write_text("v2")
    await ssh.upload_file(conn, one, "~/deep/er/one.txt")
    assert (_home(cluster) / "deep" / "er" / "one.txt").read_text() == "v2"


async def test_uploads_cannot_escape_a_local_node_home(cluster, conn, tmp_path):
    one = tmp_path / "f"
    one.write_text("x")
    await ssh.upload_file(conn, one, "/../../escaped.txt")
    assert not Path("/escaped.txt").exists()
    assert (_home(cluster) / "escaped.txt").read_text() == "x"


# -- SkyPilot's node conventions: ~/.bashrc, ~/sky_workdir, git workdirs, absolute mounts --


async def test_an_export_setup_appends_to_bashrc_reaches_run_and_python_is_unbuffered(cluster, conn):
    await ssh.start_phase(conn, "rc1", "setup", 'echo "export FROM_SETUP=yes-$STYX_NODE_RANK" >> ~/.bashrc',
                          {"STYX_NODE_RANK": "0"})
    assert (await _wait_ended(conn, "rc1", "setup")).exit_code == 0
    await ssh.start_phase(conn, "rc1", "run", 'echo "$FROM_SETUP $PYTHONUNBUFFERED"; echo "$-" | grep -q i && echo interactive')
    state = await _wait_ended(conn, "rc1")
    log = await ssh.read_log(conn, "rc1", "run", 0, 4096)
    assert state.exit_code == 0 and log == b"yes-0 1\ninteractive\n"  # no "no job control" noise
    await ssh.run(conn, "sed -i '/FROM_SETUP/d' ~/.bashrc")


async def test_a_cancelled_interactive_script_stops_at_once_and_runs_nothing_after(cluster, conn):
    await ssh.start_phase(conn, "rc2", "run", "echo started; sleep 300; echo after-the-sleep > ~/rc2-after")
    await wait_for_async(lambda: _log_has(conn, "rc2", b"started"), 20, "the script to start")
    killed = await ssh.kill_phase(conn, "rc2", grace=30)
    assert killed == ["run"]
    assert not (_home(cluster) / "rc2-after").exists()


async def _log_has(conn, job: str, text: bytes) -> bool:
    return text in await ssh.read_log(conn, job, "run", 0, 1 << 16)


async def test_sky_workdir_names_the_last_synced_workdir_and_a_running_job_keeps_its_own(cluster, conn, tmp_path):
    home = _home(cluster)
    for job in ("sw1", "sw2"):
        src = tmp_path / job
        src.mkdir()
        (src / "who.txt").write_text(f"{job}\n")
    (home / "sky_workdir").mkdir(exist_ok=True)  # a real directory someone made: kept aside
    (home / "sky_workdir" / "mine.txt").write_text("keep me")

    await ssh.upload_dir(conn, tmp_path / "sw1", "styx_workdir/sw1")
    await ssh.point_sky_workdir(conn, "styx_workdir/sw1")
    await ssh.start_phase(conn, "sw1", "run", 'pwd; cat who.txt; while [ ! -e ~/sw-go ]; do sleep 0.05; done; cat who.txt')
    await wait_for_async(lambda: _log_has(conn, "sw1", b"sw1\n"), 20, "job sw1 to start")

    await ssh.upload_dir(conn, tmp_path / "sw2", "styx_workdir/sw2")
    await ssh.point_sky_workdir(conn, "styx_workdir/sw2")
    assert os.readlink(home / "sky_workdir") == "styx_workdir/sw2"
    (home / "sw-go").touch()
    assert (await _wait_ended(conn, "sw1")).exit_code == 0
    log = (await ssh.read_log(conn, "sw1", "run", 0, 4096)).decode()
    assert log == f"{home}/sky_workdir\nsw1\nsw1\n"  # entered as ~/sky_workdir, its own files to the end

    await ssh.start_phase(conn, "sw3", "run", "pwd; cat who.txt")  # no workdir of its own: the last one
    await _wait_ended(conn, "sw3")
    assert await ssh.read_log(conn, "sw3", "run", 0, 4096) == f"{home}/sky_workdir\nsw2\n".encode()
    kept = [p for p in home.iterdir() if p.name.startswith("sky_workdir.replaced-")]
    assert len(kept) == 1 and (kept[0] / "mine.txt").read_text() == "keep me"


def _repo(tmp_path: Path) -> tuple[str, str]:
    """A bare repository (file:// URL) with tag v1, and the commit id of v1."""
    import subprocess

    work = tmp_path / "work"
    work.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=work,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (work / "VERSION").write_text("v1\n")
    git("add", "VERSION")
    git("commit", "-q", "-m", "v1")
    git("tag", "v1")
    first = git("rev-parse", "HEAD")
    (work / "VERSION").write_text("v2\n")
    git("commit", "-q", "-am", "v2")
    git("clone", "-q", "--bare", str(work), str(tmp_path / "r.git"))
    return f"file://{tmp_path / 'r.git'}", first


async def test_git_clone_checks_out_a_tag_a_commit_or_the_default_branch(cluster, conn, tmp_path):
    url, first = _repo(tmp_path)
    dest = _home(cluster) / "styx_workdir" / "g1"
    for ref, version in (("v1", "v1"), (first, "v1"), (None, "v2"), ("main", "v2")):
        await ssh.git_clone(conn, url, ref, "styx_workdir/g1")
        assert (dest / "VERSION").read_text() == f"{version}\n", ref
    assert not [p for p in dest.parent.iterdir() if ".styx-" in p.name]  # no temporary left


async def test_git_clone_says_what_failed_and_when_the_node_has_no_git(cluster, conn, tmp_path):
    url, _ = _repo(tmp_path)
    with pytest.raises(ssh.GitCloneFailed, match="at no-such-tag"):
        await ssh.git_clone(conn, url, "no-such-tag", "styx_workdir/g2")
    with pytest.raises(ssh.GitCloneFailed, match="could not clone file:///nowhere"):
        await ssh.git_clone(conn, "file:///nowhere", None, "styx_workdir/g2")
    with pytest.raises(ssh.GitMissing):
        await ssh.git_clone(conn, url, None, "styx_workdir/g2", env={"PATH": str(tmp_path / "empty")})
    assert not (_home(cluster) / "styx_workdir" / "g2").exists()


async def test_a_mount_to_an_absolute_path_is_a_link_to_files_in_the_home(cluster, conn, tmp_path):
    # On a node whose exec is not confined (an AWS or SSH host): the link is made outside the home.
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "weights.bin").write_text("w")
    outside = tmp_path / "outside" / "checkpoint" / "13b"
    await ssh.upload_dir(conn, src, f"{ssh.FILE_MOUNTS_ROOT}{outside}")
    await ssh.link_absolute_mount(conn, str(outside), f"{ssh.FILE_MOUNTS_ROOT}{outside}")
    assert outside.is_symlink() and (outside / "weights.bin").read_text() == "w"
    await ssh.link_absolute_mount(conn, str(outside), f"{ssh.FILE_MOUNTS_ROOT}{outside}")  # again: same link

    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ssh.MountRefused, match="already exists"):
        await ssh.link_absolute_mount(conn, str(taken), f"{ssh.FILE_MOUNTS_ROOT}{taken}")

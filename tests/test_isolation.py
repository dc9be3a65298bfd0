"""Multi-user safety: a non-admin's jobs on local nodes cannot reach the control plane.

Against the real stack (Temporal, worker and API subprocesses, node servers, real SSH), with a
NON-ADMIN user, bob, made through the API. When Styx runs as root (as here and in CI) every
local cluster's jobs run as the cluster's own unprivileged user: bob's job tries to read
Styx's credentials, keys and database, another cluster's node home, and a secret an earlier
job on its own cluster was given — and each attempt must fail. When Styx does not run as
root (here: ``STYX_LOCAL_ISOLATION=0``) non-admins are kept off local clusters unless the
admin allows them. And a worker without AWS credentials never asks the instance-metadata
address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import http.server
import json
import os
import pwd
import shutil
import socket
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from styx import ssh
from styx.config import Settings, keep_off_instance_metadata
from styx.providers.base import ProvisionError
from styx.providers.local import procs, users
from styx.providers.local.provider import LocalProvider
from styx.sdk.client import Client
from styx.sdk.transport import StyxError
from styx.secrets import seal
from styx.ssh import SshPool
from styx.ssh.sftp import read_range
from tests.fixtures.stack import StyxStack, traversable_tmp_dir, wait_for, wait_for_async

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="jobs run as per-cluster users only when Styx runs as root (it creates them); run as root, as CI does")


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bob(stack: StyxStack) -> Iterator[Client]:
    """A non-admin user, made by the admin through the API."""
    made = stack.client().create_user(f"bob{uuid.uuid4().hex[:6]}")
    with Client(stack.settings.api_url, made.token) as client:
        assert client.me().is_admin is False
        yield client


def run_job(client: Client, cluster: str, script: str, **task) -> tuple[str, str]:
    """Queue ``script`` on ``cluster`` (launching it on first use); (status, log)."""
    body = {"resources": {"cpus": 1}, "run": script, **task}
    submitted = client.launch(body, cluster=cluster)
    job = client.wait(cluster, submitted.job_id, timeout=120)
    return job.status, client.logs(cluster, submitted.job_id)


def node_home(stack: StyxStack, cluster: str, rank: int = 0) -> Path:
    return stack.nodes_root / cluster / f"node-{rank}" / "home"


def job_user_of(stack: StyxStack, cluster: str) -> pwd.struct_passwd:
    name = json.loads((stack.nodes_root / cluster / "cluster.json").read_text())["user"]
    return pwd.getpwnam(name)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- a non-admin's job and the control plane ---------------------------------------------


@needs_root
def test_a_non_admins_job_cannot_read_styx_credentials_keys_or_database(stack: StyxStack, bob: Client):
    home = stack.home
    seal(home, {"made": "so that secret.key exists"})
    private = [home / "credentials", home / "secret.key", home / "ssh" / "id_ed25519", home / "styx.db"]
    assert all(p.exists() for p in private)
    script = "\n".join([
        f'for f in {" ".join(str(p) for p in private)}; do',
        '  if head -c 64 "$f" > /dev/null 2>&1; then echo "READ $f"; else echo "DENIED $f"; fi',
        "done",
        f"cat {home / 'credentials'}",
        f"ls {home}",
        'echo "user=$(id -un) uid=$(id -u)"',
    ])
    status, log = run_job(bob, "bob-box", script)

    assert status == "SUCCEEDED", log
    assert "READ" not in log
    for p in private:
        assert f"DENIED {p}" in log
    assert "Permission denied" in log
    assert stack.token not in log
    assert "user=styx-c-" in log and "uid=0" not in log


def _landlock_net_abi() -> int:
    from styx.providers.local import netguard

    return netguard.abi_version()


@needs_root
@pytest.mark.skipif(_landlock_net_abi() < 4,
                    reason="Landlock restricts TCP ports from ABI 4 (Linux 6.7) on; this kernel cannot")
def test_a_non_admins_job_cannot_connect_to_temporal_but_reaches_other_loopback_ports(
        stack: StyxStack, bob: Client):
    temporal_port = int(stack.settings.temporal_address.rpartition(":")[2])
    assert temporal_port in stack.settings.control_plane_ports()
    with socket.socket() as other:  # some other loopback service: not the control plane's
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        other_port = other.getsockname()[1]
        script = "\n".join([
            "python3 - <<'EOF'",
            "import socket",
            f"for name, port in (('temporal', {temporal_port}), ('other', {other_port})):",
            "    try:",
            "        socket.create_connection(('127.0.0.1', port), timeout=10).close()",
            "        print(name, 'CONNECTED')",
            "    except OSError as exc:",
            "        print(name, 'REFUSED', exc.errno, exc.strerror)",
            "EOF",
        ])
        status, log = run_job(bob, "bob-box", script)

    assert status == "SUCCEEDED", log
    assert "temporal REFUSED 13 Permission denied" in log, log  # EACCES: Landlock, not the server
    assert "other CONNECTED" in log, log


def test_the_control_plane_ports_jobs_may_not_connect_to():
    base = Settings(home=Path("/nonexistent"), db_url="sqlite:////x/styx.db", temporal_port=7733,
                    temporal_ui_port=7734, worker_metrics_port=7790, api_port=7780)
    # The embedded dev server's gRPC and UI ports, the worker's metrics; never the API's.
    assert base.control_plane_ports() == (7733, 7734, 7790)
    assert dataclasses.replace(base, worker_metrics_port=0).control_plane_ports() == (7733, 7734)
    # A PostgreSQL on loopback (its port, or 5432), not one elsewhere nor over a Unix socket.
    for url, ports in [
        ("postgresql+psycopg://styx:pw@127.0.0.1:6543/styx", (6543,)),
        ("postgresql://styx@localhost/styx", (5432,)),
        ("postgresql://styx@[::1]:5433/styx", (5433,)),
        ("postgresql://styx@db.example.com:5432/styx", ()),
        ("postgresql:///styx?host=/var/run/postgresql", ()),
    ]:
        assert dataclasses.replace(base, db_url=url).control_plane_ports() == tuple(sorted((7733, 7734, 7790) + ports)), url
    # Temporal run elsewhere: its port when that is loopback; no dev-server ports then.
    assert dataclasses.replace(base, external_temporal="127.0.0.1:7233").control_plane_ports() == (7233, 7790)
    assert dataclasses.replace(base, external_temporal="temporal.example.com:7233").control_plane_ports() == (7790,)


@needs_root
def test_a_job_cannot_read_another_clusters_node_home(stack: StyxStack, bob: Client):
    admin = stack.client()
    status, _ = run_job(admin, "admin-box", "echo admin-private > ~/private.txt; chmod 644 ~/private.txt")
    assert status == "SUCCEEDED"
    theirs = node_home(stack, "admin-box")
    assert (theirs / "private.txt").read_text() == "admin-private\n"

    status, log = run_job(bob, "bob-box", "\n".join([
        f"cat {theirs}/private.txt",
        f"ls {theirs}",
        f"ls {stack.nodes_root}",
        f"ls {stack.nodes_root}/admin-box",
        "echo done",
    ]))

    assert status == "SUCCEEDED" and "done" in log, log
    assert "admin-private" not in log
    assert log.count("Permission denied") == 4, log
    assert job_user_of(stack, "bob-box").pw_uid != job_user_of(stack, "admin-box").pw_uid


@needs_root
def test_a_secret_is_gone_from_the_node_once_its_job_ended(stack: StyxStack, bob: Client):
    value = f"sv-{uuid.uuid4().hex}"
    half = len(value) // 2
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    # The job proves it got the secret without the value ever being in a script.
    status, log = run_job(bob, "bob-box", 'echo "sha=$(printf %s "$BOB_TOKEN" | sha256sum | cut -c1-16)"',
                          secrets={"BOB_TOKEN": value})
    assert status == "SUCCEEDED" and f"sha={digest}" in log, log

    # The next job on the same cluster (same user) looks for it on disk and in /proc.
    status, log = run_job(bob, "bob-box", "\n".join([
        f'v="{value[:half]}""{value[half:]}"',
        'if grep -rqF "$v" ~ 2>/dev/null; then echo FOUND-IN-HOME; else echo not-in-home; fi',
        "for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$e\" 2>/dev/null; done > ~/environs",
        'if grep -qF "$v" ~/environs; then echo FOUND-IN-PROC; else echo not-in-proc; fi',
        "rm -f ~/environs",
        "ls ~/.styx/jobs/*/",
    ]))

    assert status == "SUCCEEDED", log
    assert "not-in-home" in log and "not-in-proc" in log and "FOUND" not in log
    assert "run.sh" in log and "run.env" not in log
    for path in node_home(stack, "bob-box").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert value.encode() not in path.read_bytes(), f"the secret is in {path}"


@needs_root
def test_jobs_get_a_clean_environment_outside_styx_virtualenv(stack: StyxStack, bob: Client):
    status, log = run_job(bob, "bob-box", "\n".join([
        "python3 -c 'import sys; print(\"prefix=\" + sys.prefix)'",
        'echo "which=$(command -v python3)"',
        "env | cut -d= -f1 | sort | tr '\\n' ' '; echo",
    ]))

    assert status == "SUCCEEDED", log
    prefix = log.split("prefix=", 1)[1].split()[0]
    which = log.split("which=", 1)[1].split()[0]
    venv = os.path.realpath(sys.prefix)
    assert os.path.realpath(prefix) != venv and not os.path.realpath(which).startswith(venv + os.sep)
    names = set(log.strip().splitlines()[-1].split())
    assert {"HOME", "PATH", "STYX_JOB_ID"} <= names
    assert not names & {"STYX_HOME", "STYX_TOKEN", "STYX_API_URL", "STYX_TEMPORAL_ADDRESS", "STYX_DB_URL",
                        "STYX_TASK_QUEUE", "VIRTUAL_ENV", "PYTHONPATH"}


@needs_root
def test_files_are_private_and_node_homes_belong_to_the_job_user(stack: StyxStack, bob: Client):
    status, _ = run_job(bob, "bob-box", "true", workdir=str(_workdir(stack)))
    assert status == "SUCCEEDED"
    home = stack.home
    assert mode(home) == 0o700
    for name in ("styx.db", "credentials", "secret.key", "ssh/id_ed25519"):
        assert mode(home / name) == 0o600, name
    assert mode(home / "logs") == 0o700
    assert all(mode(p) == 0o600 for p in (home / "logs").iterdir())

    user = job_user_of(stack, "bob-box")
    assert user.pw_uid != 0 and user.pw_name.startswith("styx-c-")
    nh = node_home(stack, "bob-box")
    assert mode(nh) == 0o700 and (nh.stat().st_uid, nh.stat().st_gid) == (user.pw_uid, user.pw_gid)
    for d in (stack.nodes_root, stack.nodes_root / "bob-box", nh.parent):
        assert mode(d) == 0o711 and d.stat().st_uid == 0, d
    # The workdir arrived over SFTP as the job user's.
    uploaded = [p for p in (nh / "styx_workdir").rglob("*")]
    assert uploaded and all(p.lstat().st_uid == user.pw_uid for p in uploaded)
    local = next(c for c in stack.client().check() if c.provider == "local")
    assert local.ok and "jobs run as a per-cluster user" in local.reason


def _workdir(stack: StyxStack) -> Path:
    d = stack.home.parent / "bob-project"
    (d / "sub").mkdir(parents=True, exist_ok=True)
    (d / "sub" / "data.txt").write_text("data\n")
    return d


@needs_root
def test_stop_kills_every_process_of_the_job_user_and_down_removes_the_user(stack: StyxStack, bob: Client):
    # A job leaves a process behind that changed its environment (no HOME of the node).
    status, log = run_job(bob, "bob-escape",
                          "env -i HOME=/tmp setsid sleep 600 < /dev/null > /dev/null 2>&1 & echo left-behind")
    assert status == "SUCCEEDED" and "left-behind" in log
    user = job_user_of(stack, "bob-escape")
    assert procs.processes_of_user(user.pw_uid)

    bob.stop("bob-escape")
    assert procs.processes_of_user(user.pw_uid) == []
    bob.down("bob-escape")

    with pytest.raises(KeyError):
        pwd.getpwnam(user.pw_name)
    assert not (stack.nodes_root / "bob-escape").exists()


# -- the node server itself: SFTP, terminals, the nodes directory --------------------------


@pytest.fixture
async def isolated(tmp_path: Path):
    key = ssh.ensure_client_key(tmp_path / "id_ed25519")
    parent = traversable_tmp_dir()
    provider = LocalProvider(parent / "nodes", ssh.public_key_line(key), isolate=True)
    pool = SshPool(key)
    try:
        yield provider, pool
    finally:
        await pool.close()
        for cluster in provider.list_clusters():
            await provider.terminate(cluster, None)
        shutil.rmtree(parent, ignore_errors=True)


@needs_root
async def test_sftp_and_terminals_act_with_the_job_users_rights(isolated, tmp_path: Path):
    provider, pool = isolated
    node = (await provider.provision("files", 1, {})).endpoints()[0]
    user = pwd.getpwnam(json.loads((provider.root / "files" / "cluster.json").read_text())["user"])
    home = provider.root / "files" / "node-0" / "home"
    conn = await pool.get(node)
    # Styx's side: a file only root can read (tmp_path lies under pytest's 0700 directory).
    root_only = tmp_path / "root-only.txt"
    root_only.write_text("root eyes only")
    src = tmp_path / "tree"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("payload")

    await ssh.upload_dir(conn, src, "~/tree")
    await ssh.upload_file(conn, root_only, "~/copy.txt")  # read by the worker, written by the user
    status, _, _ = await ssh.run(conn, f"ln -s {root_only} ~/link")
    assert status == 0
    async with conn.start_sftp_client() as sftp:
        names = set(await sftp.listdir("."))
        with pytest.raises(asyncssh.SFTPError):
            await read_range(sftp, "link", 0, 100)
        with pytest.raises(asyncssh.SFTPError):
            await sftp.put(str(src / "a" / "f.txt"), "/../../../../../tmp/escape.txt")

    assert {"tree", "copy.txt", "link"} <= names
    for p in [home / "tree", home / "tree" / "a", home / "tree" / "a" / "f.txt", home / "copy.txt"]:
        assert p.lstat().st_uid == user.pw_uid, p
    assert (home / "copy.txt").read_text() == "root eyes only"
    assert not Path("/tmp/escape.txt").exists()

    shell = await conn.create_process(term_type="xterm", encoding="utf-8")
    shell.stdin.write("echo who=$(id -un); test -O $(tty) && echo tty-owned; exit 3\n")
    out = await asyncio.wait_for(shell.stdout.read(), 20)
    await shell.wait()
    assert f"who={user.pw_name}" in out and "tty-owned" in out
    assert shell.exit_status == 3


@needs_root
async def test_a_nodes_directory_job_users_cannot_reach_is_refused_naming_the_setting(tmp_path: Path):
    key = ssh.ensure_client_key(tmp_path / "id_ed25519")
    provider = LocalProvider(tmp_path / "closed" / "nodes", ssh.public_key_line(key), isolate=True)
    os.chmod(tmp_path, 0o700)
    with pytest.raises(ProvisionError, match="STYX_LOCAL_NODES_DIR"):
        await provider.provision("c", 1, {})
    assert users.lookup(users.job_user_name(provider.root, "c")) is None
    await provider.terminate("c", None)


def test_without_useradd_a_job_user_is_added_to_and_removed_from_the_account_files(tmp_path: Path):
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), etc / name)
    before = {n: (etc / n).read_text() for n in ("passwd", "group") if (etc / n).exists()}
    shadow_mode = mode(etc / "shadow") if (etc / "shadow").exists() else None

    uid, gid = users.add_user_files("styx-c-0123456789", "styx job user demo", etc)

    line = next(x for x in (etc / "passwd").read_text().splitlines() if x.startswith("styx-c-0123456789:"))
    assert line == f"styx-c-0123456789:x:{uid}:{gid}:styx job user demo:/nonexistent:/bin/bash"
    assert 100 <= uid <= 999 and f":x:{uid}:" not in before["passwd"]
    assert f"styx-c-0123456789:x:{gid}:" in (etc / "group").read_text()
    if shadow_mode is not None:
        assert mode(etc / "shadow") == shadow_mode
        assert "styx-c-0123456789:!:" in (etc / "shadow").read_text()
    with pytest.raises(users.UserError, match="already exists"):
        users.add_user_files("styx-c-0123456789", "again", etc)

    users.remove_user_files("styx-c-0123456789", etc)
    assert {n: (etc / n).read_text() for n in before} == before
    assert "styx-c-0123456789" not in (etc / "shadow").read_text() if shadow_mode is not None else True


def test_an_existing_styx_home_is_made_private_at_start(tmp_path: Path):
    home = tmp_path / "old-install"
    (home / "logs").mkdir(parents=True)
    (home / "ssh").mkdir()
    files = [home / "styx.db", home / "temporal.db", home / "credentials", home / "secret.key",
             home / "ssh" / "id_ed25519", home / "logs" / "worker.log"]
    for f in files:
        f.write_text("x")
        os.chmod(f, 0o644)
    for d in (home, home / "logs", home / "ssh"):
        os.chmod(d, 0o755)

    Settings(home=home, db_url=f"sqlite:///{home / 'styx.db'}").ensure_home()

    assert [mode(d) for d in (home, home / "logs", home / "ssh")] == [0o700] * 3
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    made = home / "made-later"
    made.write_text("y")  # after ensure_home the process's umask keeps new files private
    assert mode(made) == 0o600


# -- without job users: non-admins are kept off local clusters ----------------------------


@pytest.fixture(scope="module")
def plain_stack(temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    """A stack whose local nodes run jobs as Styx's own user (as when Styx is not root)."""
    address = temporal_env.client.service_client.config.target_host
    s = StyxStack(tmp_path_factory.mktemp("plain-home"), address, extra_env={"STYX_LOCAL_ISOLATION": "0"})
    try:
        yield s.start()
    finally:
        s.stop()


def _restart_api(stack: StyxStack, **env: str) -> None:
    assert stack.api is not None
    stack.api.terminate()
    stack.api.wait(timeout=30)
    stack.env.update(env)
    stack.api = stack._spawn("api")
    url = f"{stack.settings.api_url}/healthz"

    def healthy() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, "the API to be healthy again")


def test_without_job_users_a_non_admin_is_refused_local_jobs_until_the_admin_allows_them(plain_stack: StyxStack):
    admin = plain_stack.client()
    carol_token = admin.create_user("carol").token
    up = admin.launch({"resources": {"cpus": 1}, "run": "echo admin-ok"}, cluster="shared")
    assert admin.wait("shared", up.job_id, timeout=120).status == "SUCCEEDED"
    admin.share("shared", "carol")  # carol may use it: only the local-jobs policy stands in her way

    with Client(plain_stack.settings.api_url, carol_token) as carol:
        for attempt in (lambda: carol.launch({"run": "cat ~/../../credentials"}, cluster="carols"),
                        lambda: carol.exec("shared", {"run": "true"})):
            with pytest.raises(StyxError) as refused:
                attempt()
            assert refused.value.status_code == 403
            assert "STYX_LOCAL_ALLOW_NONADMIN=1" in refused.value.message
        assert [c.name for c in admin.status()] == ["shared"]  # nothing was launched
        assert len(admin.queue("shared")) == 1
        assert "not isolated" in next(c for c in admin.check() if c.provider == "local").reason

        _restart_api(plain_stack, STYX_LOCAL_ALLOW_NONADMIN="1")
        allowed = carol.exec("shared", {"run": "echo carol-ok"})
        assert carol.wait("shared", allowed.job_id, timeout=120).status == "SUCCEEDED"
        assert "carol-ok" in carol.logs("shared", allowed.job_id)
    admin.down("shared")


# -- no instance metadata by default -----------------------------------------------------


class _MetadataCounter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def _answer(self) -> None:
        type(self).hits.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def metadata_endpoint() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for 169.254.169.254 on loopback that counts the requests it gets."""
    _MetadataCounter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetadataCounter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", _MetadataCounter.hits
    finally:
        server.shutdown()
        server.server_close()


def _restart_worker(stack: StyxStack, env: dict[str, str]) -> None:
    """A new worker whose environment has no AWS settings but ``env``."""
    stack.kill_worker()
    for key in [k for k in stack.env if k.startswith("AWS_") or k == "STYX_AWS_INSTANCE_ROLE"]:
        del stack.env[key]
    stack.env.update(env)
    stack.start_worker()


def test_a_worker_without_aws_credentials_never_asks_the_instance_metadata(
        plain_stack: StyxStack, metadata_endpoint, tmp_path: Path):
    url, hits = metadata_endpoint
    base = {"HOME": str(tmp_path), "AWS_EC2_METADATA_SERVICE_ENDPOINT": url, "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1"}
    admin = plain_stack.client()
    saved = dict(plain_stack.env)
    try:
        _restart_worker(plain_stack, base)
        aws = next(c for c in admin.check() if c.provider == "aws")
        assert not aws.ok and "no AWS credentials" in aws.reason
        assert hits == []

        # The same worker told to use the instance's role does ask (so the silence above meant something).
        _restart_worker(plain_stack, {**base, "STYX_AWS_INSTANCE_ROLE": "1"})
        admin.check()
        assert hits, "the metadata stand-in was never asked: the test proves nothing"
    finally:
        plain_stack.kill_worker()
        plain_stack.env.clear()
        plain_stack.env.update(saved)
        plain_stack.start_worker()


def test_keep_off_instance_metadata_follows_the_configured_credentials(monkeypatch, tmp_path: Path):
    for key in [k for k in os.environ if k.startswith("AWS_")] + ["STYX_AWS_INSTANCE_ROLE"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    keep_off_instance_metadata()
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"

    for configured in ({"AWS_ACCESS_KEY_ID": "AKIA..."}, {"STYX_AWS_INSTANCE_ROLE": "1"}):
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
        with monkeypatch.context() as m:
            for k, v in configured.items():
                m.setenv(k, v)
            keep_off_instance_metadata()
            assert "AWS_EC2_METADATA_DISABLED" not in os.environ
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@needs_root
async def test_secrets_reach_the_job_byte_for_byte_and_no_leftover_outlives_the_phase(isolated):
    provider, pool = isolated
    node = (await provider.provision("secrets", 1, {})).endpoints()[0]
    conn = await pool.get(node)
    tricky = "it's $HOME `id` \\n \"q\"\nsecond line\n\n  ünïcode\r\nend\n"
    digest = hashlib.sha256(tricky.encode()).hexdigest()
    script = 'printf %s "$S1" | sha256sum; echo "plain=$PLAIN"; ls ~/.styx/jobs/7/'

    await ssh.start_phase(conn, "7", "run", script, {"PLAIN": "visible"}, secrets={"S1": tricky, "S2": "x"})
    state = await _wait_phase(conn, "7", "run")
    log = (await read_range(conn, ".styx/jobs/7/run.log", 0, 10_000)).decode()

    assert state.exit_code == 0, log
    assert digest in log and "plain=visible" in log and "run.env" not in log
    wrapper = (await read_range(conn, ".styx/jobs/7/run.sh", 0, 100_000)).decode()
    assert "visible" in wrapper and "second line" not in wrapper

    # A phase whose wrapper died before reading its secrets: the next state check removes them.
    status, _, _ = await ssh.run(conn, "umask 077; echo 'export S=left' > ~/.styx/jobs/7/run.env")
    assert status == 0
    await ssh.phase_state(conn, "7", "run")
    assert (await ssh.run(conn, "test -e ~/.styx/jobs/7/run.env"))[0] == 1


async def _wait_phase(conn: asyncssh.SSHClientConnection, job: str, phase: str):
    async def ended():
        state = await ssh.phase_state(conn, job, phase)
        return state if not state.running else None

    return await wait_for_async(ended, 30, f"phase {phase} of job {job} to end")

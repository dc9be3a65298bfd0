"""Every failure of the SDK is a ``styx.StyxError`` with a hint, and every `styx` command that
talks to the API prints one line and exits 1 when the API is down or the input is bad —
never an httpx exception, never a traceback. No stack here: the API is a dead port, or an
httpx MockTransport playing the API's answers."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import styx
from styx.sdk import transport as sdk_transport
from tests.fixtures.temporal import free_port


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def no_pause(monkeypatch):
    monkeypatch.setattr(sdk_transport, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def test_a_dead_api_is_an_api_unreachable_error_asking_whether_styx_up_runs(dead_url):
    with styx.Client(dead_url, "token") as client, pytest.raises(styx.ApiUnreachable) as caught:
        client.status()
    assert isinstance(caught.value, styx.StyxError)
    assert caught.value.status_code is None
    assert dead_url in str(caught.value) and "is `styx up` running?" in str(caught.value)


async def test_the_async_client_gives_the_same_error(dead_url):
    async with styx.AsyncClient(dead_url, "token") as client:
        with pytest.raises(styx.ApiUnreachable, match="styx up"):
            await client.queue("dev")


def test_a_submission_that_never_gets_an_answer_is_sent_a_bounded_number_of_times_with_one_key(no_pause):
    keys = []

    def never_answers(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        raise httpx.ReadTimeout("no answer", request=request)

    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(never_answers)) as client:
        with pytest.raises(styx.ApiUnreachable) as caught:
            client.exec("dev", "echo hi")
    assert len(keys) == sdk_transport.SUBMIT_ATTEMPTS and len(set(keys)) == 1
    assert caught.value.idempotency_key == keys[0]
    assert f"idempotency_key={keys[0]!r}" in str(caught.value)  # how to retry safely


def test_a_submission_the_busy_database_refused_is_sent_again_with_its_key_and_temporal_down_is_not(no_pause):
    keys = []

    def busy_twice(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) < 3:  # the API's answer when SQLite's write lock was held too long
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "the database is busy"})
        return httpx.Response(201, json={"managed_id": 5, "name": "t", "workflow_id": "managed/5"})

    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(busy_twice)) as client:
        assert client.jobs.launch({"run": "true"}).managed_id == 5
    assert len(keys) == 3 and len(set(keys)) == 1

    calls = []

    def temporal_down(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"detail": "Temporal is not reachable"})

    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(temporal_down)) as client:
        with pytest.raises(styx.Unavailable, match="Temporal is not reachable"):
            client.jobs.launch({"run": "true"})
    assert len(calls) == 1


def test_reads_are_not_retried(no_pause):
    calls = []

    def refuses(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(refuses)) as client:
        with pytest.raises(styx.ApiUnreachable):
            client.status()
    assert len(calls) == 1 and "Idempotency-Key" not in calls[0].headers


@pytest.mark.parametrize("status, body, kind, hint", [
    (401, {"detail": "missing or invalid API token"}, styx.Unauthorized, "STYX_TOKEN"),
    (403, {"detail": "only an admin can do this"}, styx.Forbidden, "admin"),
    (404, {"detail": "cluster 'dev' not found"}, styx.NotFound, None),
    (409, {"detail": "job 3 already finished"}, styx.Conflict, None),
    (413, {"detail": "request body larger than 4 bytes"}, styx.Invalid, None),
    (422, {"detail": "body.task: Field required"}, styx.Invalid, None),
    (503, {"detail": "Temporal is not reachable"}, styx.Unavailable, "styx doctor"),
    (500, "<html>Internal Server Error</html>", styx.StyxError, None),
    (502, ["not", "a", "dict"], styx.StyxError, None),
])
def test_each_error_answer_is_its_own_styx_error(status, body, kind, hint):
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(kind) as caught:
            client.cluster("dev")
    assert caught.value.status_code == status
    assert caught.value.message == (body["detail"] if isinstance(body, dict) else body if isinstance(body, str)
                                    else '["not","a","dict"]')
    if hint:
        assert hint in caught.value.hint and hint in str(caught.value)


def test_an_answer_that_is_not_json_is_a_styx_error():
    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(
            lambda request: httpx.Response(200, text="<html>a proxy page</html>"))) as client:
        with pytest.raises(styx.StyxError, match="not JSON"):
            client.status()


def test_bad_arguments_are_invalid_and_still_value_errors(tmp_path):
    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(lambda r: httpx.Response(500))) as c:
        for call in (lambda: c.repo("no-slash"), lambda: c.add_key(tmp_path / "missing.pub"),
                     lambda: c.exec("dev", {"run": "true", "resources": {"cpus": "many"}}),
                     lambda: c.exec("dev", "true", idempotency_key="not ok")):
            with pytest.raises(styx.Invalid) as caught:
                call()
            assert isinstance(caught.value, ValueError)


def test_waiting_too_long_is_a_wait_timeout():
    job = {"cluster": "dev", "job_id": 1, "status": "RUNNING", "submitted_at": "2024-01-01T00:00:00Z",
           "workflow_id": "cluster/dev/job/1"}
    with styx.Client("http://api.invalid", "t", transport=httpx.MockTransport(
            lambda request: httpx.Response(200, json=job))) as client:
        with pytest.raises(styx.WaitTimeout) as caught:
            client.wait("dev", 1, timeout=0.05, poll=0.01)
    assert isinstance(caught.value, TimeoutError)


def test_a_bad_api_url_is_invalid_naming_the_variable():
    with pytest.raises(styx.Invalid, match="STYX_API_URL"):
        styx.Client("http://[::1", "t")


# ---------------------------------------------------------------------------- the CLI


def _commands(tmp: Path) -> list[list[str]]:
    pub = tmp / "id.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDs2h1D2NKAFdJ+ofq/WQBCz8SZB5T1yB1L4eHQdJjfh me\n")
    return [
        ["launch", "-y", "-c", "dev", "echo hi"], ["exec", "dev", "echo hi"], ["status"], ["status", "--orphans"],
        ["queue", "dev"], ["logs", "dev", "1"], ["logs", "dev"], ["logs", "dev", "1", "--status"],
        ["cancel", "dev", "1"], ["stop", "dev", "-y"], ["start", "dev"], ["down", "dev", "-y"],
        ["down", "--all", "-y"], ["autostop", "dev", "-i", "5"], ["check"], ["doctor"],
        ["user", "create", "bob"], ["user", "list"], ["key", "add", str(pub)], ["key", "list"],
        ["key", "remove", "3"], ["repo", "create", "ml"], ["repo", "list"], ["repo", "show", "a/ml"],
        ["repo", "update", "a/ml", "--private"], ["repo", "delete", "a/ml", "-y"], ["repo", "runs", "a/ml"],
        ["repo", "status", "a/ml", "main"], ["repo", "collab", "add", "a/ml", "bob", "--read"],
        ["repo", "collab", "list", "a/ml"], ["repo", "collab", "remove", "a/ml", "bob"],
        ["branch", "list", "a/ml"], ["branch", "create", "a/ml", "dev"], ["branch", "delete", "a/ml", "dev"],
    ]


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "styx", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, cwd=cwd)


@pytest.fixture
def cli_env(tmp_path, dead_url) -> dict[str, str]:
    return {**os.environ, "STYX_HOME": str(tmp_path / "home"), "STYX_API_URL": dead_url, "STYX_TOKEN": "t",
            "COLUMNS": "60"}


def test_every_command_says_in_one_line_that_the_api_is_down(tmp_path, cli_env):
    commands = _commands(tmp_path)
    with ThreadPoolExecutor(4) as pool:  # four `styx` processes at a time
        results = list(pool.map(lambda args: _run(args, cli_env, tmp_path), commands))
    for args, result in zip(commands, results):
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is `styx up` running?" in lines[0], (args, result.stderr)


@pytest.mark.parametrize("args, says", [
    (["launch", "-y", "-c", "dev", "missing.yaml"], "no such file"),
    (["exec", "dev", "echo", "--idempotency-key", "not ok"], "Idempotency-Key"),
    (["key", "add", "/nonexistent/id.pub"], "no such public key file"),
    (["repo", "show", "no-slash"], "expected <owner>/<name>"),
    (["launch", "-y", "-c", "dev", "--cpus", "many", "echo"], "cpus"),
])
def test_bad_input_is_one_line_and_exit_code_1(tmp_path, cli_env, args, says):
    result = _run(args, cli_env, tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr

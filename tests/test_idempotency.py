"""Retry-safe submission end to end: a launch or exec whose answer is lost, sent again with
the same ``Idempotency-Key``, gives one job — through the real API process, the worker and
a local cluster, by hand (the header twice) and through the SDK (whose transport loses the
first answer after the request went through)."""

from __future__ import annotations

import httpx
import pytest

import styx
from styx.sdk.client import AsyncClient, Client
from tests.fixtures.stack import StyxStack

pytestmark = pytest.mark.slow
CLUSTER = "once"


def _post(stack: StyxStack, path: str, body: dict, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{stack.settings.api_url}{path}", json=body, headers=headers, timeout=60)


class LoseFirstAnswer(httpx.BaseTransport):
    """Sends every request for real; the first submission's answer is then thrown away and
    the caller sees a ReadTimeout, as when the API answered too late."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.submissions: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/jobs"):
            self.submissions.append(request.headers.get("Idempotency-Key"))
            if len(self.submissions) == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class RefuseFirstConnection(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.submissions: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/jobs"):
            self.submissions.append(request.headers.get("Idempotency-Key"))
            if len(self.submissions) == 1:
                raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def launched(stack: StyxStack):
    """One local cluster, launched by the same request sent twice with one key."""
    body = {"cluster": CLUSTER, "task": {"run": "echo launched"}}
    first = _post(stack, "/api/v1/clusters", body, "launch-once")
    again = _post(stack, "/api/v1/clusters", body, "launch-once")
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    yield first.json(), again.json()
    stack.client().down(CLUSTER)


def _jobs(stack: StyxStack) -> list[int]:
    return sorted(j.job_id for j in stack.client().queue(CLUSTER))


def test_a_launch_sent_twice_with_one_key_queues_one_job(stack: StyxStack, launched):
    first, again = launched
    assert again["job_id"] == first["job_id"] == 1
    assert _jobs(stack) == [1]
    assert stack.client().wait(CLUSTER, 1, timeout=60).status == "SUCCEEDED"


def test_an_exec_sent_twice_with_one_key_queues_one_job_and_another_key_another(stack: StyxStack, launched):
    before = _jobs(stack)
    body = {"task": {"run": "echo exec"}}
    first = _post(stack, f"/api/v1/clusters/{CLUSTER}/jobs", body, "exec-once")
    again = _post(stack, f"/api/v1/clusters/{CLUSTER}/jobs", body, "exec-once")
    other = _post(stack, f"/api/v1/clusters/{CLUSTER}/jobs", body, "exec-twice")
    assert first.json()["job_id"] == again.json()["job_id"]
    assert other.json()["job_id"] == first.json()["job_id"] + 1
    assert _jobs(stack) == before + [first.json()["job_id"], other.json()["job_id"]]


def test_the_sdk_retries_a_lost_answer_with_the_same_key_and_gets_one_job(stack: StyxStack, launched):
    before = _jobs(stack)
    transport = LoseFirstAnswer()
    with Client(stack.settings.api_url, stack.token, transport=transport) as client:
        submitted = client.exec(CLUSTER, {"run": "echo only once"})
        assert client.wait(CLUSTER, submitted.job_id, timeout=60).status == "SUCCEEDED"
        assert client.logs(CLUSTER, submitted.job_id) == "only once\n"
    assert len(transport.submissions) == 2 and transport.submissions[0] == transport.submissions[1]
    assert transport.submissions[0]  # a uuid4 the SDK made up
    assert _jobs(stack) == before + [submitted.job_id]


async def test_the_async_sdk_retries_a_refused_connection_with_the_callers_key(stack: StyxStack, launched):
    before = _jobs(stack)
    transport = RefuseFirstConnection()
    async with AsyncClient(stack.settings.api_url, stack.token, transport=transport) as client:
        submitted = await client.exec(CLUSTER, {"run": "true"}, idempotency_key="nightly-0601")
        again = await client.exec(CLUSTER, {"run": "true"}, idempotency_key="nightly-0601")
    assert transport.submissions == ["nightly-0601"] * 3
    assert again.job_id == submitted.job_id
    assert _jobs(stack) == before + [submitted.job_id]


@pytest.mark.parametrize("key", ["has space", "x" * 65, "semi;colon", "ünïcode"])
def test_a_malformed_idempotency_key_is_a_422_naming_the_header_and_queues_nothing(stack: StyxStack, launched, key):
    before = _jobs(stack)
    headers = {"Authorization": f"Bearer {stack.token}", "Idempotency-Key": key}
    refused = httpx.post(f"{stack.settings.api_url}/api/v1/clusters/{CLUSTER}/jobs", json={"task": {"run": "true"}},
                         headers=[(k, v.encode()) for k, v in headers.items()], timeout=30)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("Idempotency-Key header: ")
    assert _jobs(stack) == before
    with pytest.raises(styx.Invalid, match="Idempotency-Key header"):
        stack.client().exec(CLUSTER, {"run": "true"}, idempotency_key=key)
    assert _jobs(stack) == before


def test_the_cli_sends_the_key_it_is_given(stack: StyxStack, launched):
    before = _jobs(stack)
    first = stack.cli("exec", CLUSTER, "-d", "--idempotency-key", "cli-once", "true", check=True)
    again = stack.cli("exec", CLUSTER, "-d", "--idempotency-key", "cli-once", "true", check=True)
    assert first.stdout.split()[:2] == again.stdout.split()[:2]  # "job N"
    assert len(_jobs(stack)) == len(before) + 1

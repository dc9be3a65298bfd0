"""Hostile or oversized requests against the real API process: each is refused with a clear
4xx answer naming the problem, in bounded time, and nothing changes."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.stack import StyxStack

pytestmark = pytest.mark.slow


def _post(stack: StyxStack, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}", "content-type": "application/json"}
    return httpx.post(f"{stack.settings.api_url}{path}", headers=headers, timeout=30, **kwargs)


def test_a_50_mb_body_is_refused_with_413_before_it_is_read(stack: StyxStack):
    before = stack.client().status(all=True)

    def body():
        chunk = b" " * (1 << 20)
        for _ in range(50):
            yield chunk

    refused = _post(stack, "/api/v1/clusters", content=body())
    assert refused.status_code == 413, refused.text
    assert "STYX_MAX_REQUEST_BYTES" in refused.json()["detail"]
    assert stack.client().status(all=True) == before


def test_a_5_mb_run_script_is_refused_with_413(stack: StyxStack):
    task = {"run": "echo " + "x" * (5 << 20)}
    refused = _post(stack, "/api/v1/clusters", json={"cluster": "huge", "task": task})
    assert refused.status_code == 413, refused.text[:300]
    assert not [c for c in stack.client().status(all=True) if c.name == "huge"]


def test_a_task_over_the_task_limit_is_a_422_naming_the_field(stack: StyxStack):
    task = {"run": "echo " + "x" * (2 << 20)}  # under the body limit, over the task limit
    refused = _post(stack, "/api/v1/clusters", json={"cluster": "big", "task": task})
    assert refused.status_code == 422, refused.text[:300]
    assert refused.json()["detail"].startswith("task.run: the task is")
    assert not [c for c in stack.client().status(all=True) if c.name == "big"]


@pytest.mark.parametrize("field, value", [
    ("num_nodes", 10 ** 20), ("resources", {"cpus": 1e308}), ("resources", {"cpus": "inf"}),
])
def test_unbounded_numbers_are_a_422_naming_the_field(stack: StyxStack, field, value):
    refused = _post(stack, "/api/v1/clusters", json={"cluster": "nums", "task": {field: value, "run": "true"}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(f"task.{field}")

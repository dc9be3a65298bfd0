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


@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/clusters", {"cluster": "f"}, "body.task: Field required"),
    ("/api/v1/clusters", {"cluster": "f", "task": {}, "idle_minutes_to_autostop": 10 ** 12}, "body.idle_minutes_to_autostop: "),
    ("/api/v1/clusters/f/autostop", {"idle_minutes": 10 ** 30}, "body.idle_minutes: "),
    ("/api/v1/clusters/f/jobs/cancel", {"job_ids": [2 ** 63]}, "body.job_ids.0: "),
    ("/api/v1/clusters/f/jobs/cancel", {"job_ids": list(range(1, 102))}, "body.job_ids: "),
])
def test_a_request_outside_its_model_is_a_one_line_422_naming_the_field(stack: StyxStack, path, body, field):
    before = stack.client().status(all=True)
    refused = _post(stack, path, json=body)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(field) and "\n" not in detail, detail
    assert stack.client().status(all=True) == before


def test_a_body_that_is_not_json_is_a_422_saying_so(stack: StyxStack):
    refused = _post(stack, "/api/v1/clusters", content=b"{not json")
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("body: invalid JSON")


@pytest.mark.parametrize("path", ["/api/v1/users/admin/keys/99999999999999999999999", "/api/v1/users/admin/keys/0"])
def test_a_key_id_outside_the_database_range_is_a_422_not_a_500(stack: StyxStack, path):
    refused = httpx.delete(f"{stack.settings.api_url}{path}", headers={"Authorization": f"Bearer {stack.token}"},
                           timeout=30)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("path.key_id: ")


def test_the_openapi_document_declares_one_error_schema_for_every_error(stack: StyxStack):
    doc = httpx.get(f"{stack.settings.api_url}/openapi.json", timeout=30).json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/healthz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
            if path.startswith("/api/v1/") and path != "/api/v1/doctor":
                assert {"401", "422"} <= operation["responses"].keys(), (method, path)
    launch = doc["paths"]["/api/v1/clusters"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "422", "503"} <= launch.keys()

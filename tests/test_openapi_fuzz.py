"""schemathesis fuzzes every operation of the real API process (the stack fixture: a Temporal
dev server, a worker, the API) from the API's own OpenAPI document, and every answer must be
what the document says: no 5xx, and each body valid against the schema declared for its status.

Three passes, each a fixed number of examples per operation (``derandomize``: the same
examples every run), all requests with a 10 s timeout, the whole test well under two minutes:

- as the admin, valid requests (positive) and invalid ones (negative);
- as a non-admin user, for the admin-only ``/check`` and ``/orphans`` (403 before anything
  starts: as the admin they would run workflows that talk to the cloud providers);
- without a token (401 everywhere but ``/healthz``).

Random path parameters mostly name nothing (a 404 early on), so every operation is fuzzed a
second time as the admin with its path naming things that exist: the user ``fuzzer``, the
repository ``admin/fuzzrepo``, and a cluster ``ghost`` with one finished job, written straight
into the database (no workflow runs it, so whatever reaches Temporal for it answers 404).

Nothing here may start an unbounded amount of work. Launch (``POST /api/v1/clusters``) and
a managed job's launch (``POST /api/v1/managed-jobs``) provision from nothing, so they are
never fuzzed with valid requests: only with bodies that the API's own request model refuses
(each example is checked against the model before it is sent, since pydantic accepts some
schema-invalid values, such as ``"5"`` for an integer). Exec and start act on an existing cluster, and the only one in this
stack is the ghost, which has no workflow: they answer 404 (or 409); exec is still fuzzed only
with invalid bodies, as launch. The test ends by checking that no other cluster or job, and no
node, was created.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel, ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JobStatus
from styx.contracts.rest import ExecRequest, LaunchRequest
from styx.contracts.rest_managed import ManagedJobRequest
from styx.db import Database
from tests.fixtures.stack import StyxStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 8
UNAUTHENTICATED_EXAMPLES = 3
#: The whole fuzzing budget; a run over it fails, so a slow-down is noticed.
BUDGET_SECONDS = 110
CHECKS = [not_a_server_error, response_schema_conformance]

ADMIN_ONLY = {("GET", "/api/v1/check"), ("GET", "/api/v1/orphans")}
#: Operations that start work, sent only bodies their request model refuses.
INVALID_ONLY: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/api/v1/clusters"): LaunchRequest,
    ("POST", "/api/v1/clusters/{name}/jobs"): ExecRequest,
    ("POST", "/api/v1/managed-jobs"): ManagedJobRequest,
}


def _refused_by(model: type[BaseModel]) -> Callable[[Any], bool]:
    def refused(case: Any) -> bool:
        if "json" not in (case.media_type or "application/json"):
            return False  # another content type: what the API makes of it is not ours to predict
        try:
            model.model_validate(case.body)
        except ValidationError:
            return True
        return False
    return refused


def _fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], base_url: str, examples: int,
          failures: list[str], keep: Callable[[Any], bool] | None = None,
          path_parameters: dict[str, str] | None = None) -> int:
    """Send ``examples`` generated requests; returns how many were sent."""
    sent = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        nonlocal sent
        if keep is not None and not keep(case):
            reject()
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        sent += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as err:
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {err}")

    try:
        run()
    except Unsatisfiable:
        pass  # e.g. no invalid request exists for an operation without parameters
    return sent


def _existing(path: str) -> dict[str, str]:
    """Path parameters naming things that exist, for the operations at ``path``."""
    if path.startswith("/api/v1/users/{name}"):
        known = {"name": "fuzzer"}
    elif path.startswith("/api/v1/repos/{owner}/{name}"):
        known = {"owner": "admin", "name": "fuzzrepo"}
    elif path.startswith("/api/v1/clusters/{name}"):
        known = {"name": "ghost", "job_id": "1"}
    else:
        return {}
    return {k: v for k, v in known.items() if "{" + k + "}" in path}


def _make_things_to_name(stack: StyxStack) -> dict[str, str]:
    """The user ``fuzzer`` (its token returned in headers), ``admin/fuzzrepo``, and the ghost cluster."""
    client = stack.client()
    user = client.create_user("fuzzer")
    client.create_repo("fuzzrepo")
    db = Database(stack.settings.db_url)
    db.clusters.upsert("ghost", provider="local", status=ClusterStatus.UP, num_nodes=1)
    db.clusters.upsert_job("ghost", 1, status=JobStatus.SUCCEEDED, run_summary="true")
    return {"Authorization": f"Bearer {user.token}"}


def _operations(stack: StyxStack) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{stack.settings.api_url}/openapi.json", timeout=10)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_answers_what_its_openapi_document_says(stack: StyxStack):
    admin = {"Authorization": f"Bearer {stack.token}"}
    non_admin = _make_things_to_name(stack)
    base_url = stack.settings.api_url
    operations = _operations(stack)
    assert len(operations) > 25, [f"{o.method} {o.path}" for o in operations]
    failures: list[str] = []
    sent = 0
    started = time.monotonic()
    for operation in operations:
        key = (operation.method.upper(), operation.path)
        if key in ADMIN_ONLY:
            for mode in GenerationMode:
                sent += _fuzz(operation, mode, non_admin, base_url, EXAMPLES, failures)
        elif key in INVALID_ONLY:
            sent += _fuzz(operation, GenerationMode.NEGATIVE, admin, base_url, EXAMPLES, failures,
                          keep=_refused_by(INVALID_ONLY[key]))
        else:
            existing = _existing(operation.path)
            for mode in GenerationMode:
                sent += _fuzz(operation, mode, admin, base_url, EXAMPLES, failures)
                if existing:
                    sent += _fuzz(operation, mode, admin, base_url, EXAMPLES, failures, path_parameters=existing)
        sent += _fuzz(operation, GenerationMode.POSITIVE, {}, base_url, UNAUTHENTICATED_EXAMPLES, failures)
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} of {sent} answers break the OpenAPI document:\n\n" + "\n\n".join(failures)
    assert sent > 10 * len(operations)
    assert elapsed < BUDGET_SECONDS, f"fuzzing took {elapsed:.0f}s for {sent} requests"
    # Nothing started work: no cluster but the ghost, no job but its own, no node.
    assert [c.name for c in stack.client().status(all=True)] == ["ghost"]
    assert [j.job_id for j in stack.client().queue("ghost")] == [1]
    assert not list(stack.nodes_root.glob("*/node-*"))
    assert stack.client().jobs.queue(all_users=True) == []

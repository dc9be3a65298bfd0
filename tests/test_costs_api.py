"""Prices and costs as a user meets them, through the CLI, the SDK and the REST API against a
real stack: `launch --dryrun`, `show-gpus`, `show-instances`, `cost-report`, and what `styx
status` adds ($/hour, when autostop fires, who stopped a cluster)."""

from __future__ import annotations

import httpx
import pytest

from styx.sdk.transport import Invalid
from tests.fixtures.stack import StyxStack

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def wide_terminal(stack: StyxStack) -> None:
    """Tables read on a wide terminal (rich wraps cells at 80 columns without one)."""
    stack.env["COLUMNS"] = "250"


def test_dryrun_shows_the_choice_its_price_and_the_runners_up_and_starts_nothing(stack: StyxStack) -> None:
    out = stack.cli("launch", "--dryrun", "-c", "gpu", "--gpus", "A100:8", "--infra", "aws", "--num-nodes", "2",
                    "python train.py", check=True)
    assert "p4d.24xlarge" in out.stdout and "us-east-1a" in out.stdout and "on-demand" in out.stdout
    assert "$65.55/hour" in out.stdout  # 2 × $32.7726
    assert "Nothing was launched" in out.stdout
    client = stack.client()
    assert all(c.name != "gpu" for c in client.status(all=True))

    plan = client.dryrun({"run": "x", "resources": {"cpus": "8+", "memory": "32+", "infra": "aws"}})
    assert (plan.chosen.instance_type, plan.chosen.region) == ("t3.2xlarge", "us-east-1")
    assert plan.runners_up and plan.runners_up[0].why_not.endswith("more per node")
    local = client.dryrun({"run": "x"})
    assert (local.provider, local.hourly_total) == ("local", 0.0)


def test_an_unsatisfiable_request_is_refused_naming_the_requirement(stack: StyxStack) -> None:
    out = stack.cli("launch", "--dryrun", "--gpus", "H100:64", "--infra", "aws", "python train.py")
    assert out.returncode == 1
    line = out.stderr.strip() or out.stdout.strip()
    assert "task.resources.accelerators" in line and "H100:64" in line and "Traceback" not in out.stderr
    # The launch itself is refused the same way, before anything is provisioned.
    answer = httpx.post(f"{stack.settings.api_url}/api/v1/clusters", headers={"Authorization": f"Bearer {stack.token}"},
                        json={"cluster": "h100", "task": {"run": "x", "resources": {"infra": "aws",
                                                                                   "accelerators": "H100:64"}}},
                        timeout=30)
    assert answer.status_code == 422 and "task.resources.accelerators" in answer.json()["detail"]
    assert "H100:64" in answer.json()["detail"]
    assert all(c.name != "h100" for c in stack.client().status(all=True))
    with pytest.raises(Invalid, match="H100:64"):
        stack.client().dryrun({"run": "x", "resources": {"infra": "aws", "accelerators": "H100:64"}})


def test_show_gpus_and_show_instances(stack: StyxStack) -> None:
    out = stack.cli("show-gpus", "A100", "--infra", "aws/us-east-1", check=True)
    assert "p4d.24xlarge" in out.stdout and "$32.77" in out.stdout and "$14.75" in out.stdout
    out = stack.cli("show-instances", "--cpus", "8+", "--memory", "32+", check=True)
    assert out.stdout.index("t3.2xlarge") < out.stdout.index("m6i.2xlarge")
    bad = stack.cli("show-instances", "--cpus", "lots")
    assert bad.returncode == 1 and "cpus" in (bad.stderr + bad.stdout) and "Traceback" not in bad.stderr
    assert [o.instance_type for o in stack.client().show_gpus("V100:8")] == ["p3.16xlarge"] * 4
    refused = httpx.get(f"{stack.settings.api_url}/api/v1/catalog/gpus", params={"name": "A100"}, timeout=10)
    assert refused.status_code == 401  # every route wants a token


def test_status_and_the_cost_report_show_a_local_cluster_at_no_cost(stack: StyxStack) -> None:
    client = stack.client()
    stack.cli("launch", "-c", "cheap", "-y", "-i", "30", "echo hi", check=True)
    out = stack.cli("status", "cheap", check=True)
    assert "$0.00" in out.stdout and "30m, in" in out.stdout
    info = client.cluster("cheap")
    assert info.hourly_rate == 0.0 and info.autostop_at is not None and info.stopped_by is None
    stack.cli("stop", "cheap", "-y", check=True)
    assert "STOPPED by user" in stack.cli("status", "cheap", check=True).stdout

    report = client.cost_report(days=1)
    [cheap] = [c for c in report.clusters if c.cluster == "cheap"]
    assert (cheap.provider, cheap.nodes, cheap.cost, cheap.status) == ("local", 1, 0.0, "STOPPED")
    assert cheap.uptime_hours > 0
    out = stack.cli("cost-report", "--days", "1", check=True)
    assert "cheap" in out.stdout and "Total" in out.stdout
    stack.cli("down", "cheap", "-y", check=True)
    gone = [c for c in client.cost_report(days=1).clusters if c.cluster == "cheap"]
    assert gone and gone[0].status == "TERMINATED"  # a cluster that is gone stays in the report

    # Another user sees only their own clusters' costs; bad input is a 422 naming the field.
    bob = client.create_user("bob-costs")
    answer = httpx.get(f"{stack.settings.api_url}/api/v1/costs", params={"days": 30},
                       headers={"Authorization": f"Bearer {bob.token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["clusters"] == []
    answer = httpx.get(f"{stack.settings.api_url}/api/v1/costs", params={"days": 0},
                       headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    assert answer.status_code == 422 and "days" in answer.json()["detail"]

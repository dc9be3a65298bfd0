"""The task model loads SkyPilot task YAML unchanged and rejects bad input precisely."""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import styx.task
from styx.services.launch import InvalidRequest, check_for_provider, cluster_spec, load_task
from styx.task import GitWorkdir, Resources, Task, TaskValidationError

CORPUS = Path(__file__).parent / "skypilot_corpus"


# ---------------------------------------------------------------- valid specs

VALID: list[tuple[str, str, Callable[[Task], object]]] = [
    ("hello_world", "run: echo hello\n",
     lambda t: t.run == "echo hello" and t.num_nodes == 1 and t.job_cpus() == 0.5),
    ("multi_node_rank_check", """\
name: multinode
num_nodes: 4
run: |
  if [ "${SKYPILOT_NODE_RANK}" == "0" ]; then
    echo "head node"
  fi
  echo "$SKYPILOT_NODE_IPS" | head -n1
""", lambda t: t.num_nodes == 4 and t.run.startswith('if [ "${SKYPILOT_NODE_RANK}" == "0" ]')),
    ("accelerators_mapping", "resources:\n  accelerators: {A100: 8}\n",
     lambda t: t.job_accelerators() == {"A100": 8} and t.resources.accelerator_name == "A100"),
    ("accelerators_name_count", "resources:\n  accelerators: A100:2\n  cpus: 8+\n",
     lambda t: (t.resources.accelerator_count, t.resources.cpus, t.job_cpus()) == (2, "8+", 8.0)),
    ("accelerators_name_only", "resources:\n  accelerators: L4\n",
     lambda t: t.job_accelerators() == {"L4": 1}),
    ("accelerators_ordered_list", "resources:\n  accelerators: [L4:1, H100:1, A100:1]\n",
     lambda t: [c.accelerator_name for c in t.resources.candidates()] == ["L4", "H100", "A100"]
     and t.resources.ordered is not None and t.job_accelerators() == {"L4": 1}),
    ("accelerators_set", "resources:\n  accelerators: {A100:1, V100:1}\n",
     lambda t: t.resources.any_of is not None
     and {c.accelerator_name for c in t.resources.candidates()} == {"A100", "V100"}),
    ("any_of_inherits_defaults", """\
resources:
  accelerators: H100
  cpus: 16
  any_of:
    - infra: aws/us-west-2
    - infra: gcp/us-central1
""", lambda t: [(c.cloud, c.region, c.accelerator_name, c.cpus_min())
                for c in t.resources.candidates()]
        == [("aws", "us-west-2", "H100", 16.0), ("gcp", "us-central1", "H100", 16.0)]),
    ("ordered_regions", """\
resources:
  ordered:
    - infra: aws/us-east-1
    - infra: aws/us-west-2
      use_spot: true
""", lambda t: [(c.region, c.use_spot) for c in t.resources.candidates()]
        == [("us-east-1", None), ("us-west-2", True)]),
    ("port_range", "resources:\n  ports: 10000-10010\n",
     lambda t: t.resources.port_ranges() == [(10000, 10010)]),
    ("port_list", "resources:\n  ports:\n    - 8080\n    - '8081'\n    - 10022-10040\n",
     lambda t: t.resources.ports == ["8080", "8081", "10022-10040"]),
    ("heredoc_python", """\
run: |
  python3 - <<'EOF'
  import os
  for i in range(2):
      print(os.environ.get("SKYPILOT_NODE_RANK"), i)
  EOF
""", lambda t: "\n    print(os.environ" in t.run and t.run.endswith("EOF\n")),
    ("envs_with_vars_and_numbers", """\
envs:
  DATA_DIR: $HOME/data
  EPOCHS: 3
  LR: 0.001
  USE_AMP: true
run: python train.py --data ${DATA_DIR} --epochs $EPOCHS
""", lambda t: t.envs == {"DATA_DIR": "$HOME/data", "EPOCHS": "3", "LR": "0.001",
                          "USE_AMP": "True"}),
    ("file_mounts_home_dst", """\
file_mounts:
  ~/.netrc: ~/.netrc
  /checkpoints:
    source: s3://my-bucket
    mode: mount
  /outputs:
    name: out-bucket
    store: s3
""", lambda t: t.file_mounts["~/.netrc"].source == "~/.netrc"
        and t.file_mounts["~/.netrc"].is_plain_copy
        and t.file_mounts["/checkpoints"].mode == "MOUNT"
        and t.file_mounts["/outputs"].store == "s3"),
    ("infra_region", "resources:\n  infra: aws/us-east-1\n",
     lambda t: (t.resources.cloud, t.resources.region, t.resources.zone)
        == ("aws", "us-east-1", None)),
    ("infra_zone", "resources:\n  infra: aws/us-east-1/us-east-1a\n",
     lambda t: t.resources.zone == "us-east-1a"),
    ("legacy_cloud_region", "resources:\n  cloud: aws\n  region: us-west-2\n",
     lambda t: t.resources.infra == "aws/us-west-2"),
    ("legacy_cloud_agrees_with_infra", "resources:\n  infra: AWS/us-east-1\n  cloud: aws\n",
     lambda t: t.resources.infra == "aws/us-east-1"),
    ("kubernetes_context", "resources:\n  infra: k8s/my-h100-cluster-context\n",
     lambda t: (t.resources.cloud, t.resources.region) == ("kubernetes", "my-h100-cluster-context")),
    ("ssh_pool", "resources:\n  infra: ssh/my-pool\n",
     lambda t: (t.resources.cloud, t.resources.region) == ("ssh", "my-pool")),
    ("local", "resources:\n  infra: local\n", lambda t: t.resources.cloud == "local"),
    ("memory_forms", "resources:\n  memory: 32+\n  cpus: 0.5\n",
     lambda t: (t.resources.memory_min_gb(), t.resources.memory, t.job_cpus()) == (32.0, "32+", 0.5)),
    ("memory_units", "resources:\n  memory: 1024MB\n  cpus: '4'\n",
     lambda t: (t.resources.memory_min_gb(), t.resources.cpus) == (1.0, "4")),
    ("run_as_list", "run:\n  - echo one\n  - echo two\n", lambda t: t.run == "echo one\necho two"),
    ("env_required_at_launch", "envs:\n  MODEL: llama\n  HF_TOKEN:\nsecrets:\n  WANDB_KEY: null\n",
     lambda t: t.missing_envs() == ["HF_TOKEN", "WANDB_KEY"]),
    ("hardware_details", """\
resources:
  instance_type: p3.8xlarge
  use_spot: true
  disk_size: 1TB
  disk_tier: Medium
  image_id: docker:ubuntu:22.04
  labels: {team: ml, version: 2}
  job_recovery: {strategy: FAILOVER, max_restarts_on_errors: 3}
  autostop: {idle_minutes: 10, down: true}
""", lambda t: (t.resources.disk_size, t.resources.disk_tier, t.resources.labels["version"],
                t.resources.use_spot) == (1024, "medium", "2", True)),
    ("per_region_image", "resources:\n  image_id:\n    us-east-1: ami-123\n    us-west-2: ami-456\n",
     lambda t: t.resources.image_id == {"us-east-1": "ami-123", "us-west-2": "ami-456"}),
    ("config_and_event_callback", """\
config:
  kubernetes:
    provision_timeout: 600
event_callback: echo done
run: echo hi
""", lambda t: t.config == {"kubernetes": {"provision_timeout": 600}}),
    ("gpus_alias", "resources:\n  gpus: H100:4\n", lambda t: t.job_accelerators() == {"H100": 4}),
    ("null_sections", "resources:\nenvs:\nfile_mounts:\nrun: echo hi\n",
     lambda t: t.resources == Resources() and t.envs == {} and t.file_mounts == {}),
    ("workdir_and_setup", """\
workdir: .
setup: |
  pip install -r requirements.txt
run: |
  python train.py
""", lambda t: t.workdir == "." and t.setup == "pip install -r requirements.txt\n"),
    ("candidate_region_inherits_cloud", """\
resources:
  cloud: aws
  ordered:
    - region: us-east-1
    - region: us-west-2
""", lambda t: [c.infra for c in t.resources.candidates()] == ["aws/us-east-1", "aws/us-west-2"]),
    ("autostop_with_unit", "resources:\n  autostop: 2h\n", lambda t: t.resources.autostop == "2h"),
]


@pytest.mark.parametrize(("spec", "check"), [(s, c) for _, s, c in VALID],
                         ids=[name for name, _, _ in VALID])
def test_skypilot_style_spec_loads_with_the_values_a_user_expects(spec: str, check) -> None:
    task = Task.from_yaml(spec)
    assert check(task), task


@pytest.mark.parametrize("spec", [s for _, s, _ in VALID], ids=[n for n, _, _ in VALID])
def test_task_survives_a_trip_through_a_json_dict(spec: str) -> None:
    task = Task.from_yaml(spec)
    data = json.loads(json.dumps(task.to_dict(include_secrets=True)))
    assert Task.from_dict(data) == task


# -------------------------------------------------------------- invalid specs

INVALID: list[tuple[str, str, str | None, int | None]] = [
    ("typo_top_level", "name: x\nreources:\n  cpus: 2\n", "reources", 2),
    ("typo_in_resources", "resources:\n  cpu: 4\n", "resources.cpu", 2),
    ("typo_in_any_of", """\
resources:
  any_of:
    - infra: aws
    - infra: gcp
      acelerators: A100
""", "resources.any_of[1].acelerators", 5),
    ("num_nodes_zero", "run: echo\nnum_nodes: 0\n", "num_nodes", 2),
    ("num_nodes_negative", "num_nodes: -2\n", "num_nodes", 1),
    ("num_nodes_float", "num_nodes: 1.5\n", "num_nodes", 1),
    ("num_nodes_string", "num_nodes: two\n", "num_nodes", 1),
    ("cpus_word", "name: x\nresources:\n  cpus: four\n", "resources.cpus", 3),
    ("cpus_zero", "resources:\n  cpus: 0\n", "resources.cpus", 2),
    ("memory_word", "resources:\n  memory: lots\n", "resources.memory", 2),
    ("accelerator_count_word", "resources:\n  accelerators: A100:x\n", "resources.accelerators", 2),
    ("accelerator_count_zero", "resources:\n  accelerators: A100:0\n", "resources.accelerators", 2),
    ("accelerator_no_name", "resources:\n  accelerators: ':2'\n", "resources.accelerators", 2),
    ("accelerator_negative", "resources:\n  accelerators: {A100: -1}\n",
     "resources.accelerators.A100", 2),
    ("accelerator_bad_item", "resources:\n  accelerators:\n    - A100:1\n    - V100:x\n",
     "resources.accelerators[1]", 4),
    ("run_number", "run: 42\n", "run", 1),
    ("run_mixed_list", "setup: echo\nrun:\n  - echo a\n  - 3\n", "run", 2),
    ("use_spot_maybe", "resources:\n  use_spot: maybe\n", "resources.use_spot", 2),
    ("port_too_big", "resources:\n  ports: 70000\n", "resources.ports", 2),
    ("port_range_reversed", "resources:\n  ports: '10-5'\n", "resources.ports", 2),
    ("port_in_list", "resources:\n  ports:\n    - 8080\n    - 70000\n", "resources.ports[1]", 4),
    ("unknown_cloud", "resources:\n  infra: nocloud/x\n", "resources.infra", 2),
    ("unknown_legacy_cloud", "resources:\n  cloud: awz\n", "resources.cloud", 2),
    ("infra_conflicts_with_cloud", "resources:\n  infra: aws\n  cloud: gcp\n", "resources.cloud", 3),
    ("disk_size_negative", "resources:\n  disk_size: -5\n", "resources.disk_size", 2),
    ("disk_tier_unknown", "resources:\n  disk_tier: fast\n", "resources.disk_tier", 2),
    ("env_name_digit", "envs:\n  GOOD: 1\n  1BAD: x\n", "envs.1BAD", 3),
    ("env_name_dash", "envs:\n  MY-VAR: x\n", "envs.MY-VAR", 2),
    ("env_value_list", "envs:\n  PATHS: [a, b]\n", "envs.PATHS", 2),
    ("secret_name_bad", "secrets:\n  'has space': x\n", "secrets.has space", 2),
    ("workdir_number", "workdir: 123\n", "workdir", 1),
    ("workdir_list", "workdir:\n  - a\n", "workdir", 1),
    ("name_number", "name: 123\n", "name", 1),
    ("resources_scalar", "resources: 5\n", "resources", 1),
    ("cpus_in_candidate", """\
resources:
  any_of:
    - cpus: 2
    - cpus: many
""", "resources.any_of[1].cpus", 4),
    ("any_of_and_ordered", "resources:\n  any_of: [{infra: aws}]\n  ordered: [{infra: gcp}]\n",
     "resources.ordered", 3),
    ("nested_candidates", "resources:\n  any_of:\n    - ordered: [{infra: aws}]\n",
     "resources.any_of[0].ordered", 3),
    ("file_mount_bad_mode", "file_mounts:\n  /ck:\n    source: s3://b\n    mode: SYNC\n",
     "file_mounts./ck.mode", 4),
    ("autostop_word", "resources:\n  autostop: soon\n", "resources.autostop", 2),
    ("service_not_mapping", "service: yes\nrun: echo\n", "service", 1),
    ("volumes_unsupported", "volumes:\n  /data: vol\nrun: echo\n", "volumes", 1),
    ("top_level_list", "- run: echo\n", None, 1),
]


@pytest.mark.parametrize(("spec", "field", "line"), [(s, f, ln) for _, s, f, ln in INVALID],
                         ids=[name for name, *_ in INVALID])
def test_invalid_spec_is_rejected_naming_field_and_line(spec: str, field: str | None,
                                                         line: int | None) -> None:
    with pytest.raises(TaskValidationError) as caught:
        Task.from_yaml(spec)
    err = caught.value
    assert isinstance(err, ValueError)
    assert (err.field, err.line) == (field, line), str(err)
    if field:
        assert field in str(err)
    if line is not None:
        assert f"line {line}" in str(err)


def test_unknown_key_suggests_the_closest_field() -> None:
    with pytest.raises(TaskValidationError, match='"reources".*did you mean "resources"\\?'):
        Task.from_yaml("reources:\n  cpus: 2\n")


def test_unsupported_skypilot_feature_says_so() -> None:
    with pytest.raises(TaskValidationError, match="not support"):
        Task.from_yaml("pool:\n  workers: 2\n")


def test_every_problem_is_reported_in_file_order() -> None:
    with pytest.raises(TaskValidationError) as caught:
        Task.from_yaml("run: 5\nnum_nodes: 0\nresources:\n  cpus: x\n")
    err = caught.value
    assert [p.field for p in err.problems] == ["run", "num_nodes", "resources.cpus"]
    assert err.field == "run" and err.line == 1
    assert "line 4" in str(err)


def test_yaml_syntax_error_points_at_the_line() -> None:
    with pytest.raises(TaskValidationError) as caught:
        Task.from_yaml("name: x\nrun: [echo\nsetup: y\n")
    assert caught.value.field is None and caught.value.line is not None
    assert "invalid YAML" in str(caught.value)


@pytest.mark.parametrize("text", ["", "# just a comment\n", "---\n"])
def test_empty_yaml_is_an_error(text: str) -> None:
    with pytest.raises(TaskValidationError, match="empty"):
        Task.from_yaml(text)


def test_a_pipeline_of_several_tasks_is_not_one_task_and_says_how_to_run_it() -> None:
    with pytest.raises(TaskValidationError, match="run the pipeline with `styx jobs launch`"):
        Task.from_yaml("name: pipeline\n---\nrun: echo a\n---\nrun: echo b\n")


def test_load_pipeline_reads_skypilots_form_and_names_the_task_in_errors() -> None:
    from styx.task import load_pipeline

    pipeline = load_pipeline("name: p\n---\nname: a\nrun: echo a\n---\nrun: echo b\n")
    assert pipeline.name == "p" and [t.run for t in pipeline.tasks] == ["echo a", "echo b"]
    assert load_pipeline("run: echo one\n").tasks[0].run == "echo one"
    with pytest.raises(TaskValidationError) as caught:
        load_pipeline("name: p\n---\nrun: a\n---\nrun: b\nresources: {cpuz: 1}\n")
    assert caught.value.field == "tasks[1].resources.cpuz" and caught.value.line == 6
    with pytest.raises(TaskValidationError, match="at most 32 tasks"):
        load_pipeline("name: p\n" + "---\nrun: x\n" * 33)
    corpus = load_pipeline(Path(__file__).parent / "skypilot_corpus" / "pipeline.yaml")
    assert corpus.name == "pipeline" and len(corpus.tasks) == 2


def test_single_document_with_separators_still_loads() -> None:
    assert Task.from_yaml("---\nrun: echo a\n---\n").run == "echo a"


def test_yaml_anchors_and_merge_keys_load() -> None:
    task = Task.from_yaml("""\
resources:
  any_of:
    - &base {infra: aws/us-east-1, cpus: 4}
    - <<: *base
      infra: aws/us-west-2
""")
    assert [c.region for c in task.resources.candidates()] == ["us-east-1", "us-west-2"]


# -------------------------------------------------------------------- sources

def test_from_yaml_reads_a_path_object_or_a_path_string(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("name: from-file\nrun: echo hi\n")
    assert Task.from_yaml(path).name == "from-file"
    assert Task.from_yaml(str(path)).name == "from-file"


def test_missing_file_named_by_a_string_gets_a_hint() -> None:
    with pytest.raises(TaskValidationError, match="no file named 'missing.yaml'"):
        Task.from_yaml("missing.yaml")


def test_from_command_makes_a_bare_run_task() -> None:
    task = Task.from_command("echo hi", cpus="2+", num_nodes=2)
    assert (task.run, task.num_nodes, task.job_cpus()) == ("echo hi", 2, 2.0)
    with pytest.raises(TaskValidationError):
        Task.from_command("   ")


# -------------------------------------------------------------------- secrets

SECRET_SPEC = "secrets:\n  HF_TOKEN: hf_s3cr3t_value\n  LATER: null\nenvs:\n  A: b\nrun: echo\n"


def test_secrets_are_hidden_from_every_casual_view() -> None:
    task = Task.from_yaml(SECRET_SPEC)
    views = [repr(task), str(task), repr(task.model_dump()), task.model_dump_json(),
             json.dumps(task.to_public_dict()), json.dumps(task.to_dict(include_secrets=False))]
    for view in views:
        assert "hf_s3cr3t_value" not in view
    assert task.model_dump()["secrets"] == {"HF_TOKEN": "<redacted>", "LATER": None}
    assert task.to_public_dict()["secrets"] == {"HF_TOKEN": "<redacted>", "LATER": None}


def test_secrets_are_available_when_asked_for_explicitly() -> None:
    task = Task.from_yaml(SECRET_SPEC)
    assert task.secret_values() == {"HF_TOKEN": "hf_s3cr3t_value"}
    assert task.to_dict(include_secrets=True)["secrets"]["HF_TOKEN"] == "hf_s3cr3t_value"
    assert task.missing_envs() == ["LATER"]


def test_dict_without_secrets_loads_back_with_secrets_to_be_given() -> None:
    task = Task.from_yaml(SECRET_SPEC)
    reloaded = Task.from_dict(task.to_dict(include_secrets=False))
    assert reloaded.missing_envs() == ["HF_TOKEN", "LATER"]
    assert reloaded.envs == task.envs


def test_redacted_dump_cannot_be_loaded_as_if_it_held_the_secret() -> None:
    task = Task.from_yaml(SECRET_SPEC)
    with pytest.raises(TaskValidationError) as caught:
        Task.from_dict(task.model_dump())
    assert caught.value.field == "secrets.HF_TOKEN"


def test_secret_round_trip_keeps_values() -> None:
    task = Task.from_yaml(SECRET_SPEC)
    assert Task.from_dict(task.to_dict(include_secrets=True)) == task


# ------------------------------------------------------------------ overrides

BASE = """\
name: base
resources:
  cpus: 2
  accelerators: [A100:1, V100:1]
envs:
  MODEL: small
  TOKEN:
run: echo $MODEL
"""


def test_overrides_return_a_new_validated_task_and_leave_the_original() -> None:
    task = Task.from_yaml(BASE)
    new = task.with_overrides(envs={"MODEL": "large", "TOKEN": 1}, cpus="8+", memory="64GB",
                              gpus="H100:8", num_nodes="3", infra="aws/us-east-1",
                              workdir="~/code", name="renamed")
    assert new.envs == {"MODEL": "large", "TOKEN": "1"} and new.missing_envs() == []
    assert (new.job_cpus(), new.resources.memory_min_gb(), new.job_accelerators()) == \
        (8.0, 64.0, {"H100": 8})
    assert new.resources.candidates() == [new.resources]  # the GPU choice was replaced
    assert (new.num_nodes, new.resources.region, new.workdir, new.name) == \
        (3, "us-east-1", "~/code", "renamed")
    assert task.name == "base" and task.resources.cpus == "2"


def test_env_overrides_accept_cli_key_value_strings() -> None:
    task = Task.from_yaml(BASE).with_overrides(envs=["TOKEN=abc=def", "NEW=1"],
                                               secrets=["HF=xyz"])
    assert task.envs["TOKEN"] == "abc=def" and task.envs["NEW"] == "1"
    assert task.secret_values() == {"HF": "xyz"}


def test_infra_override_replaces_candidate_locations() -> None:
    task = Task.from_yaml("resources:\n  any_of:\n    - {infra: aws, cpus: 2}\n    - {infra: gcp}\n")
    new = task.with_overrides(infra="ssh/lab")
    assert [(c.cloud, c.cpus) for c in new.resources.candidates()] == [("ssh", "2")]


@pytest.mark.parametrize(("option", "kwargs"), [
    ("--cpus", {"cpus": "four"}),
    ("--memory", {"memory": "lots"}),
    ("--gpus", {"gpus": "A100:0"}),
    ("--num-nodes", {"num_nodes": 0}),
    ("--infra", {"infra": "nocloud"}),
    ("--env", {"envs": ["NOEQUALS"]}),
    ("--env", {"envs": {"1BAD": "x"}}),
    ("--workdir", {"workdir": 5}),
])
def test_bad_override_names_the_cli_option(option: str, kwargs: dict) -> None:
    with pytest.raises(TaskValidationError) as caught:
        Task.from_yaml(BASE).with_overrides(**kwargs)
    assert caught.value.field == option and caught.value.line is None
    assert str(caught.value).startswith(f"{option}: ")


# ------------------------------------------------------------ docs and corpus

def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(styx.task, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _corpus_header(path: Path) -> tuple[str, int | None]:
    lines = path.read_text().splitlines()
    kind = re.fullmatch(r"# styx-corpus: (runs-locally|load-only|rejected|cli)", lines[0])
    assert kind, f"{path.name}: first line must be '# styx-corpus: <kind>'"
    exit_code = next((int(m.group(1)) for line in lines[:5]
                      if (m := re.fullmatch(r"# expect-exit: (\d+)", line))), None)
    return kind.group(1), exit_code


CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_covers_the_documented_cases() -> None:
    kinds = [_corpus_header(p)[0] for p in CORPUS_FILES]
    assert len(CORPUS_FILES) >= 12
    assert {"runs-locally", "load-only", "rejected"} <= set(kinds)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.stem for p in CORPUS_FILES])
def test_corpus_file_loads_or_is_rejected_as_labelled(path: Path) -> None:
    kind, exit_code = _corpus_header(path)
    if kind == "rejected":
        with pytest.raises(TaskValidationError, match="not supported"):
            Task.from_yaml(path)
        return
    task = Task.from_yaml(path)
    assert task.run
    if kind == "runs-locally":
        assert exit_code in (0, 1)
        assert task.job_accelerators() == {} and task.resources.cloud in (None, "local")


def _run_like_a_node(task: Task, tmp_path: Path, node_env: dict[str, str]) -> int:
    """Run setup then run with bash, roughly as one node would (file mounts copied)."""
    home, workdir = tmp_path / "home", tmp_path / "workdir"
    home.mkdir()
    workdir.mkdir()
    env = {**os.environ, "HOME": str(home), **node_env, **task.secret_values(),
           **{k: v for k, v in task.envs.items() if v is not None}}
    for dst, mount in task.file_mounts.items():
        target = Path(dst.replace("~", str(home), 1) if dst.startswith("~") else dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(mount.source).expanduser(), target)
    for script in (task.setup, task.run):
        if script is None:
            continue
        code = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, timeout=60,
                              capture_output=True).returncode
        if code or script is task.run:
            return code
    return 0


NODE_ENV = {"SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1", "SKYPILOT_NUM_NODES": "1"}
RUNNABLE = [p for p in CORPUS_FILES if _corpus_header(p)[0] == "runs-locally"]


@pytest.mark.skipif(not (shutil.which("bash") and shutil.which("python3")),
                    reason="needs bash and python3")
@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_runnable_corpus_file_exits_as_its_header_says(path: Path, tmp_path: Path) -> None:
    _, expected = _corpus_header(path)
    assert _run_like_a_node(Task.from_yaml(path), tmp_path, NODE_ENV) == expected


def test_multinode_check_fails_when_node_variables_are_missing(tmp_path: Path) -> None:
    task = Task.from_yaml(CORPUS / "multinode_env_check.yaml")
    env_without = {"SKYPILOT_NODE_RANK": "", "SKYPILOT_NODE_IPS": ""}
    assert _run_like_a_node(task, tmp_path, env_without) == 1


# ---------------------------------------------------------------- bounded parsing (hostile input)

def _alias_bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nrun: echo hi\n"


def test_alias_bomb_is_refused_without_expanding_it():
    with pytest.raises(TaskValidationError, match="expands to more than"):
        Task.from_yaml(_alias_bomb())


def test_small_aliases_still_load():
    task = Task.from_yaml("setup: &s echo hi\nrun: *s\n")
    assert task.run == task.setup == "echo hi"


def test_deep_nesting_is_a_clean_error_not_a_recursion_error():
    text = "run: echo\nenvs: " + "[" * 1000 + "]" * 1000 + "\n"
    with pytest.raises(TaskValidationError, match="nests deeper than"):
        Task.from_yaml(text)


def test_oversized_task_file_is_refused(tmp_path, monkeypatch):
    import styx.task as task_module

    monkeypatch.setattr(task_module, "MAX_TASK_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("run: |\n" + "  echo x\n" * 500)
    with pytest.raises(TaskValidationError, match="larger than 1000 bytes"):
        Task.from_yaml(path)


def test_non_utf8_task_file_names_the_problem(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run: echo caf\u00e9\n".encode("latin-1"))
    with pytest.raises(TaskValidationError, match="not UTF-8"):
        Task.from_yaml(path)


@pytest.mark.parametrize("text, field", [
    ("num_nodes: 100000000000000000000", "num_nodes"),
    ("num_nodes: 10001", "num_nodes"),
    ("resources: {cpus: .inf}", "resources.cpus"),
    ("resources: {cpus: 1e308}", "resources.cpus"),
    ("resources: {memory: .inf}", "resources.memory"),
    ("resources: {accelerators: 'A100:inf'}", "resources.accelerators"),
])
def test_numeric_fields_are_finite_and_bounded(text, field):
    with pytest.raises(TaskValidationError) as err:
        Task.from_yaml(text + "\nrun: echo\n")
    assert err.value.field == field


# ------------------------------------------------------ SkyPilot files Styx used to refuse


def test_a_fraction_of_an_accelerator_is_kept_as_asked_and_nodes_get_whole_ones() -> None:
    task = Task.from_yaml("resources: {infra: ssh/lab, accelerators: 'T4:0.5'}\nrun: nvidia-smi\n")
    assert task.job_accelerators() == {"T4": 0.5}
    assert task.resources.accelerator_count == 0.5
    assert Task.from_dict(task.to_dict(include_secrets=False)) == task
    spec = cluster_spec(task, "lab")
    assert spec.node_accelerators == {"T4": 1}  # a node holds whole devices
    assert Task.from_yaml("resources: {accelerators: {A100: 2}}").job_accelerators() == {"A100": 2}
    with pytest.raises(TaskValidationError) as err:
        Task.from_yaml("resources: {accelerators: 'T4:0.001'}")
    assert err.value.field == "resources.accelerators" and "at least 0.01" in str(err.value)


def test_a_set_of_accelerators_with_any_of_means_any_accelerator_with_any_candidate() -> None:
    task = Task.from_yaml(textwrap.dedent("""\
        resources:
          accelerators: {A100:8, H100:8}
          any_of:
            - use_spot: true
            - use_spot: false
            - {use_spot: false, accelerators: L4:1}
        run: train
    """))
    pairs = [(c.accelerator_name, c.accelerator_count, c.use_spot) for c in task.resources.candidates()]
    assert pairs == [("A100", 8, True), ("A100", 8, False), ("L4", 1, False), ("H100", 8, True),
                     ("H100", 8, False)]
    with pytest.raises(TaskValidationError, match="preference list of accelerators cannot be combined with any_of"):
        Task.from_yaml("resources: {accelerators: [A100, H100], any_of: [{use_spot: true}]}")
    with pytest.raises(TaskValidationError, match="cannot be combined with ordered"):
        Task.from_yaml("resources: {accelerators: {A100, H100}, ordered: [{use_spot: true}]}")


def test_a_service_section_is_kept_for_serving_and_launch_warns_it_is_ignored() -> None:
    task = Task.from_yaml("service:\n  readiness_probe: /health\n  replicas: 2\nrun: python serve.py\n")
    assert task.service == {"readiness_probe": "/health", "replicas": 2}
    assert task.to_dict(include_secrets=False)["service"] == task.service
    warnings = check_for_provider(task, "local")
    assert len(warnings) == 1 and warnings[0].startswith("service: ignored")


def test_a_pipeline_of_one_task_loads_as_that_task_named_by_the_header() -> None:
    task = Task.from_yaml("name: pipe\n---\nrun: echo one\n")
    assert (task.name, task.run) == ("pipe", "echo one")
    assert Task.from_yaml("name: pipe\n---\nname: own\nrun: echo\n").name == "own"
    with pytest.raises(TaskValidationError) as err:
        Task.from_yaml("name: pipe\n---\nrun: a\n---\nrun: b\n")
    assert "this pipeline has 2 tasks" in str(err.value) and err.value.line == 5


def test_a_list_of_sources_copies_each_into_the_destination_by_name() -> None:
    task = Task.from_yaml(textwrap.dedent("""\
        file_mounts:
          ~/inputs: [data/train/, ~/extra.txt]
          /mnt/more:
            source: [notes.md]
        run: ls
    """))
    assert {dst: m.source for dst, m in task.file_mounts.items()} == {
        "~/inputs/train": "data/train/", "~/inputs/extra.txt": "~/extra.txt", "/mnt/more/notes.md": "notes.md"}
    for text, message in (("~/x: [a/one, b/one]", "given twice"), ("~/x: [.]", "no name to copy it under"),
                          ("~/x: []", "must not be empty")):
        with pytest.raises(TaskValidationError, match=message) as err:
            Task.from_yaml(f"file_mounts:\n  {text}\nrun: ls\n")
        assert err.value.field.startswith("file_mounts.~/x")
    # A storage mount (named bucket) with several sources stays a storage mount: refused at launch.
    storage = Task.from_yaml("file_mounts:\n  /d: {name: bkt, source: [a, b]}\nrun: ls\n")
    assert storage.file_mounts["/d"].source == ["a", "b"]
    with pytest.raises(InvalidRequest, match="storage"):
        load_task(storage.to_dict(include_secrets=False))


def test_env_vars_fill_in_file_mount_paths_and_an_override_fills_them_again() -> None:
    task = Task.from_yaml(textwrap.dedent("""\
        envs: {MODEL_SIZE: 13b, LOCAL: ckpt}
        file_mounts:
          /checkpoint/${MODEL_SIZE}: ~/${LOCAL}/${MODEL_SIZE}
          ~/raw/${UNKNOWN}: $LOCAL
        run: ls
    """))
    assert {d: m.source for d, m in task.file_mounts.items()} == {
        "/checkpoint/13b": "~/ckpt/13b", "~/raw/${UNKNOWN}": "$LOCAL"}  # braces only, as SkyPilot
    small = task.with_overrides(envs=["MODEL_SIZE=7b"])
    assert list(small.file_mounts) == ["/checkpoint/7b", "~/raw/${UNKNOWN}"]
    assert small.file_mounts["/checkpoint/7b"].source == "~/ckpt/7b"
    assert Task.from_dict(task.to_dict(include_secrets=True)) == task
    # A value given only at launch fills the path then.
    later = Task.from_yaml("envs: {SIZE: null}\nfile_mounts:\n  ~/c/${SIZE}: x\nrun: ls\n")
    assert list(later.with_overrides(envs={"SIZE": "1b"}).file_mounts) == ["~/c/1b"]


def test_a_git_workdir_loads_and_a_bad_one_names_the_field() -> None:
    task = Task.from_yaml("workdir:\n  url: https://example.com/org/repo.git\n  ref: v1.2\nrun: make\n")
    assert task.workdir == GitWorkdir(url="https://example.com/org/repo.git", ref="v1.2")
    assert Task.from_dict(task.to_dict(include_secrets=False)) == task
    assert load_task(task.to_dict(include_secrets=False)).workdir == task.workdir  # no upload needed
    for text, field in (("{url: --upload-pack=evil}", "workdir.url"), ("{url: x, ref: -b}", "workdir.ref"),
                        ("{ref: main}", "workdir.url"), ("{url: x, branch: y}", "workdir.branch")):
        with pytest.raises(TaskValidationError) as err:
            Task.from_yaml(f"workdir: {text}\nrun: make\n")
        assert err.value.field == field, str(err.value)


def test_local_nodes_refuse_absolute_mounts_and_warn_of_an_instance_type() -> None:
    task = Task.from_yaml("file_mounts:\n  /checkpoint/13b: ckpt\nrun: ls\n")
    with pytest.raises(InvalidRequest) as err:
        check_for_provider(task, "local")
    assert err.value.field == "task.file_mounts./checkpoint/13b" and "~/checkpoint/13b" in str(err.value)
    assert check_for_provider(task, "ssh") == [] and check_for_provider(task, "aws") == []
    typed = Task.from_yaml("resources: {instance_type: m5.xlarge}\nrun: ls\n")
    assert check_for_provider(typed, "local") == [
        "resources.instance_type: m5.xlarge ignored: local nodes are processes on this machine, sized by "
        "resources.cpus"]


def test_a_fractional_request_on_aws_gets_the_type_with_one_whole_device() -> None:
    from styx.catalog import optimizer

    half = optimizer.cheapest({"accelerators": "A10G:0.5"})
    assert half and half[0] == optimizer.cheapest({"accelerators": "A10G:1"})[0]


def test_a_task_name_longer_than_a_job_row_holds_is_refused_naming_the_field() -> None:
    assert Task.from_dict({"name": "n" * 255, "run": "true"}).name == "n" * 255
    with pytest.raises(TaskValidationError) as err:
        Task.from_dict({"name": "n" * 256, "run": "true"})
    assert str(err.value).startswith("name: String should have at most 255 characters")

"""Jobs behave as a SkyPilot user expects, through the `styx` command line against the whole
stack: `--env KEY` / `--secret KEY` from the caller's environment and `--env-file`, `exec`
skipping `setup`, `launch` reusing a cluster the task fits (and refusing, naming the
requirement, one it does not), `start -y`, help without `<bool>`, and `styx status` fitting
a 100-column terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from styx.cli.main import app
from tests.fixtures.stack import StyxStack

pytestmark = pytest.mark.slow

#: Setup appends a line to a file in the node's home; run says how many lines it holds.
COUNTING_SETUP = """\
resources: {cpus: 1}
setup: echo ran >> ~/setup-marker
run: echo "setups=$(wc -l < ~/setup-marker)"
"""

#: A variable no test environment sets.
UNSET = "STYX_TEST_NEVER_SET"


def test_env_and_secret_without_a_value_come_from_the_callers_environment(stack: StyxStack, tmp_path: Path):
    env_file = tmp_path / "job.env"
    env_file.write_text('# a dotenv file\nFROMFILE=filed\nWHO=from-file\nexport QUOTED="a b"\nBARE\n')
    shell = {"WHO": "styx", "TOKEN": "s3cret-value", "BARE": "from-shell"}
    r = stack.cli("launch", "-y", "-c", "envs", "--env", "WHO", "--secret", "TOKEN", "--env-file", str(env_file),
                  'echo "who=$WHO file=$FROMFILE q=$QUOTED bare=$BARE"; [ "$TOKEN" = s3cret-value ] && echo token-ok',
                  env=shell)
    assert r.returncode == 0, r.stdout + r.stderr
    # --env wins over the file; a bare KEY in the file comes from the shell too.
    assert "who=styx file=filed q=a b bare=from-shell" in r.stdout and "token-ok" in r.stdout
    assert "s3cret-value" not in r.stdout + r.stderr
    client = stack.client()
    jobs = len(client.queue("envs"))

    for option in ("--env", "--secret"):
        r = stack.cli("exec", "envs", option, UNSET, "echo never")
        assert r.returncode == 1
        assert r.stderr.strip() == (f"error: {option} {UNSET}: {UNSET} is not set in your environment; "
                                    f"export it, or pass {option} {UNSET}=VALUE")
    r = stack.cli("exec", "envs", "--env-file", str(tmp_path / "missing.env"), "echo never")
    assert r.returncode == 1 and "--env-file: no such file" in r.stderr
    (tmp_path / "bare.env").write_text(f"{UNSET}\n")
    r = stack.cli("exec", "envs", "--env-file", str(tmp_path / "bare.env"), "echo never")
    assert r.returncode == 1 and f"{UNSET} is not set in your environment" in r.stderr
    assert len(client.queue("envs")) == jobs  # nothing was queued

    # A secret the task declares without a value: the error says how a secret is given.
    task = tmp_path / "needs.yaml"
    task.write_text("secrets: {HF_TOKEN: null}\nenvs: {MODEL: null}\nrun: echo model=$MODEL ${#HF_TOKEN}\n")
    r = stack.cli("exec", "envs", str(task), "--env", "MODEL=tiny")
    assert r.returncode == 1 and "--secret HF_TOKEN" in r.stderr and "--env HF_TOKEN" not in r.stderr, r.stderr
    r = stack.cli("exec", "envs", str(task), "--secret", "HF_TOKEN=hf_1234")
    assert r.returncode == 1 and "--env MODEL" in r.stderr and "--secret MODEL" not in r.stderr, r.stderr
    r = stack.cli("exec", "envs", str(task), "--secret", "HF_TOKEN", "--env", "MODEL",
                  env={"HF_TOKEN": "hf_1234", "MODEL": "tiny"})
    assert r.returncode == 0 and "model=tiny 7" in r.stdout, r.stdout + r.stderr
    stack.cli("down", "-y", "envs", check=True)


def test_exec_skips_setup_and_launch_reuses_a_cluster_the_task_fits(stack: StyxStack, tmp_path: Path):
    task = tmp_path / "count.yaml"
    task.write_text(COUNTING_SETUP)
    r = stack.cli("launch", "-y", "-c", "sky", str(task))
    assert r.returncode == 0 and "setups=1" in r.stdout, r.stdout + r.stderr

    # As SkyPilot's exec: the setup does not run again (from the CLI, nor the SDK).
    r = stack.cli("exec", "sky", str(task))
    assert r.returncode == 0 and "setups=1" in r.stdout, r.stdout + r.stderr
    client = stack.client()
    job = client.exec("sky", str(task)).job_id
    assert client.wait("sky", job, timeout=60).status == "SUCCEEDED"
    assert "setups=1" in client.logs("sky", job)

    # A launch onto the cluster reuses it (a task that fits) and runs the setup.
    before = [c.launched_at for c in client.status() if c.name == "sky"]
    r = stack.cli("launch", "-y", "-c", "sky", str(task))
    assert r.returncode == 0 and "setups=2" in r.stdout, r.stdout + r.stderr
    # A bare command asks for no particular size: it fits too.
    r = stack.cli("launch", "-y", "-c", "sky", "echo bare-ok")
    assert r.returncode == 0 and "bare-ok" in r.stdout, r.stdout + r.stderr
    assert [c.launched_at for c in client.status() if c.name == "sky"] == before  # not launched again
    assert [j.status for j in client.queue("sky")] == ["SUCCEEDED"] * 5

    # A task the nodes cannot fit is refused, naming the requirement; nothing is queued.
    r = stack.cli("launch", "-y", "-c", "sky", "--cpus", "2", "echo never")
    assert r.returncode == 1
    assert "the task asks for 2 CPUs per node; nodes of 'sky' have 1" in r.stderr, r.stderr
    r = stack.cli("launch", "-y", "-c", "sky", "--num-nodes", "2", "echo never")
    assert r.returncode == 1 and "the task asks for 2 nodes; cluster 'sky' has 1" in r.stderr, r.stderr
    assert len(client.queue("sky")) == 5

    # `sky start -y` works as typed (start asks nothing anyway).
    r = stack.cli("start", "-y", "sky")
    assert r.returncode == 0 and "cluster sky: UP" in r.stdout, r.stdout + r.stderr
    stack.cli("down", "-y", "sky", check=True)


def test_status_fits_a_100_column_terminal_with_a_short_ui_link(stack: StyxStack):
    client = stack.client()
    client.wait("narrow", client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="narrow").job_id,
                timeout=120)
    r = stack.cli("status", env={"COLUMNS": "100"}, check=True)
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, r.stdout
    row = next(line for line in lines if "narrow" in line)
    assert row.rstrip(" │|").endswith("open") and "…" not in r.stdout, r.stdout
    client.down("narrow")


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path, the root's and the groups' included."""
    found = [path]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _commands(sub, (*path, name))
    return found


def test_no_help_page_shows_a_flag_as_taking_a_bool():
    root = typer.main.get_command(app)
    paths = _commands(root)
    assert ("launch",) in paths and ("repo", "runs") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
    launch = runner.invoke(app, ["launch", "--help"], env={"COLUMNS": "160"}).output
    assert "KEY[=VALUE]" in launch and "--env-file" in launch and "ssh/POOL" in launch

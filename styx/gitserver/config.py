"""The git server's settings, from the environment (all optional).

| variable | default | what |
|---|---|---|
| ``STYX_GIT_HTTP_PORT`` | 7781 | smart HTTP port on ``STYX_HOST`` |
| ``STYX_GIT_SSH_PORT`` | 7722 | SSH port on ``STYX_HOST`` |
| ``STYX_GIT_HTTP_URL`` / ``STYX_GIT_SSH_URL`` | from host and port | base of the clone URLs shown to users (behind a proxy) |
| ``STYX_GIT_MAX_PUSH_MB`` | 2048 | ``receive.maxInputSize``: a bigger pack is refused |
| ``STYX_GIT_BACKEND`` | ``auto`` | ``git`` (the git binary), ``dulwich`` (pure Python), ``auto`` (git when found) |
| ``STYX_GIT_SSH_ANONYMOUS`` | 1 | an SSH key no user registered may read public repositories |
| ``STYX_GIT_PUSH_REPORT_SECONDS`` | 20 | how long a push waits to print its run's jobs |
| ``STYX_GIT_SSH_CIPHERS`` | asyncssh's | comma-separated SSH ciphers to offer, in order |
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from styx.config import Settings, _env_int

DEFAULT_HTTP_PORT = 7781
DEFAULT_SSH_PORT = 7722


@dataclass(frozen=True)
class GitServerConfig:
    home: Path
    host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    ssh_port: int = DEFAULT_SSH_PORT
    #: The ``git`` executable, or None to serve with dulwich.
    git: str | None = None
    max_push_bytes: int = 2048 << 20
    #: Cap on an upload-pack request body (the want/have negotiation), after gunzip.
    max_request_bytes: int = 64 << 20
    anonymous_ssh: bool = True
    push_report_seconds: float = 20.0
    #: How often the server looks for pushes whose runs did not start (and how old such a
    #: push must be): see ``GitService.sweep_intents``.
    intent_sweep_seconds: float = 30.0
    http_url_override: str | None = None
    ssh_url_override: str | None = None
    #: SSH ciphers offered, in order (None: asyncssh's defaults).
    ssh_ciphers: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "GitServerConfig":
        backend = os.environ.get("STYX_GIT_BACKEND", "auto").strip().lower()
        if backend not in ("auto", "git", "dulwich"):
            raise ValueError(f"STYX_GIT_BACKEND must be auto, git or dulwich, got {backend!r}")
        git = None if backend == "dulwich" else shutil.which("git")
        if backend == "git" and git is None:
            raise ValueError("STYX_GIT_BACKEND=git but no `git` executable is on PATH")
        max_mb = os.environ.get("STYX_GIT_MAX_PUSH_MB")
        report = os.environ.get("STYX_GIT_PUSH_REPORT_SECONDS")
        sweep = os.environ.get("STYX_GIT_PUSH_SWEEP_SECONDS")
        return cls(
            home=settings.home,
            host=settings.host,
            http_port=_env_int("STYX_GIT_HTTP_PORT", DEFAULT_HTTP_PORT),
            ssh_port=_env_int("STYX_GIT_SSH_PORT", DEFAULT_SSH_PORT),
            git=git,
            max_push_bytes=int(float(max_mb) * (1 << 20)) if max_mb else 2048 << 20,
            anonymous_ssh=os.environ.get("STYX_GIT_SSH_ANONYMOUS", "1").strip().lower() not in ("0", "false", "no"),
            push_report_seconds=float(report) if report else 20.0,
            intent_sweep_seconds=float(sweep) if sweep else 30.0,
            http_url_override=os.environ.get("STYX_GIT_HTTP_URL") or None,
            ssh_url_override=os.environ.get("STYX_GIT_SSH_URL") or None,
            ssh_ciphers=tuple(c.strip() for c in os.environ["STYX_GIT_SSH_CIPHERS"].split(",") if c.strip())
            if os.environ.get("STYX_GIT_SSH_CIPHERS") else None,
        )

    @property
    def repo_root(self) -> Path:
        return self.home / "git"

    @property
    def runs_root(self) -> Path:
        """Where pushed trees are exported for their jobs: ``<runs_root>/<sha>/``."""
        return self.home / "git-runs"

    @property
    def state_dir(self) -> Path:
        """Host key, hook scripts and the git HOME of the server."""
        return self.home / "gitserver"

    @property
    def http_url(self) -> str:
        return (self.http_url_override or f"http://{self.host}:{self.http_port}").rstrip("/")

    @property
    def ssh_url(self) -> str:
        return (self.ssh_url_override or f"ssh://git@{self.host}:{self.ssh_port}").rstrip("/")

    def clone_urls(self, owner: str, name: str) -> dict[str, str]:
        return {"http": f"{self.http_url}/{owner}/{name}.git", "ssh": f"{self.ssh_url}/{owner}/{name}.git"}
